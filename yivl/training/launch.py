"""Multi-process launch under Hydra: re-launch *this job* for each rank, not the whole command line.

For DDP/DeepSpeed/FSDP on one machine, Lightning starts ranks 1..N-1 by re-running ``sys.argv`` with
``hydra.run.dir`` pinned. Inside a multirun (``-m``, ``hparams_search``) that command line is the whole
sweep: every rank would start its own sweep in new timestamped folders, and the jobs hang waiting for
ranks that never join (lightning-hydra-template issue 393; Lightning PR 18175 is still open). We replace
Lightning's command builder by one that runs the current job's own overrides as a single run in the
job's output directory. Nothing changes when the ranks come from torchrun or SLURM: Lightning then
launches nothing, and :func:`check_external_launch` checks, before any model is loaded, that the launcher's
process count matches ``trainer.devices`` x ``trainer.num_nodes`` and that every rank writes to one run
folder (Lightning would otherwise fail later with a traceback, or ranks would write to folders named by
their own start second).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import torch
from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
from lightning.pytorch.strategies.launchers import subprocess_script as pytorch_launcher

from yivl.errors import YivlError


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


def external_launcher() -> str | None:
    """``"torchrun"`` or ``"SLURM"`` when that launcher started this process (Lightning's own detection
    order: torchrun first, since it also runs inside SLURM jobs), else None."""
    if torch.distributed.is_available() and torch.distributed.is_torchelastic_launched():
        return "torchrun"
    if "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "SLURM"
    return None


def check_external_launch(trainer: Mapping, run_dir_given: bool) -> None:
    """Refuse, in one line, a torchrun or SLURM launch that Lightning cannot use.

    ``trainer``: the resolved ``trainer`` config; ``run_dir_given``: whether the command line fixes the
    run folder (``hydra.run.dir``), which every rank needs when the launcher starts several processes.
    """
    launcher = external_launcher()
    if launcher is None:
        return
    devices, nodes = trainer["devices"], int(trainer["num_nodes"])
    known = isinstance(devices, int) and devices > 0  # -1 / "auto": Lightning counts the GPUs
    if launcher == "torchrun":
        world = int(os.environ["WORLD_SIZE"])
        if known and devices * nodes != world:
            raise YivlError(
                f"torchrun started {world} process(es) but trainer.devices={devices} x trainer.num_nodes="
                f"{nodes} = {devices * nodes}; set trainer.devices to --nproc-per-node and "
                "trainer.num_nodes to --nnodes"
            )
    else:
        world = _check_slurm(devices if known else None, nodes)
    if world > 1 and not run_dir_given:
        raise YivlError(
            f"{launcher} started {world} processes, and each would pick its own timestamped run folder; "
            "add hydra.run.dir=DIR (the same on every node, on a shared file system)"
        )


def _check_slurm(devices: int | None, nodes: int) -> int:
    """SLURM's task layout against the trainer's; the number of tasks."""
    tasks = int(os.environ["SLURM_NTASKS"])
    per_node = os.environ.get("SLURM_NTASKS_PER_NODE")
    if per_node is None:
        if tasks > 1:
            raise YivlError(
                f"SLURM started {tasks} tasks without --ntasks-per-node; Lightning needs it: use "
                "#SBATCH --nodes=N --ntasks-per-node=<GPUs per node> instead of --ntasks"
            )
        return tasks
    if devices is not None and int(per_node) != devices:
        raise YivlError(
            f"SLURM runs {per_node} task(s) per node (--ntasks-per-node) but trainer.devices={devices}; "
            f"set trainer.devices={per_node}, or --ntasks-per-node={devices} and start train.py with srun"
        )
    have_nodes = int(os.environ.get("SLURM_NNODES", nodes))
    if have_nodes != nodes:
        raise YivlError(
            f"SLURM gave the job {have_nodes} node(s) (--nodes) but trainer.num_nodes={nodes}; "
            f"set trainer.num_nodes={have_nodes}"
        )
    return tasks


def hydra_run_dir_given() -> bool:
    """Whether the command line fixes this job's folder (``hydra.run.dir``, or ``hydra.sweep.dir`` in a
    multirun); True outside Hydra (tests and notebooks choose ``paths.output_dir`` themselves)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return True
    hydra_cfg = HydraConfig.get()
    key = "hydra.sweep.dir" if hydra_cfg.mode == RunMode.MULTIRUN else "hydra.run.dir"
    return any(o.lstrip("+").split("=", 1)[0] == key for o in hydra_cfg.overrides.hydra)
