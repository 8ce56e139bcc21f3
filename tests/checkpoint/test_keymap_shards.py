"""Key names between our model and the release; shard planning, writing and streaming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from yivl.checkpoint.keymap import our_name, published_name
from yivl.checkpoint.layout import resolve_vit_dir, vision_tower_name
from yivl.checkpoint.shards import find_weights, iter_tensors
from yivl.checkpoint.writer import plan_shards, spec_of, write_weights
from yivl.models.yivl import YiVL


@pytest.mark.parametrize(
    ("ours", "location", "published"),
    [
        ("llm.model.layers.3.self_attn.q_proj.weight", "main", "model.layers.3.self_attn.q_proj.weight"),
        ("llm.model.embed_tokens.weight", "main", "model.embed_tokens.weight"),
        ("llm.lm_head.weight", "main", "lm_head.weight"),
        ("mm_projector.3.bias", "main", "model.mm_projector.3.bias"),
        ("vision_tower.clip.pre_layrnorm.weight", "vit", "vision_model.pre_layrnorm.weight"),
    ],
)
def test_names_round_trip(ours: str, location: str, published: str) -> None:
    assert published_name(ours) == (location, published)
    assert our_name(location, published) == ours


def test_every_model_key_has_a_published_name(tiny_loaded) -> None:
    model: YiVL = tiny_loaded.model
    for name in model.state_dict():
        location, key = published_name(name)
        assert our_name(location, key) == name


def test_skipped_keys() -> None:
    assert (
        our_name("main", "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight")
        is None
    )
    assert our_name("main", "model.layers.0.self_attn.rotary_emb.inv_freq") is None
    assert our_name("vit", "vision_model.embeddings.position_ids") is None
    # transformers 5 writes CLIPVisionModel keys without the vision_model. prefix
    assert our_name("vit", "embeddings.class_embedding") == "vision_tower.clip.embeddings.class_embedding"


def test_plan_shards_bounds_bytes() -> None:
    specs = [(key, (n,), torch.uint8) for key, n in [("a", 40), ("b", 40), ("c", 30), ("d", 200), ("e", 10)]]

    def keys(shards: list) -> list[list[str]]:
        return [[spec[0] for spec in shard] for shard in shards]

    assert keys(plan_shards(specs, 100)) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert keys(plan_shards(specs, 10**9)) == [["a", "b", "c", "d", "e"]]


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_write_then_stream(tmp_path: Path, fmt: str) -> None:
    tensors = {f"t{i}": torch.randn(i + 1, 8).to(torch.bfloat16) for i in range(6)}
    tensors |= {"scalar": torch.tensor(3.5), "ids": torch.arange(5), "mask": torch.tensor([True, False])}
    specs = [spec_of(k, t) for k, t in tensors.items()]
    files = write_weights(specs, tensors.__getitem__, tmp_path, fmt, max_shard_bytes=64)
    assert len(files) > 2
    index = json.loads(next(tmp_path.glob("*.index.json")).read_text())
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    weights = find_weights(tmp_path, "test folder")
    assert weights.format == fmt and weights.nbytes == index["metadata"]["total_size"]
    streamed = dict(iter_tensors(weights, list(reversed(tensors)), reopen_bytes=32))
    assert streamed.keys() == tensors.keys()
    for key, value in tensors.items():
        assert streamed[key].dtype == value.dtype and torch.equal(streamed[key], value), key


def test_vit_dir_resolution(tmp_path: Path) -> None:
    local = tmp_path / "vit" / "tower"
    local.mkdir(parents=True)
    assert resolve_vit_dir(tmp_path, "./vit/tower") == local.resolve()
    assert resolve_vit_dir(tmp_path, "vit/tower/") == local.resolve()
    assert resolve_vit_dir(tmp_path, "/data/other-machine/vit/tower") == local.resolve()
    assert resolve_vit_dir(tmp_path, "C:\\models\\vit\\tower") == local.resolve()
    assert vision_tower_name("C:\\models\\vit\\tower") == "tower"
