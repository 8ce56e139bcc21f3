"""Peak GPU memory of the stage-3, LoRA and QLoRA configurations at the 6B (or 34B) shapes.

The figures are ESTIMATES (no GPU was available to measure them) from parameter, gradient and
optimizer-state bytes plus an activation term. Parameter counts are exact: the model is built on the meta
device and each configuration's freezing and LoRA plan counted on it. To measure on a GPU, train with the
configuration and read ``torch.cuda.max_memory_allocated()``.

Estimate, per GPU, with ``b`` = per-device batch and ``T`` tokens per sample (1024 image features + text):

- weights: trainable fp32 (4 B, the master copy under bf16 autocast), frozen bf16 (2 B), 4-bit NF4 with
  double quantization 0.5 B + 0.127 bit of scales per weight;
- gradients: 4 B per trainable weight; AdamW: 8 B per trainable weight (ZeRO-3 divides all three by N);
- activations with gradient checkpointing: each LLM/ViT layer's input kept (2 B x b x T x H), plus one
  layer recomputed in full (about 34 x b x T x H bytes) and the supervised-token logits.

    python bench/train_memory.py [--preset yi_vl_6b] [--batch 1] [--text-tokens 1024] [--gpus 8] [--markdown]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from tables import print_table

from yivl.models.empty_init import empty_init
from yivl.models.lora import llm_linear_names
from yivl.models.presets import PRESETS, preset
from yivl.models.yivl import YiVL
from yivl.training.build import unused_vision_prefixes

GiB = 2**30
NF4_BYTES = 0.5 + 0.127 / 8  # 4 bits per weight + double-quantized absmax scales


@dataclass
class Counts:
    """Parameter counts by role for one configuration."""

    trainable: int
    frozen_bf16: int
    frozen_4bit: int


def part_sizes(model: YiVL) -> dict[str, int]:
    """Parameter counts: llm_linear (LoRA/4-bit targets), llm_other, vision, vision_unused, projector."""
    linear = {f"llm.{n}.weight" for n in llm_linear_names(model.llm)}
    unused = tuple(unused_vision_prefixes(model))
    sizes = dict.fromkeys(("llm_linear", "llm_other", "vision", "vision_unused", "projector"), 0)
    for name, param in model.named_parameters():
        if name in linear:
            key = "llm_linear"
        elif name.startswith("llm."):
            key = "llm_other"
        elif name.startswith(unused):
            key = "vision_unused"
        else:
            key = "vision" if name.startswith("vision_tower.") else "projector"
        sizes[key] += param.numel()
    return sizes


def lora_size(model: YiVL, rank: int) -> int:
    """Weights of LoRA A and B on every decoder linear layer: r x (in + out) each."""
    total = 0
    for name in llm_linear_names(model.llm):
        layer = model.llm.get_submodule(name)
        total += rank * (layer.in_features + layer.out_features)
    return total


def configurations(model: YiVL) -> dict[str, Counts]:
    s = part_sizes(model)
    frozen_vit = s["vision"] + s["vision_unused"]
    return {
        "stage3 (full)": Counts(
            s["llm_linear"] + s["llm_other"] + s["vision"] + s["projector"], s["vision_unused"], 0
        ),
        "lora (r=128)": Counts(
            lora_size(model, 128) + s["projector"], s["llm_linear"] + s["llm_other"] + frozen_vit, 0
        ),
        "qlora (r=64)": Counts(
            lora_size(model, 64) + s["projector"], s["llm_other"] + frozen_vit, s["llm_linear"]
        ),
    }


def activation_bytes(model: YiVL, batch: int, text_tokens: int) -> float:
    """Checkpointed activations: layer inputs kept, one layer recomputed, logits of the answer tokens."""
    llm, vit = model.config.llm, model.config.vision
    tokens = batch * (model.config.num_image_tokens + text_tokens)
    patches = batch * (model.config.num_image_tokens + 1)
    kept = 2 * (
        tokens * llm["hidden_size"] * llm["num_hidden_layers"]
        + patches * vit["hidden_size"] * vit["num_hidden_layers"]
    )
    one_layer = 34 * max(tokens * llm["hidden_size"], patches * vit["hidden_size"])
    logits = 4 * batch * text_tokens * llm["vocab_size"] // 4  # roughly a quarter of the text is supervised
    return kept + one_layer + logits


def estimate(counts: Counts, activations: float, shards: int) -> dict[str, float]:
    weights = 4 * counts.trainable + 2 * counts.frozen_bf16 + NF4_BYTES * counts.frozen_4bit
    return {
        "weights": weights / shards / GiB,
        "grads": 4 * counts.trainable / shards / GiB,
        "adam": 8 * counts.trainable / shards / GiB,
        "activations": activations / GiB,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="yi_vl_6b", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=1, help="per-device batch")
    parser.add_argument("--text-tokens", type=int, default=1024)
    parser.add_argument("--gpus", type=int, default=8, help="N for the ZeRO-3 column")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    with empty_init():
        model = YiVL(preset(args.preset))
    activations = activation_bytes(model, args.batch, args.text_tokens)
    rows = []
    for name, counts in configurations(model).items():
        one = estimate(counts, activations, 1)
        zero3 = estimate(counts, activations, args.gpus)
        rows.append(
            (
                name,
                f"{counts.trainable / 1e6:,.1f}M",
                *(f"{one[k]:.1f}" for k in ("weights", "grads", "adam", "activations")),
                f"{sum(one.values()):.1f}",
                f"{sum(zero3.values()):.1f}",
            )
        )
    report(rows, args)


def report(rows: list[tuple], args: argparse.Namespace) -> None:
    columns = (
        "config",
        "trainable",
        "weights GiB",
        "grads GiB",
        "AdamW GiB",
        "activations GiB",
        "total, 1 GPU",
        f"total, ZeRO-3 x{args.gpus}",
    )
    title = (
        f"ESTIMATE (no GPU measured): {args.preset}, per-device batch {args.batch}, "
        f"{args.text_tokens} text tokens + image features, gradient checkpointing, bf16 autocast"
    )
    print_table(title, columns, rows, args.markdown)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
