"""The LightningModule: builds the stage's model from the run plan and trains it.

The plan (``yivl.checkpoint.plan.RunPlan``: model path and name, stage, resolution, what trains,
fine-tune method, optimizer and schedule) is stored as ``save_hyperparameters(plan.to_dict())``: plain
data, so no ``nn.Module`` is ever pickled into a checkpoint and checkpoints load with
``weights_only=True``. The weights are read in ``configure_model`` (under the strategy's context, once).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import lightning as L
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, ModelParallelStrategy, ParallelStrategy
from torch.optim.lr_scheduler import LambdaLR

from yivl.checkpoint.plan import RunPlan
from yivl.errors import YivlError
from yivl.evaluation.lightning import ValidationLoss
from yivl.models.yivl import YiVL, YiVLOutput
from yivl.training.build import Dtypes, build_model, trainable_names
from yivl.training.checkpointing import (
    META_KEY,
    check_same_run,
    check_state_keys,
    rng_entry,
    rng_for_rank,
    run_meta,
    set_rng_state,
)
from yivl.training.optim import WarmupCosine, build_optimizer, param_groups
from yivl.training.token_loss import StepTokens


class YiVLModule(L.LightningModule):
    """Trains a YiVL model. Logs ``train/loss``, ``lr``, ``tok/s`` (progress bar) and ``val/loss``.

    The training loss is token-weighted over the whole optimizer step (all accumulated micro-batches
    on all ranks; ``yivl.training.token_loss``); ``train/loss`` is that mean, logged once per step."""

    def __init__(self, plan: RunPlan) -> None:
        super().__init__()
        self.plan = plan
        self.save_hyperparameters(plan.to_dict())
        self.model: YiVL | None = None
        self.meta: dict = {}
        self.strict_loading = False  # checkpoints hold only the trainable tensors
        self._pending_rng: Mapping | None = None
        self._clock: float | None = None
        self._tokens = 0
        self._step = StepTokens()
        self.val_loss = ValidationLoss()  # token-weighted, so the same for any batch size or padding

    def setup(self, stage: str) -> None:
        # Under DeepSpeed/FSDP, configure_model runs inside the strategy's sharded-init context
        # (deepspeed.zero.Init), which our tensor-by-tensor loader does not support: build before it.
        if self._sharded():
            self.configure_model()

    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model = self._build(Dtypes.for_precision(self.plan.precision))
        self.meta = run_meta(self.plan, self.model.config)

    def _build(self, dtypes: Dtypes) -> YiVL:
        """The plan's model as the strategy wants it: whole on the device, or sharded while loading."""
        if self._trainer is None:
            return build_model(self.plan, dtypes, "cpu")
        strategy = self.trainer.strategy
        if isinstance(strategy, ModelParallelStrategy):
            from yivl.training.fsdp2 import build_sharded  # FSDP2: shard while loading

            return build_sharded(self.plan, dtypes, self.device_mesh["data_parallel"], strategy.root_device)
        if isinstance(strategy, DeepSpeedStrategy):
            from yivl.training.zero3_init import build_for_deepspeed  # ZeRO-3: partition while loading

            return build_for_deepspeed(self.plan, dtypes, strategy)
        return build_model(self.plan, dtypes, strategy.root_device)

    def _sharded(self) -> bool:
        """True under DeepSpeed, which distributes the weights itself (they are read on the CPU first)."""
        return self._trainer is not None and isinstance(self.trainer.strategy, DeepSpeedStrategy)

    def forward(
        self, batch: Mapping[str, torch.Tensor], loss_chunk_size: int = 0, touch_unused: bool = False
    ) -> YiVLOutput:
        """``batch``: input_ids/labels/attention_mask [B, T], pixel_values [N, 3, S, S]; packed batches
        also carry sequence_ids [B, T] (see yivl.data.packing). ``touch_unused``: a text-only batch
        still reaches every trainable tower / projector parameter (see :meth:`_blank_image`)."""
        text_only = touch_unused and batch["pixel_values"].shape[0] == 0
        return self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            pixel_values=batch["pixel_values"],
            sequence_ids=batch.get("sequence_ids"),
            loss_chunk_size=loss_chunk_size,
            blank_image=text_only and self._blank_image(),
        )

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if batch_idx % self.trainer.accumulate_grad_batches == 0 or batch_idx > self._step.last_batch:
            self._step.start(self.trainer, self, batch, batch_idx)  # (or resumed inside a step)
        out = self(batch, self.plan.model.loss_chunk_size, touch_unused=True)
        self._count_tokens(batch)
        loss = self._step.scaled(self.trainer, out.loss_sum)
        logs = (self.global_step + 1) % self.trainer.log_every_n_steps == 0 or self.global_step == 0
        if logs and batch_idx == self._step.last_batch:
            # only on the steps whose metrics reach the loggers (and the first, to show them at once)
            self.log("train/loss", self._step.step_mean(self.trainer), prog_bar=True, batch_size=1)
            self._log_lrs()
            self._log_throughput()
        return loss

    def _blank_image(self) -> bool:
        """Under every multi-process strategy a text-only rank runs a blank image through the tower
        and projector inside the model's forward, its features added x 0 to the embeddings: the same
        parameters reach the backward (DDP with find_unused_parameters=false) and the same collectives
        run in the same order (ZeRO-2 reduces, ZeRO-3 and FSDP2 gather and reduce-scatter tower and
        projector gradients in the order the backward reaches them) as on a rank with images."""
        tower = [self.model.vision_tower, self.model.mm_projector]
        trains = any(p.requires_grad for m in tower for p in m.parameters())
        return trains and isinstance(self.trainer.strategy, ParallelStrategy)

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        out = self(batch, self.plan.model.loss_chunk_size)
        self.val_loss.log(self, out.loss, out.num_tokens, batch_size=batch["input_ids"].shape[0])

    def on_train_batch_start(self, batch: Mapping, batch_idx: int) -> None:
        if self._pending_rng is not None:  # resumed: continue the exact random stream of the first run
            set_rng_state(self._pending_rng)
            self._pending_rng = None

    def _count_tokens(self, batch: Mapping[str, torch.Tensor]) -> None:
        """Tokens the LLM sees in ``batch``: text tokens plus every image's features."""
        images = batch["pixel_values"].shape[0] * (self.model.config.num_image_tokens - 1)
        self._tokens += int(batch["attention_mask"].sum()) + images

    def _log_throughput(self) -> None:
        """Tokens per second (all ranks) since the previous call; the first call starts the clock."""
        now = time.perf_counter()
        if self._clock is not None:
            rate = self._tokens / max(now - self._clock, 1e-9)
            self.log("tok/s", rate * self.trainer.world_size, prog_bar=True, batch_size=1)
        self._clock, self._tokens = now, 0

    def _log_lrs(self) -> None:
        """``lr/<part>`` per trained part; ``lr`` (progress bar) is the LLM's, or the first part's."""
        lrs = {g["name"].split(".")[0]: g["lr"] for g in self.trainer.optimizers[0].param_groups}
        for part, lr in lrs.items():
            self.log(f"lr/{part}", float(lr), batch_size=1)
        self.log("lr", float(lrs.get("llm", next(iter(lrs.values())))), prog_bar=True, batch_size=1)

    def configure_optimizers(self) -> dict:
        groups = param_groups(self.model, self.plan.optimizer)
        if not groups:
            raise YivlError(f"experiment {self.plan.stage} trains no parameter; check module.train")
        optimizer = build_optimizer(groups, self.plan.optimizer, cpu_adam=self.plan.cpu_adam)
        total = self.trainer.estimated_stepping_batches
        if total == float("inf"):
            raise YivlError("the training data has no length (streamed shards): set trainer.max_steps")
        schedule = WarmupCosine(int(total), **self._schedule_args())
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": LambdaLR(optimizer, schedule), "interval": "step"},
        }

    def _schedule_args(self) -> dict:
        return {
            "warmup_ratio": float(self.plan.scheduler.warmup_ratio),
            "min_ratio": float(self.plan.scheduler.min_lr_ratio),
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = set(trainable_names(self))
        if "state_dict" in checkpoint:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint[META_KEY] = {**self.meta, **rng_entry()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        where = str(self.trainer.ckpt_path) if self._trainer is not None else "checkpoint"
        saved = checkpoint.get(META_KEY)
        check_same_run(where, saved, self.meta)
        if "state_dict" in checkpoint:  # DeepSpeed restores its own shards
            shapes = [p.shape for p in self.parameters() if p.requires_grad]
            check_state_keys(
                where, checkpoint["state_dict"], dict(zip(trainable_names(self), shapes, strict=True))
            )
        world, rank = (self.trainer.world_size, self.global_rank) if self._trainer is not None else (1, 0)
        self._pending_rng = rng_for_rank(saved, rank, world)
