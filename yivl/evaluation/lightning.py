"""The ``loss`` task as Lightning validation: token-weighted ``val/loss`` and ``val/ppl`` during train.py.

A LightningModule's default ``self.log("val/loss", out.loss)`` averages per-batch means weighted by
batch size, so the number moves with the validation batch size and padding. :class:`ValidationLoss`
accumulates ``(sum of token NLLs, token count)`` instead, summed across ranks, which is the same number
``evaluate.py`` reports for the ``loss`` task on the same data::

    # in the LightningModule
    def __init__(self, ...):
        self.val_loss = ValidationLoss()

    def validation_step(self, batch, batch_idx):
        out = self(batch)  # YiVLOutput: loss (token mean) and num_tokens
        self.val_loss.log(self, out.loss, out.num_tokens, batch_size=batch["input_ids"].shape[0])

The optional generation task of validation (``val/vqa/accuracy``...) is in
:mod:`yivl.evaluation.val_generation`.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import Metric


class TokenNLL(Metric):
    """Token-weighted mean negative log-likelihood over every batch (and rank) since the last reset."""

    full_state_update = False
    higher_is_better = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("nll_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, mean_loss: torch.Tensor, num_tokens: torch.Tensor) -> None:
        """``mean_loss``: a batch's mean token NLL (0-dim); ``num_tokens``: its supervised token count."""
        count = torch.as_tensor(num_tokens, device=self.tokens.device).long()
        self.nll_sum += mean_loss.detach().double().to(self.nll_sum.device) * count
        self.tokens += count

    def compute(self) -> torch.Tensor:
        return (self.nll_sum / self.tokens.clamp(min=1)).float()


class TokenPerplexity(TokenNLL):
    """``exp`` of :class:`TokenNLL`."""

    def compute(self) -> torch.Tensor:
        return torch.exp(super().compute())


class ValidationLoss(nn.Module):
    """``val/loss`` (token-weighted NLL) and ``val/ppl`` for a LightningModule's validation loop."""

    def __init__(self, prefix: str = "val") -> None:
        super().__init__()
        self.prefix = prefix
        self.nll = TokenNLL()
        self.ppl = TokenPerplexity()

    def log(
        self, module: LightningModule, mean_loss: torch.Tensor, num_tokens: torch.Tensor, batch_size: int
    ) -> None:
        """Accumulate one batch and log both metrics (Lightning computes and resets them per epoch)."""
        self.nll.update(mean_loss, num_tokens)
        self.ppl.update(mean_loss, num_tokens)
        common = {"on_step": False, "on_epoch": True, "batch_size": batch_size}
        module.log(f"{self.prefix}/loss", self.nll, prog_bar=True, **common)
        module.log(f"{self.prefix}/ppl", self.ppl, **common)
