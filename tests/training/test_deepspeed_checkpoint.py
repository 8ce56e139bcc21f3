"""DeepSpeed checkpoint folders are read with torch.load(weights_only=True): a pickled object is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yivl.checkpoint.trained import read_source
from yivl.errors import YivlError


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
