"""What trains in each stage x fine-tune method, the parameter groups and the learning-rate schedule."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from tests.checkpoint.helpers import train_py_hparams
from yivl.checkpoint.plan import OptimizerSettings, RunPlan
from yivl.models.lora import LLM_LINEAR_PATTERN, llm_linear_names
from yivl.training.build import Dtypes, build_model, trainable_names
from yivl.training.optim import WarmupCosine, param_groups

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
QUANT = {"type": "nf4", "double_quant": True, "storage_dtype": "uint8"}
NO_DECAY = re.compile(r"bias$|norm|layrnorm|^mm_projector\.[14]\.weight$")  # projector 1 and 4: LayerNorms
DECODER_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def plan(
    path: Path, llm: str, method: str, vision_tower: bool = True, image_size: int | None = None
) -> RunPlan:
    finetune = {"method": method, "lora": LORA, "quant": QUANT}
    train = {"vision_tower": vision_tower, "projector": True, "llm": llm}
    return RunPlan.from_dict(train_py_hparams(path, train=train, finetune=finetune, image_size=image_size))


def names_with(model: torch.nn.Module, prefix: str) -> set[str]:
    """Parameter names under ``prefix``; for the tower, without the parts after its feature layer."""
    unused = (
        "vision_tower.clip.encoder.layers.1.",
        "vision_tower.clip.post_layernorm.",
    )  # tiny: 2 layers, -2
    return {n for n, _ in model.named_parameters() if n.startswith(prefix) and not n.startswith(unused)}


@pytest.fixture(scope="module")
def stage_models(tiny_checkpoint: Path) -> dict[str, torch.nn.Module]:
    fp32 = Dtypes.for_precision("32-true")
    return {
        "stage1/2": build_model(plan(tiny_checkpoint, "frozen", "full"), fp32),
        "stage3": build_model(plan(tiny_checkpoint, "full", "full"), fp32),
        "lora": build_model(plan(tiny_checkpoint, "lora", "lora", vision_tower=False), fp32),
        "lora+vit": build_model(plan(tiny_checkpoint, "lora", "lora", vision_tower=True), fp32),
        "qlora": build_model(plan(tiny_checkpoint, "lora", "qlora", vision_tower=False), fp32),
    }


def lora_names(model: torch.nn.Module) -> set[str]:
    """The expected adapter parameters: A and B of every decoder linear layer, nothing else."""
    return {f"llm.{layer}.lora_{ab}.default.weight" for layer in llm_linear_names(model.llm) for ab in "AB"}


def test_stage1_and_2_train_the_tower_and_projector_only(stage_models: dict) -> None:
    model = stage_models["stage1/2"]
    assert set(trainable_names(model)) == names_with(model, "vision_tower.") | names_with(
        model, "mm_projector."
    )


def test_stage3_trains_everything_that_reaches_the_loss(stage_models: dict) -> None:
    model = stage_models["stage3"]
    everything = (
        names_with(model, "llm.") | names_with(model, "vision_tower.") | names_with(model, "mm_projector.")
    )
    assert set(trainable_names(model)) == everything
    assert (
        len(everything) == len(list(model.parameters())) - 16 - 2
    )  # one CLIP layer (16 tensors) + post norm


@pytest.mark.parametrize("key", ["lora", "qlora"])
def test_lora_trains_adapters_and_projector_vit_frozen(stage_models: dict, key: str) -> None:
    model = stage_models[key]
    assert set(trainable_names(model)) == lora_names(model) | names_with(model, "mm_projector.")


def test_lora_with_a_trainable_tower(stage_models: dict) -> None:
    model = stage_models["lora+vit"]
    expected = lora_names(model) | names_with(model, "mm_projector.") | names_with(model, "vision_tower.")
    assert set(trainable_names(model)) == expected


def test_adapters_sit_on_every_decoder_linear_and_never_on_the_vision_tower(stage_models: dict) -> None:
    model = stage_models["lora"]
    wrapped = {n for n, _ in model.named_modules() if n.endswith(".lora_A")}
    layers = {n.removesuffix(".lora_A") for n in wrapped}
    assert all(re.fullmatch(LLM_LINEAR_PATTERN, n.removeprefix("llm.")) for n in layers)
    assert {n.rsplit(".", 1)[1] for n in layers} == DECODER_LINEARS
    assert len(layers) == 7 * model.config.llm["num_hidden_layers"]
    assert not any("vision_tower" in n or "lm_head" in n or "mm_projector" in n for n in wrapped)


def test_qlora_keeps_4bit_llm_linears_and_full_precision_norms_and_projector(stage_models: dict) -> None:
    import bitsandbytes as bnb

    model = stage_models["qlora"]
    q_proj = model.llm.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    assert q_proj.weight.quant_type == "nf4" and q_proj.weight.compress_statistics  # double quantization
    assert model.llm.model.norm.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.mm_projector.parameters())


def test_param_groups_split_lrs_by_part_and_skip_decay_on_norms_and_biases(stage_models: dict) -> None:
    model = stage_models["stage3"]
    optimizer = {"lr": 3e-5, "vision_tower_lr": 1e-5, "projector_lr": 2e-5, "weight_decay": 0.1}
    groups = {
        g["name"]: g
        for g in param_groups(model, OptimizerSettings(**optimizer, betas=(0.9, 0.999), eps=1e-8))
    }
    assert {g: groups[g]["lr"] for g in ("llm", "vision_tower", "mm_projector")} == {
        "llm": 3e-5,
        "vision_tower": 1e-5,
        "mm_projector": 2e-5,
    }
    names = {id(p): n for n, p in model.named_parameters()}
    for name, group in groups.items():
        members = [names[id(p)] for p in group["params"]]
        undecayed = [n for n in members if NO_DECAY.search(n)]
        if name.endswith("no_decay"):
            assert group["weight_decay"] == 0.0 and len(undecayed) == len(members)
        else:
            assert group["weight_decay"] == 0.1 and not undecayed
    assert sum(len(g["params"]) for g in groups.values()) == len(trainable_names(model))


def test_warmup_then_cosine_to_the_floor() -> None:
    schedule = WarmupCosine(total_steps=100, warmup_ratio=0.1, min_ratio=0.1)
    factors = [schedule(step) for step in range(100)]
    assert factors[0] == pytest.approx(1 / 11)
    assert all(a < b for a, b in pairwise(factors[:11]))
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in pairwise(factors[10:]))
    assert schedule(100) == pytest.approx(0.1)


def test_trainable_names_are_state_dict_names_under_fsdp_and_checkpoint_wrappers() -> None:
    inner = torch.nn.Module()
    inner.add_module("_checkpoint_wrapped_module", torch.nn.Linear(2, 2))
    outer = torch.nn.Module()
    outer.add_module("layer", torch.nn.Module())
    outer.layer.add_module("_fsdp_wrapped_module", inner)
    outer.layer._fsdp_wrapped_module._checkpoint_wrapped_module.bias.requires_grad_(False)
    assert trainable_names(outer) == ["layer.weight"]
