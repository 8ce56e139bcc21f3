"""Plain peft adapters load and merge: the logits of peft's own PeftModel; every bad case is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from tests.checkpoint.helpers import PROMPT, pixels, prompt_logits, train_py_hparams
from tests.checkpoint.peft_adapters import (
    base_llm,
    edit_adapter_config,
    llm_logits,
    make_llava_adapter,
    make_llm_adapter,
    peft_logits,
    perturb,
)
from yivl.checkpoint import export
from yivl.checkpoint.load import load_pretrained
from yivl.checkpoint.peft_adapter import load_model
from yivl.errors import YivlError
from yivl.evaluation.checkpoints import checkpoint_kind

HUB_ID = "01-ai/Yi-VL-6B"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "lora",
    [
        {},  # short target names, adapter_model.safetensors
        {  # full regex, rsLoRA, a per-module alpha, the embedding too, adapter_model.bin
            "target_modules": r"model\.layers\.\d+\.(self_attn\.(k|o)_proj|mlp\.down_proj)|.*embed_tokens",
            "use_rslora": True,
            "alpha_pattern": {"down_proj": 3},
            "safe_serialization": False,
        },
    ],
    ids=["short-names-safetensors", "regex-rslora-embedding-bin"],
)
def test_merged_adapter_gives_peft_logits(tiny_checkpoint: Path, tmp_path: Path, lora: dict) -> None:
    adapter = make_llm_adapter(tiny_checkpoint, tmp_path / "adapter", **lora)
    weights = "adapter_model.bin" if lora.get("safe_serialization") is False else "adapter_model.safetensors"
    assert (adapter / weights).is_file()
    want = peft_logits(tiny_checkpoint, adapter)
    got = llm_logits(load_model(adapter, dtype=torch.float32).model.llm)  # base from base_model_name_or_path
    diff = (got - want).abs().max().item()
    print(f"max |logits(peft) - logits(merged)| = {diff:.3g}")
    assert diff < 1e-5
    assert (llm_logits(base_llm(tiny_checkpoint)) - want).abs().max() > 1e-2  # the adapter is not a no-op


@pytest.mark.parametrize("non_lora_file", [False, True], ids=["modules_to_save", "non_lora_trainables"])
def test_llava_style_adapter_brings_its_projector(
    tiny_checkpoint: Path, tmp_path: Path, non_lora_file: bool
) -> None:
    adapter, projector = make_llava_adapter(tiny_checkpoint, tmp_path / "llava-lora", non_lora_file)
    assert (adapter / "config.json").is_file() == non_lora_file  # LLaVA's LoRA folders hold one
    model = load_model(adapter, dtype=torch.float32).model
    assert (llm_logits(model.llm) - peft_logits(tiny_checkpoint, adapter)).abs().max() < 1e-5
    state = model.state_dict()
    assert all(torch.equal(state[name], value) for name, value in projector.items())
    base = load_pretrained(tiny_checkpoint, dtype=torch.float32).model.state_dict()
    assert not torch.equal(base["mm_projector.0.weight"], state["mm_projector.0.weight"])


def test_an_adapter_over_the_whole_yivl_model_merges_tower_projector_and_llm(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Short names over the whole model also hit CLIP's q/v_proj (LLaVA's leaf-name matching): merged too."""
    model = load_pretrained(tiny_checkpoint, dtype=torch.float32).model
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["mm_projector"]
    )
    peft_model = get_peft_model(model, config)
    perturb(peft_model)
    peft_model.save_pretrained(str(tmp_path / "yivl-lora"))
    keys = load_file(tmp_path / "yivl-lora" / "adapter_model.safetensors")
    assert any(k.startswith("base_model.model.vision_tower.clip.encoder.") for k in keys)
    reference = PeftModel.from_pretrained(
        load_pretrained(tiny_checkpoint, dtype=torch.float32).model, str(tmp_path / "yivl-lora")
    ).eval()
    image = pixels(model.config.image_size)
    with torch.no_grad():
        want = reference(torch.tensor([PROMPT]), torch.ones(1, len(PROMPT)), pixel_values=image).logits
    got = prompt_logits(load_model(tmp_path / "yivl-lora", tiny_checkpoint, torch.float32).model, image)
    diff = (got - want).abs().max().item()
    print(f"max |logits(peft YiVL) - logits(merged)| = {diff:.3g}")
    assert diff < 1e-5
    assert (
        prompt_logits(load_pretrained(tiny_checkpoint, dtype=torch.float32).model, image) - want
    ).abs().max() > 1e-2


