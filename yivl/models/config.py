"""YiVLConfig: the model's configuration, read from and written to the published config.json files.

A published Yi-VL directory holds two configs: ``config.json`` (a LLaVA-style Llama config with ``mm_*``
keys) and ``vit/<name>/config.json`` (a ``CLIPVisionModel`` config). ``from_published`` splits them into
Llama kwargs, CLIP kwargs and the multimodal settings; ``to_published`` / ``vit_config`` write them back.
Keys we do not use are kept in ``extra`` so that a load -> save round trip loses nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from yivl.errors import YivlError

if TYPE_CHECKING:  # transformers takes seconds to import; --help and config checks do not need it
    from transformers import CLIPVisionConfig, LlamaConfig

LLM_KEYS = (
    "attention_bias",
    "bos_token_id",
    "eos_token_id",
    "hidden_act",
    "hidden_size",
    "initializer_range",
    "intermediate_size",
    "max_position_embeddings",
    "num_attention_heads",
    "num_hidden_layers",
    "num_key_value_heads",
    "pad_token_id",
    "pretraining_tp",
    "rms_norm_eps",
    "rope_scaling",
    "rope_theta",
    "tie_word_embeddings",
    "vocab_size",
)
"""config.json keys that are LlamaConfig arguments."""

REQUIRED_LLM_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_hidden_layers",
    "vocab_size",
)
REQUIRED_MM_KEYS = (
    "mm_vision_tower",
    "mm_projector_type",
    "mm_hidden_size",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
)
REQUIRED_VIT_KEYS = (
    "hidden_size",
    "image_size",
    "patch_size",
    "intermediate_size",
    "num_attention_heads",
    "num_hidden_layers",
)
VIT_META_KEYS = ("_name_or_path", "architectures", "model_type", "torch_dtype", "transformers_version")
"""vit config.json keys that describe the file rather than the model (kept, but not passed to CLIP)."""

PROJECTOR_TYPES = ("mlp2x_gelu_Norm", "mlp<N>x_gelu_Norm", "mlp<N>x_gelu", "linear", "identity")
SELECT_FEATURES = ("patch", "cls_patch")
_MLP_RE = re.compile(r"^mlp(\d+)x_gelu(_Norm)?$")


def check_projector_type(projector_type: str) -> None:
    """Raise YivlError unless ``projector_type`` is one the original builder knows."""
    if projector_type in ("linear", "identity") or _MLP_RE.match(projector_type):
        return
    raise YivlError(
        f"unknown mm_projector_type {projector_type!r} in config.json; known: {', '.join(PROJECTOR_TYPES)}"
    )


def _missing(d: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    """Raise YivlError naming every key of ``keys`` that ``d`` lacks."""
    absent = [k for k in keys if k not in d]
    if absent:
        raise YivlError(f"{where} lacks {', '.join(absent)}; is this a Yi-VL (LLaVA-style) model directory?")


@dataclass
class YiVLConfig:
    """Everything needed to build a YiVL model and to write its published config files.

    ``llm`` holds LlamaConfig arguments, ``vision`` the vit config.json content (CLIPVisionConfig arguments
    plus the file's meta keys such as ``_name_or_path``), ``extra`` the other config.json keys.
    """

    llm: dict
    vision: dict
    projector_type: str = "mlp2x_gelu_Norm"
    select_layer: int = -2
    select_feature: str = "patch"
    image_aspect_ratio: str = "pad"
    vision_tower_name: str = "clip-vit-H-14-laion2B-s32B-b79K-yi-vl-6B-448"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_projector_type(self.projector_type)
        if self.select_feature not in SELECT_FEATURES:
            raise YivlError(
                f"unknown mm_vision_select_feature {self.select_feature!r}; use one of {SELECT_FEATURES}"
            )
        depth = self.vision["num_hidden_layers"]
        if not -depth - 1 <= self.select_layer <= depth:
            raise YivlError(
                f"mm_vision_select_layer {self.select_layer} is outside the {depth + 1} hidden states of the "
                "vision tower; Yi-VL uses -2"
            )

    @property
    def llm_hidden_size(self) -> int:
        """Width H of the LLM's token embeddings (the projector's output)."""
        return int(self.llm["hidden_size"])

    @property
    def vision_hidden_size(self) -> int:
        """Width C of the tower's patch features (the projector's input, ``mm_hidden_size``)."""
        return int(self.vision["hidden_size"])

    @property
    def image_size(self) -> int:
        """Side S of the square images the tower takes."""
        return int(self.vision["image_size"])

    @property
    def num_image_tokens(self) -> int:
        """Embeddings P that one image contributes to the sequence: (S / patch)^2, plus CLS for cls_patch."""
        patches = (self.image_size // int(self.vision["patch_size"])) ** 2
        return patches + (1 if self.select_feature == "cls_patch" else 0)

    def llama_config(self, attn_implementation: str = "sdpa") -> LlamaConfig:
        """The transformers LlamaConfig of the language model."""
        from transformers import LlamaConfig

        return LlamaConfig(**self.llm, attn_implementation=attn_implementation)

    def clip_config(self, attn_implementation: str = "sdpa") -> CLIPVisionConfig:
        """The transformers CLIPVisionConfig of the vision tower (file meta keys left out)."""
        from transformers import CLIPVisionConfig

        kwargs = {k: v for k, v in self.vision.items() if k not in VIT_META_KEYS}
        return CLIPVisionConfig(**kwargs, attn_implementation=attn_implementation)

    def vit_config(self) -> dict:
        """Content of ``vit/<vision_tower_name>/config.json``."""
        out = {
            "architectures": ["CLIPVisionModel"],
            "model_type": "clip_vision_model",
            **self.vision,
            "_name_or_path": self.vision_tower_name,
        }
        return dict(sorted(out.items()))

    def to_published(self) -> dict:
        """Content of the top-level ``config.json`` (release key names, keys sorted)."""
        mm = {
            "mm_vision_tower": f"./vit/{self.vision_tower_name}",
            "mm_projector_type": self.projector_type,
            "mm_hidden_size": self.vision_hidden_size,
            "mm_vision_select_layer": self.select_layer,
            "mm_vision_select_feature": self.select_feature,
            "image_aspect_ratio": self.image_aspect_ratio,
        }
        defaults = {"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava"}
        out = {**defaults, **self.extra, **self.llm, **mm}
        return dict(sorted(out.items()))

    @classmethod
    def from_published(cls, config_json: dict, vit_config_json: dict) -> YiVLConfig:
        """Build from the parsed ``config.json`` and ``vit/<name>/config.json``; YivlError on bad content."""
        _missing(config_json, REQUIRED_MM_KEYS, "config.json")
        _missing(config_json, REQUIRED_LLM_KEYS, "config.json")
        _missing(vit_config_json, REQUIRED_VIT_KEYS, "the vision tower's config.json")
        for key in ("mm_use_im_start_end", "mm_use_im_patch_token"):
            if config_json.get(key):
                raise YivlError(
                    f"config.json sets {key}: true, which Yi-VL does not support; set it to false"
                )
        if config_json["mm_hidden_size"] != vit_config_json["hidden_size"]:
            raise YivlError(
                f"config.json mm_hidden_size {config_json['mm_hidden_size']} differs from the vision tower's "
                f"hidden_size {vit_config_json['hidden_size']}; fix mm_hidden_size"
            )
        mm_keys = (*REQUIRED_MM_KEYS, "image_aspect_ratio")
        vision = {k: v for k, v in vit_config_json.items() if k not in ("architectures", "model_type")}
        name = str(config_json["mm_vision_tower"]).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        return cls(
            llm={k: config_json[k] for k in LLM_KEYS if k in config_json},
            vision=vision,
            projector_type=config_json["mm_projector_type"],
            select_layer=int(config_json["mm_vision_select_layer"]),
            select_feature=config_json["mm_vision_select_feature"],
            image_aspect_ratio=config_json.get("image_aspect_ratio", "pad"),
            vision_tower_name=name,
            extra={k: v for k, v in config_json.items() if k not in LLM_KEYS and k not in mm_keys},
        )
