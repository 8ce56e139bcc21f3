"""Multi-process launch under Hydra: re-launch *this job* for each rank, not the whole command line.

For DDP/DeepSpeed/FSDP on one machine, Lightning starts ranks 1..N-1 by re-running ``sys.argv`` with
``hydra.run.dir`` pinned. Inside a multirun (``-m``, ``hparams_search``) that command line is the whole
sweep: every rank would start its own sweep in new timestamped folders, and the jobs hang waiting for
ranks that never join (lightning-hydra-template issue 393; Lightning PR 18175 is still open). We replace
Lightning's command builder by one that runs the current job's own overrides as a single run in the
job's output directory. Nothing changes when the ranks come from torchrun or SLURM: Lightning then
launches nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher


def job_subprocess_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command (and working directory) that starts rank ``local_rank`` of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += list(hydra_cfg.overrides.task)
    command += [
        f"hydra.run.dir={_quoted(hydra_cfg.runtime.output_dir)}",
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
        "hydra.mode=RUN",  # hparams_search configs switch to MULTIRUN; a rank is always a single run
    ]
    return command, get_original_cwd()


def _quoted(value: str) -> str:
    """A Hydra override value quoted so that any path characters survive the parser."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def use_job_subprocess_command() -> None:
    """Install :func:`job_subprocess_command` in Lightning's launchers (idempotent)."""
    fabric_launcher._hydra_subprocess_cmd = job_subprocess_command
    pytorch_launcher._hydra_subprocess_cmd = job_subprocess_command
