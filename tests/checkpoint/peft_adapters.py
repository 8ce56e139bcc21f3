"""Plain peft adapters made as users make them: real peft over Yi-VL's LLM or a LLaVA-style model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import LlamaForCausalLM

from yivl.checkpoint.load import load_pretrained

IDS = torch.tensor([[5, 17, 23, 301, 44, 9, 100, 7]])
"""Token ids of one text prompt for the LLM-logit comparisons."""


def base_llm(base: Path) -> LlamaForCausalLM:
    """Yi-VL's LLM as users load it: ``LlamaForCausalLM.from_pretrained(model_dir)`` (projector ignored)."""
    return LlamaForCausalLM.from_pretrained(base, dtype=torch.float32).eval()


def perturb(model: nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Random lora_B / lora_embedding (peft starts them at zero: a no-op adapter) and trained copies."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "lora_embedding" in name or "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=generator) * scale)


def make_llm_adapter(base: Path, out: Path, **lora: object) -> Path:
    """``get_peft_model(LlamaForCausalLM of base, LoraConfig(**lora))``, perturbed, ``save_pretrained(out)``.

    ``safe_serialization`` in ``lora`` picks adapter_model.bin (False) over .safetensors.
    """
    safe = bool(lora.pop("safe_serialization", True))
    settings = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]} | lora
    model = get_peft_model(base_llm(base), LoraConfig(**settings))
    perturb(model)
    model.save_pretrained(str(out), safe_serialization=safe)
    return out


def make_llava_adapter(base: Path, out: Path, non_lora_file: bool) -> tuple[Path, dict[str, torch.Tensor]]:
    """A LoRA over a LLaVA-style model (LLM + ``model.mm_projector``) with a trained projector.

    ``non_lora_file``: the projector goes to ``non_lora_trainables.bin`` beside ``config.json``, as LLaVA's
    train.py writes it; else peft saves it through ``modules_to_save``. Returns the folder and the trained
    projector tensors (our names).
    """
    llm = base_llm(base)
    llm.model.mm_projector = load_pretrained(base, dtype=torch.float32).model.mm_projector
    config = LoraConfig(
        r=4,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=r".*layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
        modules_to_save=None if non_lora_file else ["mm_projector"],
    )
    model = get_peft_model(llm, config)
    perturb(model, seed=1)
    if non_lora_file:
        with torch.no_grad():
            for param in llm.model.mm_projector.parameters():
                param.add_(0.1)
    model.save_pretrained(str(out))
    projector = model.base_model.model.model.mm_projector
    if not non_lora_file:
        projector = projector.modules_to_save["default"]
    trained = {f"mm_projector.{k}": v.detach().clone() for k, v in projector.state_dict().items()}
    if non_lora_file:
        prefix = "base_model.model.model.mm_projector."
        torch.save(
            {prefix + k.removeprefix("mm_projector."): v for k, v in trained.items()},
            out / "non_lora_trainables.bin",
        )
        shutil.copy(base / "config.json", out / "config.json")
    return out, trained


def peft_logits(base: Path, adapter: Path) -> torch.Tensor:
    """The reference: ``PeftModel.from_pretrained`` over the base LLM, logits [1, L, V] of IDS."""
    model = PeftModel.from_pretrained(base_llm(base), str(adapter)).eval()
    with torch.no_grad():
        return model(IDS).logits


@torch.no_grad()
def llm_logits(llm: nn.Module) -> torch.Tensor:
    return llm(IDS).logits


def edit_adapter_config(adapter: Path, change: Callable[[dict], None]) -> None:
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
