"""Map our state-dict names to the names of the published Yi-VL layout and back.

Ours (``YiVL.state_dict()``)            published
``llm.model.*``                          ``model.*``               main shards
``llm.lm_head.weight``                   ``lm_head.weight``        main shards
``mm_projector.N.*``                     ``model.mm_projector.N.*`` main shards
``vision_tower.clip.*``                  ``vision_model.*``        ``vit/<name>/`` (a CLIPVisionModel)
"""

from __future__ import annotations

from typing import Literal

Location = Literal["main", "vit"]

_LLM = "llm."
_PROJECTOR = "mm_projector."
_TOWER = "vision_tower.clip."
_VIT_PREFIX = "vision_model."

IGNORED_MAIN_PREFIXES = ("model.vision_tower.",)
"""The 01-ai release also stores a bf16 ViT copy in the main shards; the original loader drops it
(the tower is delay-loaded from ``vit/``), so we do too: ``vit/`` is the tower that counts."""

IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")
"""Non-persistent buffers that older transformers versions saved; the model recomputes them."""


def published_name(ours: str) -> tuple[Location, str]:
    """Return where a tensor of ours is stored and under which key."""
    if ours.startswith(_PROJECTOR):
        return "main", "model." + ours
    if ours.startswith(_LLM):
        return "main", ours[len(_LLM) :]
    if ours.startswith(_TOWER):
        return "vit", _VIT_PREFIX + ours[len(_TOWER) :]
    raise ValueError(f"no published name for state-dict key {ours!r}")


def our_name(location: Location, key: str) -> str | None:
    """Return our state-dict name for a stored key, or None if the key is skipped on purpose."""
    if key.endswith(IGNORED_SUFFIXES):
        return None
    if location == "vit":
        # transformers >= 5 saves CLIPVisionModel without the ``vision_model.`` prefix; accept both.
        return _TOWER + key.removeprefix(_VIT_PREFIX)
    if key.startswith(IGNORED_MAIN_PREFIXES):
        return None
    if key.startswith("model." + _PROJECTOR):
        return key[len("model.") :]
    return _LLM + key
