"""Build modules without allocating parameter memory (parameters on the meta device, buffers real).

The checkpoint loader builds the model inside ``empty_init()`` and then assigns the loaded tensors one by
one, so loading never holds a randomly initialised copy next to the real weights. Buffers (rotary
frequencies, CLIP position ids) are computed in ``__init__`` and are not in checkpoints, so they stay real.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def empty_init() -> Iterator[None]:
    """Within the block, every parameter a module registers is moved to the meta device at once.

    The short-lived real tensor each ``nn.Parameter`` is made from is never initialised (its
    ``reset_parameters`` runs on meta afterwards), so no parameter memory is touched.
    """
    original = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            # Subclasses (e.g. quantized parameters) keep their extra attributes via __dict__.
            kwargs = {**param.__dict__, "requires_grad": param.requires_grad}
            module._parameters[name] = type(param)(param.to(torch.device("meta")), **kwargs)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = original
