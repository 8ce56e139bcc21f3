"""Plain peft LoRA adapters (``get_peft_model(...).save_pretrained(DIR)``) on a Yi-VL base model.

An adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or ``.bin``). Its
tensor names depend on the model peft wrapped; each is mapped to the YiVL module it belongs to:

* Yi-VL's LLM (a ``LlamaForCausalLM``): ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``,
  ``...lm_head...``; over a bare ``LlamaModel``: ``base_model.model.layers.0...``;
* the whole LLaVA-style model (LLaVA's and Yi-VL's fine-tune code): the same LLM names plus
  ``model.mm_projector.*`` and ``model.vision_tower.vision_tower.*`` (in ``modules_to_save``, or in
  LLaVA's ``non_lora_trainables.bin`` next to the adapter);
* yivl's ``YiVL``: ``llm.*``, ``mm_projector.*``, ``vision_tower.*``.

LoRA pairs are merged into the base weights as peft merges them (``W += scaling * B @ A``, computed in
fp32); other tensors (``modules_to_save``, resized embeddings) replace the base tensors. A tensor that
maps to no module of the model is an error naming it, never skipped.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from yivl.checkpoint.layout import CONFIG, check_model_dir, read_config, read_json
from yivl.checkpoint.load import LoadedModel, list_names, load_pretrained
from yivl.errors import YivlError
from yivl.models.empty_init import empty_init
from yivl.models.yivl import YiVL

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
NON_LORA = "non_lora_trainables.bin"
YIVL_EXPORT_META = "yivl_adapter.json"
"""Marks yivl's own adapter export (``export.merge=false``), which ``yivl.checkpoint.export`` reads."""

PEFT_PREFIX = "base_model.model."
NAMESPACES = (
    ("model.mm_projector.", "mm_projector."),  # LLaVA-style model
    ("model.vision_tower.vision_tower.vision_model.", "vision_tower.clip."),
    ("model.vision_tower.vision_tower.", "vision_tower.clip."),
    ("llm.", "llm."),  # yivl's YiVL
    ("mm_projector.", "mm_projector."),
    ("vision_tower.", "vision_tower."),
    ("model.", "llm.model."),  # LlamaForCausalLM (and the LLM part of a LLaVA-style model)
    ("lm_head.", "llm.lm_head."),
    ("layers.", "llm.model.layers."),  # bare LlamaModel
    ("embed_tokens.", "llm.model.embed_tokens."),
    ("norm.", "llm.model.norm."),
)
"""(adapter-name prefix, YiVL-name prefix), first match wins."""

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""``org/name`` as the Hugging Face hub spells a model (``01-ai/Yi-VL-6B``), unlike a local path."""
LORA_KEY = re.compile(r"(?P<module>.+?)\.(?P<kind>lora_(?:embedding_)?[AB])(?:\.(?P<rest>.+))?")
UNSUPPORTED = ("use_dora", "lora_bias", "alora_invocation_tokens", "layer_replication",
               "trainable_token_indices", "target_parameters", "use_qalora")  # fmt: skip
"""LoRA variants whose merge is not ``W += scaling * B @ A``: refused, never merged wrong."""


@dataclass
class LoraPair:
    """One adapted module: its YiVL name, its name in the adapter, and the two low-rank factors."""

    module: str
    source: str
    a: torch.Tensor | None = None
    b: torch.Tensor | None = None
    embedding: bool = False


@dataclass
class PeftAdapter:
    """An adapter folder read and checked against its base model, ready to merge."""

    path: Path
    base: Path
    config: dict
    pairs: list[LoraPair]
    replaced: dict[str, torch.Tensor]
    """YiVL parameter name -> the tensor that replaces it (``modules_to_save``, ``non_lora_trainables``)."""


def is_peft_adapter(path: Path) -> bool:
    """True for a folder with ``adapter_config.json`` that is not yivl's own adapter export."""
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file() and not (path / YIVL_EXPORT_META).is_file()


def refuse_named_adapters(path: Path) -> None:
    """YivlError when ``path`` only holds adapters in subfolders, as peft saves a non-default adapter name."""
    if not path.is_dir() or (path / CONFIG).is_file() or (path / ADAPTER_CONFIG).is_file():
        return
    names = sorted(p.name for p in path.iterdir() if (p / ADAPTER_CONFIG).is_file())
    if names:
        raise YivlError(
            f"{path} holds peft adapters in subfolders ({', '.join(names)}), as peft saves a named adapter; "
            f"point at one of them, e.g. {path / names[0]}"
        )


