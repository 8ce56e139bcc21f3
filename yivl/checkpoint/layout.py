"""The published Yi-VL directory layout: find and check its parts before any weight is read.

```
model_dir/
  config.json                 LLaVA-style Llama config with mm_* keys
  generation_config.json
  model*.safetensors [+ index] | pytorch_model*.bin [+ index]     LLM + projector
  tokenizer.model, tokenizer_config.json, special_tokens_map.json, added_tokens.json
  vit/<name>/config.json, preprocessor_config.json, model.safetensors | pytorch_model.bin
```
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath

from yivl.errors import YivlError
from yivl.models.config import REQUIRED_MM_KEYS, YiVLConfig

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
VIT_DIR = "vit"


def check_model_dir(model_dir: str | Path) -> Path:
    """The model directory as a resolved Path; YivlError if it does not exist or has no config.json."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise YivlError(
            f"model directory not found: {path}; pass a folder in the published Yi-VL layout "
            "(build a tiny one with `yivl-build-tiny OUT`)"
        )
    if not (path / CONFIG).is_file():
        raise YivlError(f"no {CONFIG} in model directory {path}; pass the folder that holds config.json")
    return path.resolve()


def read_json(path: Path) -> dict:
    """Parse a JSON object file; YivlError naming the file if it is missing or malformed."""
    if not path.is_file():
        raise YivlError(f"{path} is missing; copy it from the release")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise YivlError(f"{path} is not valid JSON ({err}); restore it from the release") from None
    if not isinstance(data, dict):
        raise YivlError(f"{path} must hold a JSON object; restore it from the release")
    return data


def vision_tower_name(mm_vision_tower: str) -> str:
    """Last path component of ``mm_vision_tower`` (a POSIX or a Windows path)."""
    name = PureWindowsPath(mm_vision_tower).name if "\\" in mm_vision_tower else None
    return name or PurePosixPath(mm_vision_tower.rstrip("/")).name


def resolve_vit_dir(model_dir: Path, mm_vision_tower: str) -> Path:
    """The vision-tower folder that ``mm_vision_tower`` means for this model directory.

    Relative paths ("./vit/<name>") are relative to the model directory (not the working directory).
    An absolute path usually comes from another machine (the original fine-tune code saved
    ``--vision_tower`` verbatim), so ``model_dir/vit/<name>`` is preferred and the path is used
    only when that folder does not exist.
    """
    raw = str(mm_vision_tower)
    name = vision_tower_name(raw)
    local = model_dir / VIT_DIR / name
    is_absolute = PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).is_absolute()
    candidates = [local, Path(raw)] if is_absolute else [model_dir / raw, local]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise YivlError(
        f"vision tower folder not found for mm_vision_tower {raw!r}: expected {local}; "
        f"copy the release's vit/{name} folder into {model_dir / VIT_DIR}"
    )


def read_config(model_dir: Path) -> tuple[YiVLConfig, Path]:
    """Parse config.json and the tower's config.json; return the config and the vit folder."""
    config_json = read_json(model_dir / CONFIG)
    if "mm_vision_tower" not in config_json:
        absent = [key for key in REQUIRED_MM_KEYS if key not in config_json]
        raise YivlError(
            f"{model_dir / CONFIG} lacks {', '.join(absent)}; "
            "this is not a Yi-VL (LLaVA-style) model directory"
        )
    vit_dir = resolve_vit_dir(model_dir, config_json["mm_vision_tower"])
    vit_json = read_json(vit_dir / CONFIG)
    return YiVLConfig.from_published(config_json, vit_json), vit_dir
