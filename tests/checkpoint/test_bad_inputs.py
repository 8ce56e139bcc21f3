"""Every bad checkpoint input gives a one-line YivlError that names the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.checkpoint.helpers import edit_config, rewrite_main
from yivl.checkpoint.load import LoadedModel, load_pretrained
from yivl.checkpoint.save import save_pretrained
from yivl.checkpoint.tiny import ensure_tiny_checkpoint
from yivl.checkpoint.tiny import main as build_tiny_main
from yivl.errors import YivlError

VIT = "vit/clip-vit-tiny-yi-vl-tiny-112"


def load_error(model_dir: Path) -> str:
    """The message of the YivlError that loading ``model_dir`` raises (asserted to be one line)."""
    with pytest.raises(YivlError) as info:
        load_pretrained(model_dir)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_missing_model_dir(tmp_path: Path) -> None:
    assert "model directory not found" in load_error(tmp_path / "nope")


def test_missing_config_json(tiny_copy: Path) -> None:
    (tiny_copy / "config.json").unlink()
    assert "no config.json" in load_error(tiny_copy)


def test_config_json_not_json(tiny_copy: Path) -> None:
    (tiny_copy / "config.json").write_text("{not json")
    assert "config.json is not valid JSON" in load_error(tiny_copy)


def test_config_without_mm_keys(tiny_copy: Path) -> None:
    keys = ["mm_vision_tower", "mm_projector_type", "mm_hidden_size", "mm_vision_select_layer"]
    edit_config(tiny_copy, **dict.fromkeys(keys))
    message = load_error(tiny_copy)
    assert "mm_vision_tower" in message and "mm_projector_type" in message


def test_config_without_projector_type(tiny_copy: Path) -> None:
    edit_config(tiny_copy, mm_projector_type=None)
    assert "mm_projector_type" in load_error(tiny_copy)


def test_unknown_projector_type(tiny_copy: Path) -> None:
    edit_config(tiny_copy, mm_projector_type="mlp2x_relu_Norm")
    assert "unknown mm_projector_type 'mlp2x_relu_Norm'" in load_error(tiny_copy)


def test_projector_type_that_does_not_match_weights(tiny_copy: Path) -> None:
    edit_config(tiny_copy, mm_projector_type="linear")
    message = load_error(tiny_copy)
    assert "model.mm_projector.weight" in message


def test_missing_vit_folder(tiny_copy: Path) -> None:
    shutil.rmtree(tiny_copy / "vit")
    message = load_error(tiny_copy)
    assert "vision tower folder not found" in message and "clip-vit-tiny-yi-vl-tiny-112" in message


def test_missing_main_weights(tiny_copy: Path) -> None:
    for path in [*tiny_copy.glob("model*.safetensors"), tiny_copy / "model.safetensors.index.json"]:
        path.unlink()
    assert "no weights in model directory" in load_error(tiny_copy)


def test_missing_vit_weights(tiny_copy: Path) -> None:
    (tiny_copy / VIT / "model.safetensors").unlink()
    assert "no weights in vision tower folder" in load_error(tiny_copy)


def test_missing_shard_named_in_index(tiny_copy: Path) -> None:
    shard = sorted(tiny_copy.glob("model-*.safetensors"))[-1]
    shard.unlink()
    assert shard.name in load_error(tiny_copy)


def test_missing_keys_are_named(tiny_copy: Path) -> None:
    rewrite_main(tiny_copy, lambda t: [t.pop("model.norm.weight"), t.pop("model.mm_projector.4.bias")])
    message = load_error(tiny_copy)
    assert "lack 2 tensor(s)" in message
    assert "model.norm.weight" in message and "model.mm_projector.4.bias" in message


def test_unexpected_keys_are_named(tiny_copy: Path) -> None:
    rewrite_main(tiny_copy, lambda t: t.update({"model.layers.9.mlp.up_proj.weight": torch.zeros(2)}))
    message = load_error(tiny_copy)
    assert "unexpected" in message and "model.layers.9.mlp.up_proj.weight" in message


def test_wrong_shape_is_named(tiny_copy: Path) -> None:
    rewrite_main(tiny_copy, lambda t: t.update({"model.norm.weight": torch.ones(7)}))
    message = load_error(tiny_copy)
    assert "model.norm.weight" in message and "[7]" in message and "[128]" in message


def test_truncated_safetensors_shard(tiny_copy: Path) -> None:
    shard = sorted(tiny_copy.glob("model-*.safetensors"))[0]
    truncate(shard)
    message = load_error(tiny_copy)
    assert shard.name in message and "truncated" in message


def test_truncated_bin_shard(tiny_bin_checkpoint: Path, tmp_path: Path) -> None:
    model_dir = Path(shutil.copytree(tiny_bin_checkpoint, tmp_path / "bin"))
    shard = sorted(model_dir.glob("pytorch_model-*.bin"))[0]
    truncate(shard)
    message = load_error(model_dir)
    assert shard.name in message and "truncated" in message


def test_truncated_vit_weights(tiny_copy: Path) -> None:
    truncate(tiny_copy / VIT / "model.safetensors")
    assert "model.safetensors" in load_error(tiny_copy)


def test_missing_tokenizer(tiny_copy: Path) -> None:
    (tiny_copy / "tokenizer.model").unlink()
    assert "tokenizer.model" in load_error(tiny_copy)


def test_save_refuses_non_empty_dir(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(YivlError, match="not empty"):
        save_pretrained(tiny_loaded, tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_build_tiny_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build_tiny_main([str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "config.json").is_file()
    assert build_tiny_main([str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_unavailable_device(tiny_checkpoint: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(YivlError, match="CUDA is not available"):
        load_pretrained(tiny_checkpoint, device="cuda")
    with pytest.raises(YivlError, match="unknown device"):
        load_pretrained(tiny_checkpoint, device="gpu0")


def test_ensure_tiny_checkpoint(tmp_path: Path) -> None:
    path = ensure_tiny_checkpoint(tmp_path / "models" / "tiny")
    config = path / "config.json"
    stamp = config.stat().st_mtime_ns
    assert ensure_tiny_checkpoint(path) == path and config.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny"]  # no temporary folder left
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(YivlError, match=r"holds no config\.json"):
        ensure_tiny_checkpoint(tmp_path / "other")
