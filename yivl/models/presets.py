"""Model presets: the released Yi-VL-6B and Yi-VL-34B configurations, and a tiny one for tests.

The 6B/34B values are those of the published ``config.json`` and ``vit/<name>/config.json`` files, so
``preset("yi_vl_6b").to_published()`` reproduces the released config.json key for key.
"""

from __future__ import annotations

from collections.abc import Callable

from yivl.errors import YivlError
from yivl.models.config import YiVLConfig


def _llm(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int) -> dict:
    """Llama arguments shared by every Yi-VL size; only the shape differs."""
    return {
        "attention_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "max_position_embeddings": 4096,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 5000000.0,
        "tie_word_embeddings": False,
        "vocab_size": vocab,
    }


def _vision(name: str, hidden: int, intermediate: int, layers: int, heads: int, image_size: int) -> dict:
    """vit/<name>/config.json content minus architectures/model_type (written by ``vit_config``)."""
    return {
        "_name_or_path": name,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "gelu",
        "hidden_size": hidden,
        "image_size": image_size,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "layer_norm_eps": 1e-05,
        "num_attention_heads": heads,
        "num_channels": 3,
        "num_hidden_layers": layers,
        "patch_size": 14,
        "projection_dim": 1024,
        "torch_dtype": "float32",
        "transformers_version": "4.34.0",
    }


def _extra(name_or_path: str, torch_dtype: str) -> dict:
    """The release's config.json keys that the model does not read (kept for fidelity)."""
    return {
        "_name_or_path": name_or_path,
        "architectures": ["LlavaLlamaForCausalLM"],
        "freeze_mm_mlp_adapter": False,
        "image_grid_pinpoints": None,
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "model_type": "llava",
        "moe_layer": None,
        "moe_mode": "easy",
        "torch_dtype": torch_dtype,
        "transformers_version": "4.34.0",
        "tune_mm_mlp_adapter": False,
        "tune_vision_tower": False,
        "use_cache": False,
        "use_mm_proj": True,
    }


def yi_vl_6b() -> YiVLConfig:
    """01-ai/Yi-VL-6B: Yi-6B-Chat (4096 wide, 32 layers, GQA 32/4) + ViT-H/14 at 448 px."""
    name = "clip-vit-H-14-laion2B-s32B-b79K-yi-vl-6B-448"
    return YiVLConfig(
        llm=_llm(4096, 11008, 32, 32, 4, 64000),
        vision=_vision(name, 1280, 5120, 32, 16, 448),
        vision_tower_name=name,
        extra=_extra("./yi-vl-6b", "bfloat16"),
    )


def yi_vl_34b() -> YiVLConfig:
    """01-ai/Yi-VL-34B: Yi-34B-Chat (7168 wide, 60 layers, GQA 56/8) + ViT-H/14 at 448 px."""
    name = "clip-vit-H-14-laion2B-s32B-b79K-yi-vl-34B-448"
    return YiVLConfig(
        llm=_llm(7168, 20480, 60, 56, 8, 64000),
        vision=_vision(name, 1280, 5120, 32, 16, 448),
        vision_tower_name=name,
        extra=_extra("./yi-vl-34b", "bfloat16"),
    )


def tiny() -> YiVLConfig:
    """A few-MB random model for tests: 64 image tokens (112 px / 14), 2+2 layers, 1024-token vocab."""
    name = "clip-vit-tiny-yi-vl-tiny-112"
    vision = _vision(name, 64, 128, 2, 4, 112)
    vision.update(projection_dim=64)
    return YiVLConfig(
        llm=_llm(128, 256, 2, 4, 2, 1024),
        vision=vision,
        vision_tower_name=name,
        extra=_extra("./yi-vl-tiny", "float32"),
    )


PRESETS: dict[str, Callable[[], YiVLConfig]] = {"yi_vl_6b": yi_vl_6b, "yi_vl_34b": yi_vl_34b, "tiny": tiny}


def preset(name: str) -> YiVLConfig:
    """A fresh YiVLConfig for preset ``name``; YivlError listing the known names otherwise."""
    if name not in PRESETS:
        raise YivlError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]()