def test_export_writes_the_merged_published_layout(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    adapter = make_llm_adapter(tiny_checkpoint, tmp_path / "adapter")
    capsys.readouterr()
    assert export.main([str(adapter), str(tmp_path / "merged")]) == 0
    assert capsys.readouterr().out.strip() == f"exported to {tmp_path / 'merged'}"
    merged = load_pretrained(tmp_path / "merged", dtype=torch.float32).model
    assert (llm_logits(merged.llm) - peft_logits(tiny_checkpoint, adapter)).abs().max() < 1e-5
    loaded = load_model(adapter, dtype=torch.float32).model
    assert all(torch.equal(v, merged.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_base_model_option_overrides_a_hub_id(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    adapter = make_llm_adapter(tiny_checkpoint, tmp_path / "adapter")
    edit_adapter_config(adapter, lambda c: c.update(base_model_name_or_path=HUB_ID))
    assert export.main([str(adapter), str(tmp_path / "out"), "--base-model", str(tiny_checkpoint)]) == 0
    assert (tmp_path / "out" / "config.json").is_file()
    capsys.readouterr()
    assert export.main([str(adapter), str(tmp_path / "out2")]) == 2
    assert capsys.readouterr().err == (
        f"error: adapter {adapter} names base model '{HUB_ID}', which is not a local folder (nothing is "
        "downloaded); pass --model-base DIR with the downloaded Yi-VL model\n"
    )
    assert not (tmp_path / "out2").exists()


def test_the_export_command_prints_one_line_and_no_traceback(tiny_checkpoint: Path, tmp_path: Path) -> None:
    adapter = make_llm_adapter(tiny_checkpoint, tmp_path / "adapter")
    edit_adapter_config(adapter, lambda c: c.update(base_model_name_or_path=HUB_ID))
    command = [sys.executable, "-m", "yivl.checkpoint.export", str(adapter), str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: adapter {adapter} names base model '{HUB_ID}'")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def one_line_error(adapter: Path, base_model: Path | None = None) -> str:
    with pytest.raises(YivlError) as caught:
        load_model(adapter, base_model, dtype=torch.float32)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_base_model_that_is_missing_or_not_yi_vl_is_one_line(tiny_checkpoint: Path, tmp_path: Path) -> None:
    adapter = make_llm_adapter(tiny_checkpoint, tmp_path / "adapter")
    edit_adapter_config(adapter, lambda c: c.update(base_model_name_or_path=None))
    assert one_line_error(adapter) == (
        f"adapter {adapter} records no base model; pass model.base=DIR (a Yi-VL model folder)"
    )
    edit_adapter_config(adapter, lambda c: c.update(base_model_name_or_path="/data/old-machine/Yi-VL-6B"))
    assert one_line_error(adapter) == (
        f"adapter {adapter} names base model folder '/data/old-machine/Yi-VL-6B', which does not exist here; "
        "pass model.base=DIR with the Yi-VL model it was trained on"
    )
    assert one_line_error(adapter, tmp_path / "gone").startswith(
        f"model directory not found: {tmp_path / 'gone'}"
    )
    llm_only = tmp_path / "llm-only"
    LlamaConfig(hidden_size=128).save_pretrained(llm_only)  # a plain Llama folder: no mm_* keys
    assert one_line_error(adapter, llm_only) == (
        f"base model {llm_only} of adapter {adapter} is not a Yi-VL model (no mm_vision_tower in "
        "config.json); pass model.base=DIR with the Yi-VL model folder the LLM came from"
    )


def test_an_adapter_of_another_model_names_unmatched_keys(tiny_checkpoint: Path, tmp_path: Path) -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64))
    model = get_peft_model(gpt2, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    perturb(model)
    model.save_pretrained(str(tmp_path / "gpt2-lora"))
    message = one_line_error(tmp_path / "gpt2-lora", tiny_checkpoint)
    assert message == (
        f"adapter {tmp_path / 'gpt2-lora'}: 4 tensor(s) match no module of the Yi-VL model: "
        "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight, "
        "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight, "
        "base_model.model.transformer.h.1.attn.c_attn.lora_A.weight and 1 more; "
        "it was trained on another model (or a LoRA variant we cannot merge)"
    )


def test_an_adapter_of_another_size_names_the_layer(tiny_checkpoint: Path, tmp_path: Path) -> None:
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=1024)
    small = LlamaForCausalLM(config)
    model = get_peft_model(small, LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(str(tmp_path / "small-lora"))
    message = one_line_error(tmp_path / "small-lora", tiny_checkpoint)
    assert message.startswith(
        f"adapter {tmp_path / 'small-lora'}: the LoRA of model.layers.0.self_attn.q_proj "
    )
    assert message.endswith(
        "does not fit the base weight [128, 128]; pass the base model the adapter was trained on"
    )


def test_renamed_keys_are_never_silently_ignored(tiny_checkpoint: Path, tmp_path: Path) -> None:
    adapter = make_llm_adapter(tiny_checkpoint, tmp_path / "adapter")
    tensors = load_file(adapter / "adapter_model.safetensors")
    tensors["base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight"] = torch.zeros(4, 128)
    save_file(tensors, adapter / "adapter_model.safetensors")
    assert "1 tensor(s) match no module of the Yi-VL model: " in one_line_error(adapter)
    assert "layers.0.self_attn.qkv_proj.lora_A.weight;" in one_line_error(adapter)


def test_lora_variants_that_merge_differently_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    adapter = make_llm_adapter(tiny_checkpoint, tmp_path / "dora", use_dora=True)
    assert one_line_error(adapter) == (
        f"{adapter / 'adapter_config.json'} uses use_dora; only plain LoRA (and rsLoRA) adapters can be "
        "merged: merge this one with peft's merge_and_unload instead"
    )
    edit_adapter_config(adapter, lambda c: c.update(peft_type="IA3"))
    assert "only LoRA adapters (peft_type LORA)" in one_line_error(adapter)


def test_a_named_adapter_saved_in_a_subfolder_is_pointed_at(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    model = get_peft_model(
        base_llm(tiny_checkpoint), LoraConfig(r=2, target_modules=["q_proj"]), adapter_name="vqa"
    )
    model.save_pretrained(str(tmp_path / "named"))  # peft writes named/vqa/adapter_config.json
    want = (
        f"{tmp_path / 'named'} holds peft adapters in subfolders (vqa), as peft saves a named adapter; "
        f"point at one of them, e.g. {tmp_path / 'named' / 'vqa'}"
    )
    assert one_line_error(tmp_path / "named") == want
    with pytest.raises(YivlError, match="holds peft adapters in subfolders"):
        checkpoint_kind(tmp_path / "named")
    capsys.readouterr()
    assert export.main([str(tmp_path / "named"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {want}\n"
    assert load_model(tmp_path / "named" / "vqa", dtype=torch.float32).model is not None


def test_a_folder_that_is_no_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert export.main([str(tmp_path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path} is neither a DeepSpeed checkpoint") and err.count("\n") == 1


def test_a_deepspeed_folder_is_still_converted(tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    """A folder with ``latest`` + ``checkpoint/`` goes through the (pickle-free) ZeRO reader, as before."""
    import yivl.checkpoint.deepspeed_zero as zero

    folder = tmp_path / "last.ckpt"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "latest").write_text("checkpoint")
    plan = train_py_hparams(
        tiny_checkpoint, stage="3", train={"vision_tower": False, "projector": True, "llm": "full"}
    )
    projector = load_pretrained(tiny_checkpoint).model.mm_projector.state_dict()
    trained = {f"model.mm_projector.{k}": v + 1 for k, v in projector.items()}
    calls = []

    def read(src: Path) -> dict:  # stands in for gathering ZeRO shards
        calls.append(str(src))
        return {"hyper_parameters": plan, "state_dict": trained}

    monkeypatch.setattr(zero, "read_zero_checkpoint", read)
    assert export.main([str(folder), str(tmp_path / "out"), "--dtype", "float32"]) == 0
    assert calls == [str(folder)]
    merged = load_pretrained(tmp_path / "out").model.mm_projector.state_dict()
    assert all(torch.equal(merged[k], v + 1) for k, v in projector.items())
    assert (
        json.loads((tmp_path / "out" / "config.json").read_text())["mm_projector_type"] == "mlp2x_gelu_Norm"
    )
