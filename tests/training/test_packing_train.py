"""train.py with data.packing=true on the tiny model: packed batches reach the model and train, every
epoch runs the loader's length, and the export is the padded run's layout with the module's logits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.data.test_streaming import write_shards
from tests.training.train_process import run_train
from yivl.checkpoint.load import load_pretrained
from yivl.models.yivl import YiVL
from yivl.training.module import YiVLModule
from yivl.training.run import train

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600  # a hung rendezvous or a rank waiting on the other fails the test


def test_packed_stage3_training_runs_on_packed_rows(train_cfg, tmp_path, monkeypatch) -> None:
    seen = []
    forward = YiVL.forward

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("sequence_ids"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(YiVL, "forward", spy)
    cfg = train_cfg(
        "experiment=stage3",
        "module.image_size=null",
        "data.packing=true",
        "data.pack_length=512",
        "trainer.max_steps=3",
        "trainer.limit_val_batches=1",
        "export.enabled=false",
        out=tmp_path,
    )
    result = train(cfg)
    assert result.trainer.global_step == 3
    packed = [s for s in seen if s is not None]
    assert len(packed) >= 3  # every training step; validation batches stay one sample a row
    assert all(int(s.max()) >= 1 for s in packed)  # rows hold more than one sample
    loss = result.trainer.callback_metrics["train/loss"]
    assert math.isfinite(float(loss)) and torch.is_tensor(loss)


SHORT = ["trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.val_check_interval=3"]
PACKED = ["data.packing=true", "data.pack_length=512"]


def test_packed_epochs_each_run_len_train_loader_batches(train_cfg, tmp_path, monkeypatch) -> None:
    """With data.seed=2 the first epoch packs 48 samples into 20 rows and the second into 19: every epoch
    still deals (and Lightning runs) the first epoch's 20, the length Lightning read from the loader."""
    epochs: list[int] = []
    step = YiVLModule.training_step

    def spy(self, batch, batch_idx):
        epochs.append(self.trainer.current_epoch)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(YiVLModule, "training_step", spy)
    cfg = train_cfg(
        *PACKED,
        "data.seed=2",
        "data.batch_size=1",
        "global_batch_size=1",
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=0",
        "val_generation=none",
        "export.enabled=false",
        out=tmp_path,
    )
    result = train(cfg)
    assert [epochs.count(e) for e in (0, 1)] == [20, 20] and result.trainer.global_step == 40
    sampler = result.trainer.train_dataloader.sampler
    sampler.set_epoch(1)
    assert len(sampler._rows()) == 19  # the premise: the second epoch's own plan is a row shorter
    assert result.trainer.num_training_batches == len(result.trainer.train_dataloader) == 20


def export_layout(folder: Path) -> dict:
    """What a packed run must not change: the files, config.json, and every tensor's name and shape."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    tensors = {}
    for path in folder.rglob("*.safetensors"):
        for name, tensor in load_file(path).items():
            tensors[f"{path.relative_to(folder)}:{name}"] = tuple(tensor.shape)
    return {"files": files, "config": json.loads((folder / "config.json").read_text()), "tensors": tensors}


def test_a_packed_runs_export_gives_the_module_logits_in_the_padded_runs_layout(
    train_cfg, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    run = ["experiment=stage3", "module.image_size=null", *SHORT]
    packed = train(train_cfg(*run, *PACKED, out=tmp_path / "packed"))
    padded = train(train_cfg(*run, out=tmp_path / "padded"))
    assert export_layout(packed.export_dir) == export_layout(padded.export_dir)
    exported = load_pretrained(packed.export_dir, dtype=torch.float32).model
    module = packed.module.model.eval()
    datamodule = packed.trainer.datamodule
    rows = next(iter(datamodule.train_dataloader()))
    assert int(rows["sequence_ids"].max()) >= 1  # a packed training batch, and a padded validation one
    for batch in (rows, next(iter(datamodule.val_dataloader()))):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            torch.testing.assert_close(
                exported(**inputs).logits, module(**inputs).logits, atol=1e-5, rtol=1e-5
            )
    base = load_pretrained(tiny_checkpoint, dtype=torch.float32).model
    trained = dict(exported.named_parameters())
    assert any(not torch.equal(p, trained[n]) for n, p in base.named_parameters())  # it did train


def samples_of(batches: list[dict[str, torch.Tensor]]) -> list[tuple[int, ...]]:
    """The token ids of every packed sample in ``batches``, one tuple each."""
    return [
        tuple(row[seq == n].tolist())
        for b in batches
        for row, seq in zip(b["input_ids"], b["sequence_ids"], strict=True)
        for n in range(int(seq.max()) + 1)
    ]


@pytest.mark.slow
def test_two_ranks_stream_packed_shards_for_the_same_steps_on_disjoint_samples(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """4 text-only shards of 6 samples (86 tokens, each its own text), 2 DDP ranks of one reader each, an
    epoch of 8 samples: 4 batches of one row per rank. A buffer of 3 closes each row of 3 as soon as it is
    read, so the epoch is exactly one pass over each rank's 2 shards (the next pass deals the shards
    anew). Every rank must run the 4 steps (one with fewer would leave the other waiting in gloo)."""
    write_shards(tmp_path / "shards", n_shards=4, per_shard=6)
    run, steps = tmp_path / "run", 4
    args = [
        f"model.path={tiny_checkpoint}",
        "model.build_if_missing=false",
        "data=conversation_shards",
        f"data.train.0.urls={tmp_path / 'shards'}",
        f"hydra.run.dir={run}",
        "trainer=ddp_sim",
        "strategy=ddp",
        "data.packing=true",
        "data.pack_length=300",  # the samples are 86 tokens: 3 a row
        "data.pack_buffer=3",
        "data.batch_size=1",
        "global_batch_size=2",
        "data.samples_per_epoch=8",
        "data.num_workers=0",
        "data.pin_memory=false",
        "data.persistent_workers=false",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        "val_generation=none",
        "export.enabled=false",
        "extras.print_config=false",
        "+callbacks.grads._target_=tests.training.grad_probe.GradProbe",
        f"+callbacks.grads.dir={run / 'grads'}",
        f"+callbacks.grads.steps={steps}",
        "+callbacks.probe._target_=tests.training.rank_probe.RankProbe",
        f"+callbacks.probe.dir={run / 'probe'}",
    ]
    run_train(args, TIMEOUT)
    grads = [torch.load(p, weights_only=True) for p in sorted((run / "grads").glob("rank*.pt"))]
    probes = [json.loads(p.read_text()) for p in sorted((run / "probe").glob("rank*.json"))]
    assert len(grads) == len(probes) == 2
    assert [len(p["losses"]) for p in probes] == [steps, steps]  # micro-batches run, one a step
    assert [len(g["grads"]) for g in grads] == [steps, steps]  # optimizer steps taken
    seen = [samples_of([b for step in g["batches"] for b in step]) for g in grads]
    assert [len(s) for s in seen] == [3 * steps, 3 * steps]  # rows of 3 samples
    assert [len(set(s)) for s in seen] == [3 * steps, 3 * steps]  # no sample twice on a rank,
    assert not set(seen[0]) & set(seen[1])  # none on both ranks,
    assert len(set(seen[0]) | set(seen[1])) == 24  # every sample once
