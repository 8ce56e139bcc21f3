"""The data module: batches, resuming at the exact data position (alone and under Lightning), configs."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from yivl.data.callbacks import SkippedSamplesLogger
from yivl.data.collate import BATCH_KEYS
from yivl.data.datamodule import YiVLDataModule
from yivl.data.images import ImageProcessor
from yivl.data.synthetic import ensure_synthetic_dataset
from yivl.errors import YivlError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return ensure_synthetic_dataset(
        tmp_path_factory.mktemp("d") / "synthetic", num_train=40, num_val=8, seed=0
    )


def make_dm(synth: Path, tokenizer, stream: bool = False, **kw) -> YiVLDataModule:
    spec = {"type": "synthetic", "root": str(synth), "num_train": 40, "num_val": 8}
    train = [spec, {**spec, "split": "val", "weight": 0.2}] if stream else [spec]
    dm = YiVLDataModule(train, val=[{**spec, "split": "val"}], batch_size=4, samples_per_epoch=40, **kw)
    dm.bind(tokenizer, ImageProcessor(size=28), num_image_tokens=4)
    return dm


def fingerprint(batch: dict) -> tuple:
    return tuple(batch["input_ids"][:, :80].flatten().tolist())


def test_batches_have_the_fixed_keys(synth: Path, tokenizer) -> None:
    for stream in (False, True):
        batch = next(iter(make_dm(synth, tokenizer, stream).train_dataloader()))
        assert tuple(batch) == BATCH_KEYS
        assert batch["pixel_values"].shape[1:] == (3, 28, 28)
        assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape


def test_unbound_module_is_a_clear_error(synth: Path) -> None:
    dm = YiVLDataModule([{"type": "synthetic", "root": str(synth), "num_train": 40, "num_val": 8}])
    with pytest.raises(YivlError, match="bind"):
        dm.train_dataloader()


def test_unknown_source_keys_are_refused() -> None:
    with pytest.raises(YivlError, match="does not take"):
        YiVLDataModule([{"type": "json", "path": "x.json", "images": "typo"}])
    with pytest.raises(YivlError, match="unknown"):
        YiVLDataModule([{"type": "parquet", "path": "x"}])


@pytest.mark.parametrize("stream", [False, True])
def test_state_dict_resumes_at_the_same_position(synth: Path, tokenizer, stream: bool) -> None:
    dm = make_dm(synth, tokenizer, stream)
    loader = dm.train_dataloader()
    full = [fingerprint(b) for b in loader]
    assert len(full) == len(loader) == 10
    dm = make_dm(synth, tokenizer, stream)
    it = iter(dm.train_dataloader())
    head = [fingerprint(next(it)) for _ in range(4)]
    state = dm.state_dict()
    assert state["batches_done"] == 4 and state["epoch"] == 0
    resumed = make_dm(synth, tokenizer, stream)
    resumed.load_state_dict(state)
    tail = [fingerprint(b) for b in resumed.train_dataloader()]
    assert len(tail) == 6
    if not stream:  # map-style resumes exactly; a stream continues with fresh samples of the same epoch
        assert head + tail == full


class Probe(L.LightningModule):
    """Records what it is fed; a tiny loss so the optimizer steps."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(fingerprint(batch))
        return (self.w * batch["attention_mask"].float().mean() - 1) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(dm, ckpt_dir: Path | None = None, ckpt_path: str | None = None, callbacks=()) -> list[tuple]:
    callbacks = [
        *callbacks,
        *([ModelCheckpoint(ckpt_dir, every_n_train_steps=1, save_top_k=-1)] if ckpt_dir else []),
    ]
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        enable_checkpointing=bool(ckpt_dir),
        limit_val_batches=0,
    )
    probe = Probe()
    trainer.fit(probe, datamodule=dm, ckpt_path=ckpt_path)
    probe.metrics = dict(trainer.callback_metrics)
    return probe.seen


@pytest.mark.parametrize("stream", [False, True])
def test_lightning_resume_continues_the_data(synth: Path, tokenizer, tmp_path: Path, stream: bool) -> None:
    workers = 2 if stream else 0
    full = _fit(make_dm(synth, tokenizer, stream, num_workers=workers), ckpt_dir=tmp_path)
    assert len(full) == 20  # 2 epochs x 10 batches
    for step in (6, 13):  # mid-epoch 0 and mid-epoch 1
        ckpt = str(tmp_path / f"epoch={step // 10}-step={step}.ckpt")
        resumed = _fit(make_dm(synth, tokenizer, stream, num_workers=workers), ckpt_path=ckpt)
        assert len(resumed) == 20 - step
        if not stream:  # map-style data resumes batch for batch
            assert resumed == full[step:]


def test_every_data_config_instantiates(tmp_path: Path) -> None:
    paths = OmegaConf.create({"paths": {"data_dir": str(tmp_path), "cache_dir": str(tmp_path / "cache")}})
    for path in sorted((CONFIGS / "data").glob("*.yaml")):
        raw = OmegaConf.load(path)
        raw.pop(
            "defaults", None
        )  # Hydra's defaults list (data=synthetic selects val_generation), not an argument
        cfg = OmegaConf.merge(paths, {"data": raw})
        dm = hydra.utils.instantiate(cfg.data)
        assert isinstance(dm, YiVLDataModule) and dm.train_sources, path.name
        assert all(isinstance(s, dict) for s in dm.train_sources)


def test_skipped_samples_are_counted_and_logged(synth: Path, tokenizer, tmp_path: Path) -> None:
    lines = (synth / "train.jsonl").read_text().splitlines()[:12]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([*lines[:6], "{broken", *lines[6:], '{"conversations": []}']) + "\n")
    source = {"type": "json", "path": str(path), "image_folder": str(synth)}
    dm = YiVLDataModule([source], batch_size=2, max_reject_fraction=0.2)  # 2 of 14 rejected
    dm.bind(tokenizer, ImageProcessor(size=28), num_image_tokens=4)
    seen = _fit(dm, callbacks=[SkippedSamplesLogger(every_n_steps=1)])
    assert len(seen) == 14  # 7 batches of 2 per epoch: rejects are replaced, not dropped from the batch
    assert dm.skip_counts() == {"json_malformed": 2, "no_conversations": 2}  # once per epoch each


@pytest.mark.parametrize("stream", [False, True])
def test_overfit_batches_repeat_the_same_batches(synth: Path, tokenizer, stream: bool) -> None:
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        overfit_batches=2,
    )
    probe = Probe()
    trainer.fit(probe, datamodule=make_dm(synth, tokenizer, stream))
    assert len(probe.seen) == 6 and len(set(probe.seen)) == 2