def read_peft_adapter(path: Path, base_model: str | Path | None, option: str) -> PeftAdapter:
    """Read ``path``, find its base model, map and check every tensor (no base weights are read yet).

    ``option`` is how the entry point spells the base-model option (``model.base=DIR``), for messages.
    """
    config = read_adapter_config(path)
    base = resolve_base(path, config, base_model, option)
    tensors = read_adapter_tensors(path)
    yivl_config, _ = read_config(base)
    with empty_init():  # module names and shapes only: parameters on the meta device
        model = YiVL(yivl_config)
    pairs, replaced = map_tensors(model, tensors, path)
    return PeftAdapter(path, base, config, pairs, replaced)


def read_adapter_config(path: Path) -> dict:
    """``adapter_config.json``, refused unless it is a LoRA adapter whose merge we do exactly."""
    config = read_json(path / ADAPTER_CONFIG)
    if config.get("peft_type") != "LORA":
        raise YivlError(
            f"{path / ADAPTER_CONFIG} has peft_type={config.get('peft_type')!r}; only LoRA adapters "
            "(peft_type LORA) can be merged into Yi-VL"
        )
    used = [key for key in UNSUPPORTED if config.get(key)]
    if used:
        raise YivlError(
            f"{path / ADAPTER_CONFIG} uses {', '.join(used)}; only plain LoRA (and rsLoRA) adapters "
            "can be merged: merge this one with peft's merge_and_unload instead"
        )
    return config


def resolve_base(path: Path, config: Mapping, base_model: str | Path | None, option: str) -> Path:
    """``base_model`` if given, else the adapter's ``base_model_name_or_path`` when it is a local folder."""
    if base_model is None:
        recorded = config.get("base_model_name_or_path")
        if not recorded:
            raise YivlError(f"adapter {path} records no base model; pass {option} (a Yi-VL model folder)")
        if not Path(str(recorded)).expanduser().is_dir():
            if not HUB_ID.fullmatch(str(recorded)):  # a local path that has moved or was on another machine
                raise YivlError(
                    f"adapter {path} names base model folder {recorded!r}, which does not exist here; "
                    f"pass {option} with the Yi-VL model it was trained on"
                )
            raise YivlError(
                f"adapter {path} names base model {recorded!r}, which is not a local folder (nothing is "
                f"downloaded); pass {option} with the downloaded Yi-VL model"
            )
        base_model = Path(str(recorded)).expanduser()
    base = check_model_dir(base_model)
    if "mm_vision_tower" not in read_json(base / CONFIG):
        raise YivlError(
            f"base model {base} of adapter {path} is not a Yi-VL model (no mm_vision_tower in "
            f"{CONFIG}); pass {option} with the Yi-VL model folder the LLM came from"
        )
    return base


