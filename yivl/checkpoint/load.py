"""Load a model directory in the published Yi-VL layout into a YiVL model.

The model is built with its parameters on the meta device (``empty_init``); then each stored tensor
is copied into the target dtype/device and assigned, one at a time, so memory peaks near the
weights' size (never a random-init copy next to the loaded one, never a whole state dict).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from yivl.checkpoint import keymap
from yivl.checkpoint.layout import check_model_dir, read_config
from yivl.checkpoint.shards import WeightFiles, find_weights, iter_tensors
from yivl.data.images import ImageProcessor
from yivl.data.tokenizer import YiTokenizer
from yivl.errors import YivlError
from yivl.models.config import YiVLConfig
from yivl.models.empty_init import empty_init
from yivl.models.yivl import YiVL

log = logging.getLogger(__name__)

Source = tuple[WeightFiles, str]
"""Where one of our tensors is stored: the folder's weight files and the key in them."""


@dataclass
class LoadedModel:
    """A loaded model directory: the model and everything needed to feed it."""

    model: YiVL
    tokenizer: YiTokenizer
    image_processor: ImageProcessor
    config: YiVLConfig
    path: Path


def load_pretrained(
    model_dir: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """Load ``model_dir`` (published layout; ``.safetensors`` or ``.bin``, sharded or not) in eval mode.

    ``dtype``: dtype of every floating-point weight; None keeps the dtype of the LLM weights on disk
    (bf16 for the release) and casts the tower (fp32 in ``vit/``) to it, as the original inference
    does. Every bad input raises a one-line YivlError.
    """
    device = _check_device(device)
    path = check_model_dir(model_dir)
    config, vit_dir = read_config(path)
    main = find_weights(path, "model directory")
    vit = find_weights(vit_dir, "vision tower folder")
    tokenizer = YiTokenizer.from_dir(path)
    image_processor = ImageProcessor.from_pretrained(vit_dir)
    sources = _sources(main, vit)
    dtype = dtype or _llm_dtype(sources)
    with empty_init():
        model = YiVL(config, attn_implementation=attn_implementation)
    _check_keys(model, sources, path)
    _fill(model, sources, dtype, device)
    model.to(device)  # parameters are already there; this moves the buffers (rotary inv_freq, position ids)
    return LoadedModel(model.eval(), tokenizer, image_processor, config, path)


def _check_device(device: str | torch.device) -> torch.device:
    """The device as torch.device; YivlError for a malformed name or a CUDA device that is not there."""
    try:
        device = torch.device(device)
    except RuntimeError:
        raise YivlError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise YivlError(f"device {device} requested but CUDA is not available; use device=cpu")
    return device


def _sources(main: WeightFiles, vit: WeightFiles) -> dict[str, Source]:
    """Our state-dict name -> where it is stored, for every stored tensor that is not skipped."""
    sources: dict[str, Source] = {}
    skipped: list[str] = []
    for weights, location in ((main, "main"), (vit, "vit")):
        for key in weights.tensors:
            ours = keymap.our_name(location, key)
            if ours is None:
                skipped.append(key)
            elif ours in sources:
                raise YivlError(
                    f"{weights.folder} stores {ours!r} twice (as {sources[ours][1]!r} and {key!r})"
                )
            else:
                sources[ours] = (weights, key)
    if skipped:
        # The release's main shards hold a bf16 ViT copy that the original loader never reads.
        log.debug("ignoring %d stored tensors on purpose (e.g. %s)", len(skipped), skipped[0])
    return sources


def _llm_dtype(sources: dict[str, Source]) -> torch.dtype:
    """dtype of the stored LLM embeddings (falls back to fp32 if they are not floating point)."""
    weights, key = sources.get("llm.model.embed_tokens.weight", (None, ""))
    stored = weights.tensors[key].dtype if weights else torch.float32
    return stored if stored.is_floating_point else torch.float32


def list_names(keys: Iterable[str], limit: int = 5) -> str:
    """``a, b, c and 7 more``: a short list of keys for a one-line message."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _check_keys(model: YiVL, sources: dict[str, Source], path: Path) -> None:
    """Raise YivlError naming missing or unexpected keys (published names) or a shape mismatch."""
    expected = model.state_dict()
    missing = [keymap.published_name(k)[1] for k in expected if k not in sources]
    if missing:
        raise YivlError(
            f"the weights in {path} lack {len(missing)} tensor(s): {list_names(missing)}; "
            "the checkpoint does not match config.json (or a shard is missing)"
        )
    unexpected = [(w, key) for ours, (w, key) in sources.items() if ours not in expected]
    if unexpected:
        raise YivlError(
            f"weights in {unexpected[0][0].folder} hold {len(unexpected)} unexpected tensor(s): "
            f"{list_names(key for _, key in unexpected)}; the checkpoint does not match config.json"
        )
    for ours, (weights, key) in sources.items():
        want, have = tuple(expected[ours].shape), weights.tensors[key].shape
        if want != have:
            raise YivlError(
                f"{key} in {weights.tensors[key].file} has shape {list(have)} but config.json implies "
                f"{list(want)}; the checkpoint does not match config.json"
            )


def _fill(model: YiVL, sources: dict[str, Source], dtype: torch.dtype, device: torch.device) -> None:
    """Copy every stored tensor into ``dtype`` (floating point only) on ``device`` and assign it."""
    by_folder: dict[int, tuple[WeightFiles, dict[str, str]]] = {}
    for ours, (weights, key) in sources.items():
        by_folder.setdefault(id(weights), (weights, {}))[1][key] = ours
    for weights, keys in by_folder.values():
        for key, stored in iter_tensors(weights, list(keys)):
            target = dtype if stored.is_floating_point() else stored.dtype
            value = torch.empty(stored.shape, dtype=target, device=device)
            value.copy_(stored)  # a real copy: the stored tensor is a view of a memory-mapped file
            del stored
            _assign(model, keys[key], value)


def _assign(model: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace the parameter (or persistent buffer) ``name`` with ``value``, keeping requires_grad."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._parameters:
        old = module._parameters[leaf]
        module._parameters[leaf] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        module._buffers[leaf] = value
