"""Read a DeepSpeed ZeRO-2/3 checkpoint folder without unpickling code: the gathered trainable tensors.

DeepSpeed's ``zero_to_fp32`` (and Lightning's converter on top of it) read the shards with
``torch.load(weights_only=False)``, which runs any code a crafted file carries. Here every file is read
with ``weights_only=True``; the only classes allowed beyond tensors and containers are three of
DeepSpeed's that hold plain numbers (``LossScaler``, ``ZeroStageEnum``, ``fragment_address``). The
gathering itself (ZeRO-2's flat fp32 partitions, ZeRO-3's per-parameter partitions, over all ranks'
files) is DeepSpeed's own code, fed the safely read states.
"""

from __future__ import annotations

from pathlib import Path

import torch

from yivl.errors import YivlError

DEEPSPEED_KEYS = (
    "module",
    "optimizer",
    "lr_scheduler",
    "csr_tensor_module_names",
    "skipped_steps",
    "global_steps",
    "dp_world_size",
    "mp_world_size",
)
"""Entries of a model-states file that are DeepSpeed's, not Lightning's client state."""


def safe_load(path: Path, map_location: object = "cpu", mmap: bool = True) -> dict:
    """``torch.load(weights_only=True)`` of one DeepSpeed file; YivlError naming the file otherwise."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    try:
        with torch.serialization.safe_globals([LossScaler, ZeroStageEnum, fragment_address]):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # unpickling errors come in many types
        raise YivlError(
            f"{path} cannot be read with torch.load(weights_only=True) ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}); only DeepSpeed checkpoints written by train.py are read"
        ) from None


def _model_state(state: dict):
    """DeepSpeed's parsed model state (what ``zero_to_fp32.parse_model_states`` builds) of one file."""
    from deepspeed.utils.zero_to_fp32 import zero_model_state

    names = state["buffer_names"]
    return zero_model_state(
        buffers={
            k: v.float() if v.is_floating_point() else v for k, v in state["module"].items() if k in names
        },
        param_shapes=state["param_shapes"],
        shared_params=[list(pair) for pair in state["shared_params"].items()],
        ds_version=state.get("ds_version"),
        frozen_param_shapes=state.get("frozen_param_shapes"),
        frozen_param_fragments=state.get("frozen_param_fragments"),
    )


def _tag_dir(folder: Path) -> Path:
    return folder / (folder / "latest").read_text(encoding="utf-8").strip()


def zero_run_state(folder: Path) -> tuple[dict | None, int]:
    """(train.py's ``yivl`` entry, number of ranks that wrote it) of a DeepSpeed folder; tensors not read."""
    from deepspeed.utils import zero_to_fp32 as z

    first = Path(z.get_model_state_files(str(_tag_dir(folder)))[0])
    state = safe_load(first)
    return state.get("yivl"), int(state["dp_world_size"])


def zero_client_state(folder: Path, rank: int) -> dict:
    """Lightning's client state (loops, callbacks, data position, ``yivl``) as rank ``rank`` saved it.

    ZeRO-3 ranks each write their own model-states file, ZeRO-1/2 only rank 0: this rank's file, else
    rank 0's (the one DeepSpeed's ``load_checkpoint`` would read). Its weights are not kept.
    """
    tag_dir = _tag_dir(folder)
    own = tag_dir / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt"
    path = own if own.is_file() else tag_dir / "mp_rank_00_model_states.pt"
    if not path.is_file():
        raise YivlError(f"{tag_dir} holds no model states for rank {rank}; it is incomplete")
    return {k: v for k, v in safe_load(path).items() if k not in DEEPSPEED_KEYS}


def read_zero_checkpoint(folder: Path) -> dict:
    """Lightning's checkpoint dict (client state + gathered fp32 ``state_dict``) of a DeepSpeed folder.

    ``folder`` is what Lightning's ``save_checkpoint`` wrote: ``latest`` naming a tag folder of shards.
    """
    from deepspeed.utils import zero_to_fp32 as z

    tag_dir = _tag_dir(folder)
    model_files = [Path(f) for f in z.get_model_state_files(str(tag_dir))]
    optim_files = [Path(f) for f in z.get_optim_files(str(tag_dir))]
    models = [safe_load(f) for f in model_files]
    optims = [safe_load(f)["optimizer_state_dict"] for f in optim_files]
    stage, world = int(optims[0]["zero_stage"]), optims[0]["partition_count"]
    world = max(world) if isinstance(world, list) else int(world)
    if world != len(optims):
        raise YivlError(
            f"{tag_dir} holds {len(optims)} optimizer shard(s) of a {world}-rank run; it is incomplete"
        )
    states = [_model_state(m) for m in models]
    if stage <= 2:
        groups = [o["single_partition_of_fp32_groups"] for o in optims]
        paddings = optims[0].get("param_alignment_paddings")
        gathered = z._get_fp32_state_dict_from_zero2_checkpoint(world, groups, states, True, paddings)
    else:
        groups = [o["fp32_flat_groups"] for o in optims]
        gathered = z._get_fp32_state_dict_from_zero3_checkpoint(world, groups, states, True)
    client = {k: v for k, v in models[0].items() if k not in DEEPSPEED_KEYS}
    tensors = z.to_torch_tensor(gathered)
    client["state_dict"] = {k.removeprefix("_forward_module."): v for k, v in tensors.items()}
    return client
