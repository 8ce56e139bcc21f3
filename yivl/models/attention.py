"""``model.attn_implementation``: the attention backend of both the vision tower and the LLM.

transformers' names: ``sdpa`` (torch's scaled_dot_product_attention, the default), ``eager`` (plain
matmul + softmax), ``flash_attention_2`` (the ``flash_attn`` package, CUDA only) and ``flex_attention``
(torch's FlexAttention). :func:`check_attn_implementation` refuses, in one line and before any weight is
read, a name transformers does not know, a backend whose package is missing, or one that the CLIP tower
or the Llama LLM does not support.
"""

from __future__ import annotations

import importlib.util

from yivl.errors import YivlError

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flex_attention")
_SUPPORT_FLAG = {"sdpa": "_supports_sdpa", "flash_attention_2": "_supports_flash_attn"}
_SUPPORT_FLAG["flex_attention"] = "_supports_flex_attn"
_PACKAGES = {"flash_attention_2": ("flash_attn", "pip install flash-attn --no-build-isolation")}


def check_attn_implementation(name: str) -> None:
    """YivlError unless ``name`` is a backend that is installed and that both submodules support."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise YivlError(
            f"model.attn_implementation={name!r} is unknown; use one of {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    if name in _PACKAGES:
        package, install = _PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise YivlError(
                f"model.attn_implementation={name} needs the {package} package, which is not installed "
                f"({install}, CUDA only); use model.attn_implementation=sdpa"
            )
    from transformers import CLIPVisionModel, LlamaForCausalLM

    flag = _SUPPORT_FLAG.get(name)
    for part, cls in (("vision tower (CLIP)", CLIPVisionModel), ("LLM (Llama)", LlamaForCausalLM)):
        if flag is not None and not getattr(cls, flag):
            raise YivlError(
                f"model.attn_implementation={name} is not supported by the {part} in this transformers "
                "version; use model.attn_implementation=sdpa"
            )
