"""The vision tower: transformers' CLIPVisionModel plus Yi-VL's feature selection."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionModel

from yivl.models.config import YiVLConfig


class VisionTower(nn.Module):
    """CLIP ViT (at ``self.clip``) returning one hidden layer's patch features.

    Like the original ``CLIPVisionTower``: features are ``hidden_states[select_layer]`` (default -2, the
    output of the second-to-last encoder layer, before ``post_layernorm``); ``patch`` drops the CLS token.
    The tower is trainable; freezing is the trainer's decision.
    """

    def __init__(self, config: YiVLConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.clip = CLIPVisionModel(config.clip_config(attn_implementation))
        self.select_layer = config.select_layer
        self.select_feature = config.select_feature

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels [N, 3, S, S] -> features [N, P, C], run in the tower's dtype and returned in the input's."""
        weight = self.clip.embeddings.patch_embedding.weight
        out = self.clip(pixel_values.to(device=weight.device, dtype=weight.dtype), output_hidden_states=True)
        features = out.hidden_states[self.select_layer]
        if self.select_feature == "patch":
            features = features[:, 1:]
        return features.to(pixel_values.dtype)
