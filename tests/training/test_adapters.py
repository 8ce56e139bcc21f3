"""LoRA merge, QLoRA on the CPU, gradient checkpointing with adapters, the ViT resolution change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.checkpoint.helpers import train_py_hparams
from yivl.checkpoint.load import load_pretrained
from yivl.checkpoint.plan import CheckpointFlags, RunPlan
from yivl.checkpoint.save import save_pretrained
from yivl.models.lora import add_lora, merge_lora
from yivl.models.resolution import set_image_size
from yivl.training.build import Dtypes, build_model, enable_checkpointing
from yivl.training.optim import build_optimizer, param_groups

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def batch(model: torch.nn.Module, n: int = 2, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids with one image each at position 2, every text token supervised."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.llm["vocab_size"], (n, length), generator=gen)
    ids[:, 2] = -200
    size = model.config.image_size
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.where(ids == -200, -100, ids),
        "pixel_values": torch.randn(n, 3, size, size, generator=gen),
    }


def randomize_lora_b(model: torch.nn.Module) -> None:
    """LoRA B starts at zero (the adapter is then a no-op); give it values so the merge matters."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)


def test_merged_lora_gives_the_unmerged_logits(tiny_loaded) -> None:
    model = tiny_loaded.model
    inputs = {k: v for k, v in batch(model).items() if k != "labels"}
    base = model(**inputs).logits
    add_lora(model.llm, LORA)
    randomize_lora_b(model)
    with torch.no_grad():
        unmerged = model(**inputs).logits
        assert merge_lora(model.llm) == 7 * model.config.llm["num_hidden_layers"]
        merged = model(**inputs).logits
    assert (unmerged - base).abs().max() > 1e-2  # the adapters change the output...
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)  # ...and merging keeps it
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_qlora_step_lowers_the_loss_on_cpu(tiny_checkpoint: Path) -> None:
    opt = {
        "lr": 1e-2,
        "vision_tower_lr": 1e-2,
        "projector_lr": 1e-2,
        "weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
    }
    plan = RunPlan.from_dict(
        train_py_hparams(
            tiny_checkpoint,
            train={"vision_tower": False, "projector": True, "llm": "lora"},
            finetune={
                "method": "qlora",
                "lora": LORA,
                "quant": {"type": "nf4", "double_quant": True, "storage_dtype": "uint8"},
            },
            optimizer=opt,
            gradient_checkpointing={"llm": True, "vision_tower": False},
        )
    )
    model = build_model(plan, Dtypes.for_precision("32-true")).train()
    optimizer = build_optimizer(param_groups(model, plan.optimizer), plan.optimizer)
    data = batch(model)
    losses = []
    for _ in range(3):
        loss = model(**data).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


@pytest.mark.parametrize("part", ["llm", "vision_tower"])
def test_gradient_checkpointing_gives_the_same_lora_gradients(tiny_checkpoint: Path, part: str) -> None:
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = load_pretrained(tiny_checkpoint, dtype=torch.float32).model.train()
        model.requires_grad_(False)
        torch.manual_seed(0)  # the same LoRA A initialisation in both runs
        add_lora(model.llm, LORA)
        model.vision_tower.requires_grad_(part == "vision_tower")
        randomize_lora_b(model)
        enable_checkpointing(
            model, CheckpointFlags(llm=checkpointing and part == "llm", vision_tower=checkpointing)
        )
        model(**batch(model)).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        if grad is None:  # the last ViT layer feeds nothing: Yi-VL reads the second-to-last one
            assert checkpointed[name] is None, name
            continue
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5)
    assert any(g.abs().sum() > 0 for n, g in checkpointed.items() if ".lora_A." in n)


def test_resolution_change_interpolates_and_is_saved(tiny_loaded, tmp_path: Path) -> None:
    model = tiny_loaded.model
    table = model.vision_tower.clip.embeddings.position_embedding.weight.detach().clone()
    set_image_size(model, 224)
    resized = model.vision_tower.clip.embeddings.position_embedding.weight
    assert resized.shape == (1 + 16 * 16, table.shape[1])
    torch.testing.assert_close(resized[0], table[0])  # the CLS position is kept
    assert model.vision_tower(torch.randn(1, 3, 224, 224)).shape == (1, 256, model.config.vision_hidden_size)
    assert model.config.num_image_tokens == 256
    out = save_pretrained(model, tmp_path / "m", tiny_loaded.tokenizer, tiny_loaded.image_processor)
    vit = next((out / "vit").iterdir())
    assert json.loads((vit / "config.json").read_text())["image_size"] == 224
    assert json.loads((vit / "preprocessor_config.json").read_text())["crop_size"] in (
        224,
        {"height": 224, "width": 224},
    )
    reloaded = load_pretrained(out, dtype=torch.float32)
    assert reloaded.image_processor.size == 224
    torch.testing.assert_close(reloaded.model.vision_tower.clip.embeddings.position_embedding.weight, resized)


def test_resolution_round_trip_keeps_a_smooth_table(tiny_loaded) -> None:
    model = tiny_loaded.model
    table = model.vision_tower.clip.embeddings.position_embedding.weight.detach().clone()
    set_image_size(model, 112)  # same size: nothing changes
    assert torch.equal(model.vision_tower.clip.embeddings.position_embedding.weight, table)
    set_image_size(model, 224)
    set_image_size(model, 112)
    back = model.vision_tower.clip.embeddings.position_embedding.weight
    assert back.shape == table.shape
    assert (back - table).abs().mean() < table.abs().mean()  # up-then-down bicubic roughly restores it
