"""DeepSpeed's file checkpoint engine, loading with ``torch.load(weights_only=True)``.

DeepSpeed's ``TorchCheckpointEngine`` (what a DeepSpeed engine uses by default) reads every shard on
resume with ``weights_only=False``. Imported only once DeepSpeed runs (deepspeed is an optional extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepspeed import DeepSpeedEngine
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

from yivl.checkpoint.deepspeed_zero import safe_load


class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
    """``TorchCheckpointEngine`` whose ``load`` is :func:`yivl.checkpoint.deepspeed_zero.safe_load`."""

    def load(self, path: str, map_location: Any = None) -> dict:
        return safe_load(Path(path), map_location, mmap=False)


def use_weights_only_loading(engine: DeepSpeedEngine) -> None:
    """Swap the engine's default checkpoint engine for the weights-only one (others are left alone)."""
    if type(engine.checkpoint_engine) is TorchCheckpointEngine:
        engine.checkpoint_engine = WeightsOnlyCheckpointEngine(engine._config)
