"""Save a YiVL model in the published Yi-VL layout, loadable unchanged by the original VL code.

Unlike the original fine-tune code we keep ``mm_projector_type`` and ``image_aspect_ratio`` as the
model has them (``mlp2x_gelu_Norm``, ``pad``), write ``mm_vision_tower`` relative ("./vit/<name>")
and save the current, possibly fine-tuned, tower into ``vit/<name>/``, which is where the original
loader reads it from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from yivl.checkpoint import keymap
from yivl.checkpoint.layout import CONFIG, GENERATION_CONFIG, VIT_DIR
from yivl.checkpoint.load import LoadedModel
from yivl.checkpoint.shards import WEIGHT_FILES, Format
from yivl.checkpoint.writer import spec_of, write_weights
from yivl.data.images import ImageProcessor, image_processor_for
from yivl.data.tokenizer import YiTokenizer
from yivl.errors import YivlError
from yivl.models.config import YiVLConfig
from yivl.models.yivl import YiVL

GENERATION_DEFAULTS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def save_pretrained(
    model: YiVL | LoadedModel,
    out_dir: str | Path,
    tokenizer: YiTokenizer | None = None,
    image_processor: ImageProcessor | None = None,
    *,
    max_shard_bytes: int = 5 * 2**30,
    overwrite: bool = False,
    weight_format: Format = "safetensors",
) -> Path:
    """Write ``model`` (or a LoadedModel with its tokenizer and processor) to ``out_dir``; return the path.

    Weights keep the model's dtypes. ``weight_format="bin"`` writes ``pytorch_model*.bin`` like the
    release (for compatibility tests); the default is safetensors. A non-empty ``out_dir`` is refused
    unless ``overwrite`` (then stale weight files there are removed first).
    """
    if isinstance(model, LoadedModel):
        tokenizer = tokenizer or model.tokenizer
        image_processor = image_processor or model.image_processor
        model = model.model
    if tokenizer is None:
        raise YivlError(
            "save_pretrained needs the tokenizer: pass tokenizer= (its files are part of the layout)"
        )
    _check_resolution(model)
    out = _prepare_dir(Path(out_dir).expanduser(), model.config.vision_tower_name, overwrite)
    llm_dtype = model.llm.get_input_embeddings().weight.dtype
    vit_dtype = model.vision_tower.clip.embeddings.patch_embedding.weight.dtype
    vit_dir = write_configs(model.config, out, llm_dtype, vit_dtype)
    state = published_state(model)
    for folder, tensors, limit in ((out, state["main"], max_shard_bytes), (vit_dir, state["vit"], 2**62)):
        specs = [spec_of(key, t) for key, t in tensors.items()]
        write_weights(specs, tensors.__getitem__, folder, weight_format, limit)
    _processor_for(model, image_processor).save_pretrained(vit_dir)
    tokenizer.save(out)
    return out


def published_state(model: YiVL) -> dict[keymap.Location, dict[str, torch.Tensor]]:
    """The model's tensors under their published keys: ``main`` (LLM + projector) and ``vit``."""
    state: dict[keymap.Location, dict[str, torch.Tensor]] = {"main": {}, "vit": {}}
    for name, tensor in model.state_dict().items():
        location, key = keymap.published_name(name)
        state[location][key] = tensor
    return state


def _prepare_dir(out: Path, tower_name: str, overwrite: bool) -> Path:
    """Create ``out``; refuse a non-empty one unless ``overwrite``, then drop its stale weights."""
    if out.exists() and not out.is_dir():
        raise YivlError(f"output path {out} is a file; pass a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise YivlError(f"output directory {out} is not empty; choose an empty one or pass --overwrite")
        # Old shards with other names would be mixed with the new ones by any loader: remove them.
        for pattern in ("model*.safetensors", "pytorch_model*.bin", *(n for n, _, i in WEIGHT_FILES if i)):
            for stale in out.glob(pattern):
                stale.unlink()
        shutil.rmtree(out / VIT_DIR / tower_name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_resolution(model: YiVL) -> None:
    """The tower module and the config must agree on the image size before it is written."""
    size = model.vision_tower.clip.config.image_size
    if size != model.config.image_size:
        raise YivlError(
            f"the vision tower runs at {size} px but the model config says {model.config.image_size}; "
            "update YiVLConfig.vision['image_size'] when changing the resolution"
        )


def write_configs(config: YiVLConfig, out: Path, llm_dtype: torch.dtype, vit_dtype: torch.dtype) -> Path:
    """Write config.json, generation_config.json and vit/<name>/config.json; return the vit folder."""
    vit_dir = out / VIT_DIR / config.vision_tower_name
    vit_dir.mkdir(parents=True, exist_ok=True)
    published = config.to_published()
    published["torch_dtype"] = _dtype_name(llm_dtype)
    vit_config = config.vit_config()
    vit_config["torch_dtype"] = _dtype_name(vit_dtype)
    _write_json(out / CONFIG, published)
    _write_json(vit_dir / CONFIG, vit_config)
    _write_json(out / GENERATION_CONFIG, GENERATION_DEFAULTS)
    return vit_dir


def _processor_for(model: YiVL, processor: ImageProcessor | None) -> ImageProcessor:
    """The processor to save, at the tower's current resolution (e.g. 448 after a 224 stage)."""
    return image_processor_for(processor or ImageProcessor(), model.config.image_size)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
