"""DeepSpeed checkpoint folders are read with torch.load(weights_only=True): a pickled object is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yivl.checkpoint.trained import read_source
from yivl.errors import YivlError
from yivl.training.checks import check_resume_kind


class Payload:
    """Stands for any object a crafted checkpoint would make torch.load build (and run code for)."""


def test_a_deepspeed_folder_with_a_pickled_object_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "step0000002.ckpt"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "latest").write_text("checkpoint")
    shard = folder / "checkpoint" / "mp_rank_00_model_states.pt"
    torch.save({"module": {}, "payload": Payload()}, shard)
    (folder / "checkpoint" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(shard.read_bytes())
    with pytest.raises(YivlError) as err:
        read_source(folder)
    message = str(err.value)
    assert message.startswith(f"{shard} cannot be read with torch.load(weights_only=True) (UnpicklingError: ")
    assert message.endswith("; only DeepSpeed checkpoints written by train.py are read")
    assert "\n" not in message


def fake_zero_folder(root: Path, ranks: int) -> Path:
    """A DeepSpeed folder as far as resuming looks: ``latest`` and rank 0's model states."""
    folder = root / "last.ckpt"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "latest").write_text("checkpoint")
    torch.save(
        {"module": {}, "dp_world_size": ranks, "yivl": {}},
        folder / "checkpoint" / "mp_rank_00_model_states.pt",
    )
    return folder


ZERO2 = {"name": "deepspeed"}
DDP = {"name": "ddp"}


def test_resuming_with_the_other_kind_of_strategy_is_one_line(tmp_path: Path) -> None:
    folder = fake_zero_folder(tmp_path, ranks=2)
    check_resume_kind(folder, ZERO2, 2)
    with pytest.raises(YivlError) as err:
        check_resume_kind(folder, DDP, 2)
    assert str(err.value) == (
        f"ckpt_path={folder} is a DeepSpeed checkpoint folder; resume it with the strategy that wrote it "
        "(strategy=deepspeed_zero2 or deepspeed_zero3), or export it and start from the export"
    )
    single = tmp_path / "step.ckpt"
    single.write_bytes(b"")
    check_resume_kind(single, DDP, 2)
    with pytest.raises(
        YivlError, match=r"is a single-file checkpoint, which DeepSpeed cannot resume; resume"
    ):
        check_resume_kind(single, ZERO2, 2)


def test_resuming_zero_shards_on_another_number_of_ranks_is_one_line(tmp_path: Path) -> None:
    folder = fake_zero_folder(tmp_path, ranks=2)
    with pytest.raises(YivlError) as err:
        check_resume_kind(folder, ZERO2, 1)
    assert str(err.value) == (
        f"ckpt_path={folder} holds the optimizer shards of 2 ranks, this run has 1; "
        "resume with 2 processes (trainer.devices x trainer.num_nodes)"
    )


def test_resuming_reads_deepspeed_shards_weights_only(tmp_path: Path) -> None:
    """DeepSpeed's own engine would unpickle; the one the strategy installs refuses a pickled object."""
    from yivl.training.deepspeed_engine import WeightsOnlyCheckpointEngine

    shard = tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    torch.save({"payload": Payload()}, shard)
    with pytest.raises(YivlError, match=r"cannot be read with torch.load\(weights_only=True\)"):
        WeightsOnlyCheckpointEngine(None).load(str(shard), map_location=lambda storage, loc: storage)
    torch.save({"weights": torch.ones(2)}, shard)
    loaded = WeightsOnlyCheckpointEngine(None).load(str(shard), map_location=lambda storage, loc: storage)
    assert torch.equal(loaded["weights"], torch.ones(2))
