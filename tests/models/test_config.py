"""YiVLConfig <-> published config.json files, and the presets."""

from __future__ import annotations

import copy

import pytest

from yivl.errors import YivlError
from yivl.models.config import YiVLConfig
from yivl.models.presets import PRESETS, preset

# The released files, written out key by key (reference spec 1.2 and 2.2).
RELEASED_6B = {
    "_name_or_path": "./yi-vl-6b",
    "architectures": ["LlavaLlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "freeze_mm_mlp_adapter": False,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "image_aspect_ratio": "pad",
    "image_grid_pinpoints": None,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "mm_hidden_size": 1280,
    "mm_projector_type": "mlp2x_gelu_Norm",
    "mm_use_im_patch_token": False,
    "mm_use_im_start_end": False,
    "mm_vision_select_feature": "patch",
    "mm_vision_select_layer": -2,
    "mm_vision_tower": "./vit/clip-vit-H-14-laion2B-s32B-b79K-yi-vl-6B-448",
    "model_type": "llava",
    "moe_layer": None,
    "moe_mode": "easy",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 4,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 5000000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.34.0",
    "tune_mm_mlp_adapter": False,
    "tune_vision_tower": False,
    "use_cache": False,
    "use_mm_proj": True,
    "vocab_size": 64000,
}
RELEASED_34B = {
    **RELEASED_6B,
    "_name_or_path": "./yi-vl-34b",
    "hidden_size": 7168,
    "intermediate_size": 20480,
    "num_attention_heads": 56,
    "num_hidden_layers": 60,
    "num_key_value_heads": 8,
    "mm_vision_tower": "./vit/clip-vit-H-14-laion2B-s32B-b79K-yi-vl-34B-448",
}
RELEASED_VIT_34B = {
    "_name_or_path": "clip-vit-H-14-laion2B-s32B-b79K-yi-vl-34B-448",
    "architectures": ["CLIPVisionModel"],
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "image_size": 448,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 32,
    "patch_size": 14,
    "projection_dim": 1024,
    "torch_dtype": "float32",
    "transformers_version": "4.34.0",
}
RELEASED_VIT_6B = {**RELEASED_VIT_34B, "_name_or_path": "clip-vit-H-14-laion2B-s32B-b79K-yi-vl-6B-448"}
RELEASES = {"yi_vl_6b": (RELEASED_6B, RELEASED_VIT_6B), "yi_vl_34b": (RELEASED_34B, RELEASED_VIT_34B)}


@pytest.mark.parametrize("name", list(RELEASES))
def test_published_round_trip_is_exact(name: str) -> None:
    config_json, vit_json = RELEASES[name]
    config = YiVLConfig.from_published(copy.deepcopy(config_json), copy.deepcopy(vit_json))
    assert config.to_published() == config_json
    assert config.vit_config() == vit_json
    assert list(config.to_published()) == sorted(config_json)


@pytest.mark.parametrize("name", list(RELEASES))
def test_presets_are_the_released_configs(name: str) -> None:
    config_json, vit_json = RELEASES[name]
    config = preset(name)
    assert config.to_published() == config_json
    assert config.vit_config() == vit_json
    assert config == YiVLConfig.from_published(config_json, vit_json)


def test_derived_configs_of_6b() -> None:
    config = preset("yi_vl_6b")
    llama, clip = config.llama_config(), config.clip_config()
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_key_value_heads) == (4096, 32, 4)
    assert llama.rope_parameters["rope_theta"] == 5000000.0
    assert llama.rms_norm_eps == 1e-05 and llama.tie_word_embeddings is False
    assert llama.pad_token_id is None  # the release has none: pad rows are real, trainable embeddings
    assert llama._attn_implementation == "sdpa"
    assert (clip.hidden_size, clip.image_size, clip.patch_size, clip.hidden_act) == (1280, 448, 14, "gelu")
    assert config.num_image_tokens == 1024
    assert config.llama_config("eager")._attn_implementation == "eager"


def test_tiny_preset_shapes() -> None:
    config = preset("tiny")
    assert config.num_image_tokens == 64
    assert (config.vision_hidden_size, config.llm_hidden_size, config.llm["vocab_size"]) == (64, 128, 1024)
    assert config.llm["num_key_value_heads"] == 2 and config.llm["max_position_embeddings"] == 4096
    assert set(PRESETS) == {"yi_vl_6b", "yi_vl_34b", "tiny"}


def test_foreign_absolute_tower_path_becomes_relative() -> None:
    config_json = {
        **RELEASED_6B,
        "mm_vision_tower": "/home/someone/yi/vit/clip-vit-H-14-laion2B-s32B-b79K-yi-vl-6B-448/",
    }
    config = YiVLConfig.from_published(config_json, RELEASED_VIT_6B)
    assert config.to_published()["mm_vision_tower"] == RELEASED_6B["mm_vision_tower"]


def test_missing_mm_keys_are_named() -> None:
    config_json = {k: v for k, v in RELEASED_6B.items() if k not in ("mm_projector_type", "mm_hidden_size")}
    with pytest.raises(YivlError, match="mm_projector_type, mm_hidden_size") as err:
        YiVLConfig.from_published(config_json, RELEASED_VIT_6B)
    assert "\n" not in str(err.value)


def test_plain_llama_config_is_rejected() -> None:
    llama_only = {k: v for k, v in RELEASED_6B.items() if not k.startswith("mm_")}
    with pytest.raises(YivlError, match="mm_vision_tower"):
        YiVLConfig.from_published(llama_only, RELEASED_VIT_6B)


def test_unknown_projector_lists_known_ones() -> None:
    with pytest.raises(YivlError, match=r"'mlp2x_relu'.*mlp2x_gelu_Norm.*linear.*identity"):
        YiVLConfig.from_published({**RELEASED_6B, "mm_projector_type": "mlp2x_relu"}, RELEASED_VIT_6B)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"mm_hidden_size": 1024}, "mm_hidden_size 1024"),
        ({"mm_use_im_start_end": True}, "mm_use_im_start_end"),
        ({"mm_vision_select_feature": "cls"}, "select_feature"),
        ({"mm_vision_select_layer": -40}, "select_layer -40"),
    ],
)
def test_bad_values_raise(override: dict, pattern: str) -> None:
    with pytest.raises(YivlError, match=pattern):
        YiVLConfig.from_published({**RELEASED_6B, **override}, RELEASED_VIT_6B)


def test_missing_vit_keys_are_named() -> None:
    vit_json = {k: v for k, v in RELEASED_VIT_6B.items() if k != "patch_size"}
    with pytest.raises(YivlError, match="patch_size"):
        YiVLConfig.from_published(RELEASED_6B, vit_json)


def test_unknown_preset() -> None:
    with pytest.raises(YivlError, match="yi_vl_6b, yi_vl_34b, tiny"):
        preset("yi_vl_7b")
