"""Change the vision tower's input resolution by interpolating its position embeddings.

Yi-VL's stage 1 trains at 224 px and stage 2 returns to 448 px (paper section 7.2). The CLIP position
embedding table has one row per patch plus one for CLS; a new resolution needs a new grid of patch rows.
We resample the patch grid bicubically (as transformers' ``interpolate_pos_encoding`` does on the fly) and
keep the CLS row, then update every place that records the size, so that the saved tower carries its
resolution in ``config.json`` and the image processor config.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from yivl.errors import YivlError
from yivl.models.yivl import YiVL


def resize_patch_grid(table: torch.Tensor, old_grid: int, new_grid: int) -> torch.Tensor:
    """Position table [1 + old_grid^2, C] -> [1 + new_grid^2, C]: CLS row kept, patch grid resampled."""
    cls_row, patches = table[:1], table[1:]
    channels = table.shape[1]
    grid = patches.reshape(1, old_grid, old_grid, channels).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(new_grid * new_grid, channels).to(table.dtype)
    return torch.cat([cls_row, patches], dim=0)


def check_image_size(size: int, patch: int) -> None:
    """YivlError unless ``size`` is a positive multiple of the ViT patch size ``patch``."""
    if size <= 0 or size % patch:
        raise YivlError(f"module.image_size={size} is not a positive multiple of the ViT patch size {patch}")


def set_image_size(model: YiVL, size: int) -> None:
    """Make the tower take ``size`` x ``size`` images; a no-op at the current size.

    Updates the position embeddings (interpolated), the CLIP modules' recorded size, and
    ``model.config.vision["image_size"]`` (what ``save_pretrained`` writes). YivlError when ``size`` is not
    a multiple of the patch size.
    """
    embeddings = model.vision_tower.clip.embeddings
    patch = embeddings.patch_size
    check_image_size(size, patch)
    if size == embeddings.image_size:
        return
    old_grid, new_grid = embeddings.image_size // patch, size // patch
    old = embeddings.position_embedding
    table = resize_patch_grid(old.weight.detach(), old_grid, new_grid)
    new = nn.Embedding(table.shape[0], table.shape[1], device=table.device, dtype=table.dtype)
    new.weight.data.copy_(table)
    new.weight.requires_grad_(old.weight.requires_grad)
    embeddings.position_embedding = new
    embeddings.image_size = size
    embeddings.num_patches = new_grid * new_grid
    embeddings.num_positions = new_grid * new_grid + 1
    embeddings.position_ids = torch.arange(embeddings.num_positions, device=table.device).expand((1, -1))
    model.vision_tower.clip.config.image_size = size
    model.config.vision["image_size"] = size
