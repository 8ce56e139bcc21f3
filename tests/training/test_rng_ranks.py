"""Per-rank RNG states in checkpoints: gathered from every rank, each rank resumes with its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from yivl.training.checkpointing import rng_for_rank

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import json, sys
import torch, torch.distributed as dist
from yivl.training.checkpointing import rng_entry
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(100 + rank)
entry = rng_entry()
mine = torch.get_rng_state()
dist.destroy_process_group()
print(json.dumps({
    "own": torch.equal(entry["rng"]["torch"], mine),
    "ranks": [torch.equal(s["torch"], mine) for s in entry["rng_ranks"]],
}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rng_entry_holds_every_ranks_states_in_rank_order() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2"}
    env["MASTER_PORT"] = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    rank0, rank1 = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert rank0 == {"own": True, "ranks": [True, False]}  # the seeds differ, so the states do
    assert rank1 == {"own": True, "ranks": [False, True]}


def test_each_rank_resumes_with_its_own_states() -> None:
    saved = {"rng": "rank 0", "rng_ranks": ["rank 0", "rank 1"]}
    assert [rng_for_rank(saved, rank, 2) for rank in range(2)] == ["rank 0", "rank 1"]


def test_another_world_size_or_an_older_checkpoint_resumes_with_the_saved_states() -> None:
    saved = {"rng": "rank 0", "rng_ranks": ["rank 0", "rank 1"]}
    assert rng_for_rank(saved, 3, 4) == "rank 0"  # the ranks of 2 cannot be mapped onto 4
    assert rng_for_rank({"rng": "one state"}, 1, 2) == "one state"  # written before per-rank states
