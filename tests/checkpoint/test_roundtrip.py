"""Load -> save -> load, .bin vs safetensors, config.json values, vit path resolution, buffers, dtypes."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from tests.checkpoint.helpers import PROMPT, edit_config, pixels, prompt_logits, rewrite_main
from yivl.checkpoint.load import LoadedModel, load_pretrained
from yivl.checkpoint.save import save_pretrained
from yivl.checkpoint.tiny import build_tiny_checkpoint
from yivl.data.images import ImageProcessor
from yivl.models.yivl import YiVL


def assert_same_weights(a: YiVL, b: YiVL) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


def test_load_save_load_is_identical(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    image = pixels(tiny_loaded.config.image_size)
    saved = save_pretrained(tiny_loaded, tmp_path / "again")
    again = load_pretrained(saved, dtype=torch.float32)
    assert_same_weights(tiny_loaded.model, again.model)
    assert torch.equal(prompt_logits(tiny_loaded.model, image), prompt_logits(again.model, image))
    assert json.loads((saved / "config.json").read_text()) == json.loads(
        (tiny_loaded.path / "config.json").read_text()
    )


def test_saved_config_has_release_values(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    saved = save_pretrained(tiny_loaded, tmp_path / "out")
    config = json.loads((saved / "config.json").read_text())
    name = tiny_loaded.config.vision_tower_name
    assert config["mm_projector_type"] == "mlp2x_gelu_Norm"
    assert config["image_aspect_ratio"] == "pad"
    assert config["mm_vision_tower"] == f"./vit/{name}"
    assert config["mm_vision_select_layer"] == -2
    assert config["mm_vision_select_feature"] == "patch"
    assert config["mm_hidden_size"] == 64
    assert config["mm_use_im_start_end"] is False and config["mm_use_im_patch_token"] is False
    assert config["architectures"] == ["LlavaLlamaForCausalLM"] and config["torch_dtype"] == "float32"
    vit_dir = saved / "vit" / name
    vit_config = json.loads((vit_dir / "config.json").read_text())
    assert vit_config["architectures"] == ["CLIPVisionModel"] and vit_config["image_size"] == 112
    preprocessor = json.loads((vit_dir / "preprocessor_config.json").read_text())
    assert preprocessor["size"] in (112, {"shortest_edge": 112})
    assert (saved / "tokenizer.model").is_file() and (saved / "generation_config.json").is_file()


def test_index_and_shards(tiny_checkpoint: Path) -> None:
    index = json.loads((tiny_checkpoint / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in tiny_checkpoint.glob("model-*.safetensors"))
    assert len(shards) > 1 and sorted(set(index["weight_map"].values())) == shards
    assert {k for k in index["weight_map"] if k.startswith("model.mm_projector.")} == {
        f"model.mm_projector.{i}.{p}" for i in (0, 1, 3, 4) for p in ("weight", "bias")
    }
    assert "lm_head.weight" in index["weight_map"] and "model.embed_tokens.weight" in index["weight_map"]
    sizes = sum(p.stat().st_size for p in tiny_checkpoint.glob("model-*.safetensors"))
    assert index["metadata"]["total_size"] <= sizes < index["metadata"]["total_size"] + 64 * 1024


@pytest.mark.parametrize("single_file", [False, True])
def test_bin_and_safetensors_load_the_same(
    tiny_loaded: LoadedModel, tiny_bin_checkpoint: Path, tmp_path: Path, single_file: bool
) -> None:
    source = tiny_bin_checkpoint
    if single_file:
        source = build_tiny_checkpoint(tmp_path / "bin1", weight_format="bin", max_shard_bytes=1 << 40)
        assert (source / "pytorch_model.bin").is_file()
    else:
        assert (source / "pytorch_model.bin.index.json").is_file()
    name = tiny_loaded.config.vision_tower_name
    assert (source / "vit" / name / "pytorch_model.bin").is_file()
    from_bin = load_pretrained(source, dtype=torch.float32)
    assert_same_weights(tiny_loaded.model, from_bin.model)
    single = save_pretrained(from_bin, tmp_path / "st1", max_shard_bytes=1 << 40)
    assert (single / "model.safetensors").is_file() and not (single / "model.safetensors.index.json").exists()
    assert_same_weights(tiny_loaded.model, load_pretrained(single, dtype=torch.float32).model)


def test_release_vit_copy_in_main_shards_is_ignored(
    tiny_copy: Path, tiny_loaded: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    tower = tiny_loaded.model.vision_tower.clip.state_dict()

    def add_decoy(tensors: dict[str, torch.Tensor]) -> None:
        for key, value in tower.items():
            tensors[f"model.vision_tower.vision_tower.vision_model.{key}"] = torch.zeros_like(value)

    rewrite_main(tiny_copy, add_decoy)
    with caplog.at_level(logging.DEBUG, logger="yivl.checkpoint.load"):
        loaded = load_pretrained(tiny_copy, dtype=torch.float32)
    assert_same_weights(tiny_loaded.model, loaded.model)
    assert f"ignoring {len(tower)} stored tensors" in caplog.text


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_loaded_weights_do_not_alias_the_files(tmp_path: Path, tiny_loaded: LoadedModel, fmt: str) -> None:
    source = build_tiny_checkpoint(tmp_path / fmt, weight_format=fmt)
    loaded = load_pretrained(source, dtype=torch.float32)
    weight_files = [p for p in source.rglob("*") if p.suffix in (".safetensors", ".bin")]
    for path in weight_files:  # zero the files in place: a memory-mapped parameter would change
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.write(bytes(size))
    assert_same_weights(tiny_loaded.model, loaded.model)


def test_absolute_foreign_vit_path_loads(tiny_copy: Path, tiny_loaded: LoadedModel) -> None:
    name = tiny_loaded.config.vision_tower_name
    edit_config(tiny_copy, mm_vision_tower=f"/home/someone/else/checkpoints/vit/{name}")
    assert_same_weights(tiny_loaded.model, load_pretrained(tiny_copy, dtype=torch.float32).model)


def test_absolute_vit_path_outside_model_dir(
    tiny_copy: Path, tmp_path: Path, tiny_loaded: LoadedModel
) -> None:
    name = tiny_loaded.config.vision_tower_name
    elsewhere = tmp_path / "towers" / name
    shutil.move(tiny_copy / "vit" / name, elsewhere)
    edit_config(tiny_copy, mm_vision_tower=str(elsewhere))
    assert_same_weights(tiny_loaded.model, load_pretrained(tiny_copy, dtype=torch.float32).model)


def test_relative_vit_path_ignores_working_directory(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_pretrained(tiny_checkpoint).path == tiny_checkpoint.resolve()


def test_buffers_valid_and_params_real(tiny_loaded: LoadedModel) -> None:
    torch.manual_seed(1)
    fresh = YiVL(tiny_loaded.config)
    ours = dict(tiny_loaded.model.named_buffers())
    for name, buffer in fresh.named_buffers():
        assert torch.equal(ours[name], buffer), name
    for name, param in tiny_loaded.model.named_parameters():
        assert param.device.type == "cpu" and param.requires_grad, name
    assert not tiny_loaded.model.training


def test_dtype_default_is_the_checkpoints(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    tiny_loaded.model.to(torch.bfloat16)
    saved = save_pretrained(tiny_loaded, tmp_path / "bf16")
    assert json.loads((saved / "config.json").read_text())["torch_dtype"] == "bfloat16"
    loaded = load_pretrained(saved)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert loaded.model.llm.model.rotary_emb.inv_freq.dtype == torch.float32
    assert_same_weights(tiny_loaded.model, loaded.model)
    as_fp32 = load_pretrained(saved, dtype=torch.float32)
    assert {p.dtype for p in as_fp32.model.parameters()} == {torch.float32}


def test_overwrite(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    out = save_pretrained(tiny_loaded, tmp_path / "out", max_shard_bytes=1 << 19)
    before = sorted(p.name for p in out.glob("model-*.safetensors"))
    save_pretrained(tiny_loaded, out, overwrite=True, max_shard_bytes=1 << 40)
    assert before and not list(out.glob("model-*.safetensors"))
    assert_same_weights(tiny_loaded.model, load_pretrained(out, dtype=torch.float32).model)


def test_tiny_build_is_deterministic(tiny_checkpoint: Path, tmp_path: Path) -> None:
    again = build_tiny_checkpoint(tmp_path / "again", seed=0)
    files = sorted(p.relative_to(tiny_checkpoint) for p in tiny_checkpoint.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (tiny_checkpoint / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = build_tiny_checkpoint(tmp_path / "other", seed=1)
    first = sorted(again.glob("model-*.safetensors"))[0].name
    assert (other / first).read_bytes() != (again / first).read_bytes()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_onto_gpu_matches_cpu(tiny_checkpoint: Path, tiny_loaded: LoadedModel) -> None:
    on_gpu = load_pretrained(tiny_checkpoint, dtype=torch.float32, device="cuda")
    assert {t.device.type for t in [*on_gpu.model.parameters(), *on_gpu.model.buffers()]} == {"cuda"}
    image = pixels(tiny_loaded.config.image_size)
    ids = torch.tensor([PROMPT], device="cuda")
    with torch.no_grad():
        logits = on_gpu.model(ids, torch.ones_like(ids), pixel_values=image.cuda()).logits
    torch.testing.assert_close(logits.cpu(), prompt_logits(tiny_loaded.model, image), atol=1e-4, rtol=1e-4)


def test_preprocessor_follows_tower_resolution(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    stale = ImageProcessor(size=448)  # e.g. the processor of an earlier stage at another resolution
    saved = save_pretrained(tiny_loaded.model, tmp_path / "out", tiny_loaded.tokenizer, stale)
    assert load_pretrained(saved).image_processor.size == tiny_loaded.config.image_size == 112