def read_adapter_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the adapter weights, plus LLaVA's ``non_lora_trainables.bin`` when present."""
    weights = next((path / name for name in ADAPTER_WEIGHTS if (path / name).is_file()), None)
    if weights is None:
        raise YivlError(
            f"adapter {path} has no {' or '.join(ADAPTER_WEIGHTS)}; copy it next to {ADAPTER_CONFIG}"
        )
    tensors = _read_weights(weights)
    if (path / NON_LORA).is_file():
        for key, value in _read_weights(path / NON_LORA).items():
            if key in tensors:
                raise YivlError(f"{key} is stored both in {weights.name} and in {NON_LORA} of {path}")
            tensors[key] = value
    return tensors


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    try:
        if file.suffix == ".safetensors":
            tensors = load_file(file)
        else:
            tensors = torch.load(file, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise YivlError(f"cannot read adapter weights {file}: {reason}") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise YivlError(f"{file} does not hold a mapping of names to tensors; it is not adapter weights")
    return tensors


def our_name(key: str) -> str | None:
    """The YiVL name of an adapter tensor's module or parameter path (peft prefix removed), or None."""
    key = key.removeprefix(PEFT_PREFIX)
    for theirs, ours in NAMESPACES:
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    return None


def map_tensors(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path
) -> tuple[list[LoraPair], dict[str, torch.Tensor]]:
    """Sort the tensors into LoRA pairs and replacement tensors; YivlError for any that fit nothing."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    pairs: dict[str, LoraPair] = {}
    replaced: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, value in tensors.items():
        lora = LORA_KEY.fullmatch(key)
        if lora and not _is_factor(lora):
            unmatched.append(key)  # e.g. lora_B.bias: refused with the variant that writes it
            continue
        # save_embedding_layers writes a LoRA'd embedding's full weight as ``...base_layer.weight``
        name = our_name(lora["module"] if lora else key.replace(".base_layer.", "."))
        target = modules.get(name) if lora else params.get(name)
        if target is None or (lora and not isinstance(target, nn.Linear | nn.Embedding)):
            unmatched.append(key)
        elif lora:
            pair = pairs.setdefault(name, LoraPair(name, lora["module"].removeprefix(PEFT_PREFIX)))
            pair.embedding = isinstance(target, nn.Embedding)
            setattr(pair, lora["kind"][-1].lower(), value)
        else:
            replaced[name] = value
    if unmatched:
        raise YivlError(
            f"adapter {path}: {len(unmatched)} tensor(s) match no module of the Yi-VL model: "
            f"{list_names(unmatched, 3)}; it was trained on another model (or a LoRA variant we cannot merge)"
        )
    _check_shapes(list(pairs.values()), replaced, params, path)
    return list(pairs.values()), replaced


def _is_factor(lora: re.Match) -> bool:
    """``lora_A.weight`` as peft saves it, or with the adapter name (``lora_A.default.weight``)."""
    rest = lora["rest"]
    if lora["kind"].startswith("lora_embedding_"):  # an nn.Parameter, saved without ``.weight``
        return rest is None or "." not in rest
    return rest == "weight" or (rest is not None and rest.endswith(".weight") and rest.count(".") == 1)


def _check_shapes(
    pairs: list[LoraPair],
    replaced: Mapping[str, torch.Tensor],
    params: Mapping[str, nn.Parameter],
    path: Path,
) -> None:
    for pair in pairs:
        if pair.a is None or pair.b is None:
            raise YivlError(
                f"adapter {path} has only one of lora_A/lora_B for {pair.source}; it is incomplete"
            )
        want = tuple(params[pair.module + ".weight"].shape)
        if pair.a.shape[0] != pair.b.shape[1] or tuple(_delta_shape(pair)) != want:
            raise YivlError(
                f"adapter {path}: the LoRA of {pair.source} ({list(pair.b.shape)} x {list(pair.a.shape)}) "
                f"does not fit the base weight {list(want)}; pass the base model the adapter was trained on"
            )
    for name, value in replaced.items():
        if tuple(value.shape) != tuple(params[name].shape):
            raise YivlError(
                f"adapter {path}: {name} has shape {list(value.shape)} but the base model's is "
                f"{list(params[name].shape)}; pass the base model the adapter was trained on"
            )


def _delta_shape(pair: LoraPair) -> torch.Size:
    """``B @ A``'s shape as merged: an embedding's delta is transposed (its weight is [vocab, dim])."""
    rows, cols = pair.b.shape[0], pair.a.shape[1]
    return torch.Size((cols, rows) if pair.embedding else (rows, cols))


def scaling(config: Mapping, source: str, rank: int) -> float:
    """peft's scaling of one module: ``alpha / r`` (rsLoRA: ``alpha / sqrt(r)``); ``alpha_pattern`` first."""
    alpha = config["lora_alpha"]
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", source):  # peft's get_pattern_key
            alpha = value
            break
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


@torch.no_grad()
def merge_adapter(model: YiVL, adapter: PeftAdapter) -> None:
    """Copy the replacement tensors, then merge every LoRA pair into its base weight, in place."""
    params = dict(model.named_parameters())
    for name, value in adapter.replaced.items():  # first: a saved embedding is the base of its LoRA
        params[name].copy_(value.to(params[name].device, params[name].dtype))
    for pair in adapter.pairs:
        weight = model.get_submodule(pair.module).weight
        a = pair.a.to(weight.device, torch.float32)
        b = pair.b.to(weight.device, torch.float32)
        delta = (b @ a) * scaling(adapter.config, pair.source, int(a.shape[0]))
        if pair.embedding:
            delta = delta.T
        # fan_in_fan_out is ignored, as peft ignores it for nn.Linear (it is for GPT-2's Conv1D)
        weight.copy_((weight.float() + delta).to(weight.dtype))


def load_peft_adapter(
    adapter: PeftAdapter, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> LoadedModel:
    """The base model (see :func:`load_pretrained` for ``dtype``/``device``) with ``adapter`` merged in."""
    loaded = load_pretrained(adapter.base, dtype=dtype, device=device)
    merge_adapter(loaded.model, adapter)
    return loaded


def load_model(
    path: str | Path,
    base_model: str | Path | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    option: str = "model.base=DIR",
) -> LoadedModel:
    """A published-layout folder, or a plain peft adapter merged into its base model."""
    path = Path(path).expanduser()
    if (path / YIVL_EXPORT_META).is_file():
        raise YivlError(
            f"{path} is a yivl adapter export; merge it first: python -m yivl.checkpoint.export {path} OUT"
        )
    if is_peft_adapter(path):
        return load_peft_adapter(read_peft_adapter(path, base_model, option), dtype, device)
    refuse_named_adapters(path)
    return load_pretrained(path, dtype=dtype, device=device)
