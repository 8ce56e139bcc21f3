"""evaluate.py loads every checkpoint kind: published layout, train.py checkpoint, LoRA adapter export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.checkpoint.helpers import train_py_hparams
from tests.evaluation.task_files import (
    eval_config,
    no_network,  # noqa: F401 - fixture
    one_thread,  # noqa: F401 - fixture
    task_records,
    write_images,
    write_jsonl,
)
from yivl.checkpoint.load import LoadedModel, load_pretrained
from yivl.checkpoint.plan import RunPlan
from yivl.errors import YivlError
from yivl.evaluation.checkpoints import checkpoint_kind
from yivl.evaluation.run import run

pytestmark = pytest.mark.usefixtures("no_network", "one_thread")


def lora_plan(base: Path) -> dict:
    """The training plan train.py stores for a LoRA run (what the export helpers read back)."""
    return train_py_hparams(
        base,
        stage="lora",
        train={"vision_tower": False, "projector": True, "llm": "lora"},
        finetune={"method": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
    )


def trained_lora_model(base: Path) -> LoadedModel:
    """The tiny model with reproducible non-zero LoRA adapters and a changed projector (trainable)."""
    from yivl.models.lora import add_lora

    loaded = load_pretrained(base, dtype=torch.float32)
    model = loaded.model
    model.requires_grad_(False)
    add_lora(model.llm, lora_plan(base)["finetune"]["lora"])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.llm.named_parameters():
            if ".lora_" in name:  # peft draws lora_A from the global generator: set both, reproducibly
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        model.mm_projector[0].weight.add_(0.1)
    model.mm_projector.requires_grad_(True)
    return loaded


def test_published_checkpoint_and_adapter_export_score_the_same(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from yivl.checkpoint.exporter import save_adapter, save_merged

    data = write_jsonl(tmp_path / "loss.jsonl", task_records("loss", write_images(tmp_path, 3), n=3))
    plan = RunPlan.from_dict(lora_plan(tiny_checkpoint))
    adapter = save_adapter(trained_lora_model(tiny_checkpoint).model, plan, tmp_path / "adapter")
    merged = save_merged(trained_lora_model(tiny_checkpoint), tmp_path / "merged", "float32")
    trainables = trained_lora_model(tiny_checkpoint).model.named_parameters()
    state = {f"model.{n}": p.detach().clone() for n, p in trainables if p.requires_grad}
    ckpt = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": lora_plan(tiny_checkpoint), "state_dict": state}, ckpt)
    assert [checkpoint_kind(p) for p in (adapter, merged, ckpt)] == ["adapter", "published", "lightning"]

    def nll(checkpoint: Path, name: str) -> float:
        summary = run(eval_config(checkpoint, tmp_path / f"eval-{name}", [f"loss:{data}"]))
        assert summary["checkpoint"]["kind"] == checkpoint_kind(checkpoint)
        return summary["tasks"]["loss"]["nll"]

    scores = {
        name: nll(path, name) for name, path in (("merged", merged), ("adapter", adapter), ("ckpt", ckpt))
    }
    assert scores["adapter"] == pytest.approx(scores["merged"], rel=1e-5)
    assert scores["ckpt"] == pytest.approx(scores["merged"], rel=1e-5)
    assert nll(tiny_checkpoint, "base") != pytest.approx(scores["merged"], rel=1e-3)  # the adapters mattered


def test_unknown_checkpoint_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(YivlError, match="neither a published-layout model"):
        checkpoint_kind(tmp_path)
    with pytest.raises(YivlError, match="checkpoint not found"):
        checkpoint_kind(tmp_path / "missing")
