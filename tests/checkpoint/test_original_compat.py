"""A saved directory loads, unchanged, the way the original VL code loads it, and gives our logits.

The original ``LlavaLlamaForCausalLM.from_pretrained(model_path)`` (with ``key_info["model_path"]`` set)
is a ``LlamaForCausalLM`` whose ``model.mm_projector`` is ``Sequential(Linear, LayerNorm, GELU, Linear,
LayerNorm)`` read from the same shards, plus a delay-loaded ``CLIPVisionModel.from_pretrained`` of
``os.path.join(model_path, mm_vision_tower.replace("./", ""))`` whose ``hidden_states[-2][:, 1:]`` are
the image features. This test rebuilds that without any of our loading code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from tests.checkpoint.helpers import PROMPT, pixels, prompt_logits
from yivl.checkpoint.load import LoadedModel
from yivl.checkpoint.save import save_pretrained
from yivl.constants import IMAGE_TOKEN_INDEX


class OriginalYiVL(nn.Module):
    """The original release's model, assembled from a model directory by transformers alone."""

    def __init__(self, model_dir: Path) -> None:
        super().__init__()
        config = json.loads((model_dir / "config.json").read_text())
        llama_keys = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
        self.llm = LlamaForCausalLM.from_pretrained(
            model_dir, config=LlamaConfig(**llama_keys), dtype=torch.float32
        )
        hidden, mm_hidden = config["hidden_size"], config["mm_hidden_size"]
        self.projector = nn.Sequential(
            nn.Linear(mm_hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
        )
        prefix = "model.mm_projector."
        state = {}
        for shard in model_dir.glob("model*.safetensors"):
            state |= {k[len(prefix) :]: v for k, v in load_file(shard).items() if k.startswith(prefix)}
        self.projector.load_state_dict(state, strict=True)
        vit_path = os.path.join(model_dir, config["mm_vision_tower"].replace("./", ""))
        self.tower = CLIPVisionModel.from_pretrained(vit_path, dtype=torch.float32)
        self.select_layer = config["mm_vision_select_layer"]

    @torch.no_grad()
    def logits(self, ids: list[int], image: torch.Tensor) -> torch.Tensor:
        """prepare_inputs_labels_for_multimodal + forward for one sample with one image: [1, L, V]."""
        features = self.tower(image, output_hidden_states=True).hidden_states[self.select_layer][:, 1:]
        image_embeds = self.projector(features)[0]
        pos = ids.index(IMAGE_TOKEN_INDEX)
        embed = self.llm.get_input_embeddings()
        before, after = torch.tensor(ids[:pos]), torch.tensor(ids[pos + 1 :])
        embeds = torch.cat([embed(before), image_embeds, embed(after)])[None]
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        return self.llm(inputs_embeds=embeds, attention_mask=mask).logits


def test_original_loader_gives_our_logits(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    saved = save_pretrained(tiny_loaded, tmp_path / "out", max_shard_bytes=1 << 20)
    assert (saved / "model.safetensors.index.json").is_file()
    original = OriginalYiVL(saved).eval()
    image = pixels(tiny_loaded.config.image_size)
    ours = prompt_logits(tiny_loaded.model, image)
    assert ours.shape[1] == len(PROMPT) - 1 + tiny_loaded.config.num_image_tokens
    torch.testing.assert_close(original.logits(PROMPT, image), ours, atol=1e-5, rtol=0)


def test_original_loader_sees_fine_tuned_tower(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    model = tiny_loaded.model
    before = {k: v.clone() for k, v in model.vision_tower.clip.state_dict().items()}
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in [*model.vision_tower.parameters(), *model.mm_projector.parameters()]:
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    saved = save_pretrained(tiny_loaded, tmp_path / "tuned")
    original = OriginalYiVL(saved).eval()
    for key, value in model.vision_tower.clip.state_dict().items():
        assert torch.equal(original.tower.state_dict()[key], value), key
        assert not torch.equal(before[key], value), key
    image = pixels(tiny_loaded.config.image_size, seed=1)
    torch.testing.assert_close(original.logits(PROMPT, image), prompt_logits(model, image), atol=1e-5, rtol=0)
