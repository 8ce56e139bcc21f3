"""YiVL: CLIP vision tower + projector + Llama LLM, with image splicing and a token-mean loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaForCausalLM

from yivl.models.config import YiVLConfig
from yivl.models.loss import supervised_loss
from yivl.models.packing import packed_attention
from yivl.models.projector import build_projector
from yivl.models.splice import Spliced, check_image_count, splice
from yivl.models.vision import VisionTower


@dataclass
class YiVLOutput:
    """``loss``: mean CE over supervised tokens (None without labels). ``logits``: [B, L, V] without labels
    or with ``full_logits``, else [num_tokens, V] at the supervised positions only (row-major order), or
    None under a chunked loss. ``num_tokens``: 0-dim long tensor, the number of supervised (shifted,
    non -100) labels. ``loss_sum``: the summed CE (what training normalizes over the whole step)."""

    loss: torch.Tensor | None
    logits: torch.Tensor | None
    num_tokens: torch.Tensor
    loss_sum: torch.Tensor | None = None


def _dtype_of(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """dtype of the module's first parameter (``default`` for parameter-free modules)."""
    return next((p.dtype for p in module.parameters()), default)


class YiVL(nn.Module):
    """The Yi-VL model. State-dict prefixes: ``llm.`` (LlamaForCausalLM), ``vision_tower.clip.``
    (CLIPVisionModel), ``mm_projector.`` (the projector ``Sequential``)."""

    def __init__(self, config: YiVLConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        self.llm = LlamaForCausalLM(config.llama_config(attn_implementation))
        self.vision_tower = VisionTower(config, attn_implementation)
        self.mm_projector = build_projector(
            config.projector_type, config.vision_hidden_size, config.llm_hidden_size
        )

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels [N, 3, S, S] -> projected features [N, P, H] in the LLM embeddings' dtype."""
        features = self.vision_tower(pixel_values)
        embed_dtype = self.llm.get_input_embeddings().weight.dtype
        features = self.mm_projector(features.to(_dtype_of(self.mm_projector, embed_dtype)))
        return features.to(embed_dtype)

    def splice(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        padding_side: str = "right",
        blank_image: bool = False,
    ) -> Spliced:
        """Token ids [B, T] (-200 = image, pads where mask is 0) + images [N, 3, S, S] in order of their
        -200 ids -> LLM inputs [B, L, ...] (see ``Spliced``). Text-only samples need no image.

        ``blank_image``: a batch without images still runs one blank image through the tower and the
        projector and adds 0 x its features to the embeddings, so its graph reaches the tower and the
        projector in the same place and order as an image batch's (DDP needs every trainable parameter
        reached; sharded engines reduce gradients in that order); the values and gradients are
        unchanged (exactly 0 is added)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        num_images = 0 if pixel_values is None else pixel_values.shape[0]
        check_image_count(input_ids, attention_mask, num_images)
        features = self.encode_images(pixel_values) if num_images else None
        touch = None
        if blank_image and pixel_values is not None and not num_images:
            # before the embeddings, as an image batch runs them (ZeRO-3 gathers in that order)
            blank = pixel_values.new_zeros((1, *pixel_values.shape[1:]))  # the batch's [0, 3, S, S]
            touch = self.encode_images(blank).sum() * 0.0
        embed = self.llm.get_input_embeddings()
        spliced = splice(embed, input_ids, attention_mask, features, labels, padding_side)
        if touch is not None:
            spliced.inputs_embeds = spliced.inputs_embeds + touch
        return spliced

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        padding_side: str = "right",
        full_logits: bool = False,
        sequence_ids: torch.Tensor | None = None,
        loss_chunk_size: int = 0,
        blank_image: bool = False,
    ) -> YiVLOutput:
        """Logits and loss for a batch; ``labels`` [B, T] are aligned with ``input_ids`` (-100 = ignore).

        With labels (and not ``full_logits``) the LM head runs only where a label is supervised, which
        saves the [B, L, V] logits tensor (about 1 GB at B=8, L=2k, V=64k in bf16). ``sequence_ids``
        [B, T] marks a packed batch: the sample each token belongs to in its row (see models/packing.py);
        ``loss_chunk_size`` > 0 runs the head and the loss on that many supervised positions at a time
        (``yivl.models.loss``). ``blank_image``: see :meth:`splice`.
        """
        sp = self.splice(input_ids, attention_mask, labels, pixel_values, padding_side, blank_image)
        llm_inputs = {
            "inputs_embeds": sp.inputs_embeds,
            "attention_mask": sp.attention_mask,
            "position_ids": sp.position_ids,
        }
        if sequence_ids is not None:
            implementation, rows = self.llm.config._attn_implementation, self.config.num_image_tokens
            llm_inputs |= packed_attention(
                input_ids,
                attention_mask,
                sequence_ids,
                rows,
                implementation,
                sp.inputs_embeds.dtype,
                padding_side,
            )
        if sp.labels is None:
            logits = self.llm(**llm_inputs, use_cache=False).logits
            return YiVLOutput(None, logits, torch.zeros((), dtype=torch.long, device=logits.device))
        loss_sum, logits, num_tokens = supervised_loss(
            self.llm, llm_inputs, sp.labels, full_logits, loss_chunk_size
        )
        return YiVLOutput(loss_sum / num_tokens.clamp(min=1), logits, num_tokens, loss_sum)


def module_groups(model: YiVL) -> dict[str, nn.Module]:
    """The three parts the training stages freeze or train: vision_tower, mm_projector, llm."""
    return {"vision_tower": model.vision_tower, "mm_projector": model.mm_projector, "llm": model.llm}
