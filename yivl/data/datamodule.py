"""The LightningDataModule: sources -> datasets -> dataloaders, resumable at the exact data position.

A single ``json`` or ``synthetic`` training source is read map-style with length-grouped batches; any
other mix streams (webdataset shards, several sources by weight, a fixed number of batches per rank).
Model-dependent parts (tokenizer, image processor, image token count) arrive through :meth:`bind`,
which training calls before ``fit``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from yivl.data.build import (
    MAP_STYLE,
    allows_outside,
    build_stream_source,
    known_samples,
    record_files,
    source_type,
)
from yivl.data.collate import Collator, PackedCollator
from yivl.data.encode import SampleEncoder
from yivl.data.formats import DEFAULT_IMAGE_TOKENS
from yivl.data.formats import image_tokens as accepted_image_tokens
from yivl.data.guard import DEFAULT_MAX_REJECT_FRACTION, RejectGuard, checked_fraction
from yivl.data.image_files import DEFAULT_MAX_IMAGE_BYTES
from yivl.data.images import DEFAULT_MAX_PIXELS, ImageProcessor
from yivl.data.loaders import MapDataLoader, StreamDataLoader
from yivl.data.map_dataset import ConversationDataset, LengthGroupedSampler
from yivl.data.packing import PackedRows, PackedSampler
from yivl.data.reasons import SkipCounter, Tally, describe
from yivl.data.records import DEFAULT_MAX_RECORD_BYTES
from yivl.data.streaming import StreamingDataset
from yivl.data.tokenizer import YiTokenizer
from yivl.errors import YivlError

log = logging.getLogger("yivl.data")


def _plain(sources: Any) -> list[dict]:
    """Source configs as plain dicts (accepts OmegaConf containers)."""
    if sources is None:
        return []
    if hasattr(sources, "_content"):  # an OmegaConf container, when Hydra did not convert it
        from omegaconf import OmegaConf

        sources = OmegaConf.to_container(sources, resolve=True)
    if isinstance(sources, Mapping):
        sources = [sources]
    return [dict(s) for s in sources]


class YiVLDataModule(L.LightningDataModule):
    """Training and validation data for Yi-VL from a list of source configs (see :mod:`yivl.data.build`).

    ``batch_size`` is per device. ``samples_per_epoch`` sets the epoch length of streaming data (default:
    the sources' known sizes). ``resampled`` draws shards/records with replacement (needed for weights to
    hold over long runs). ``skip_counts()`` reports dropped samples by reason. ``packing`` packs training
    samples into rows of up to ``pack_length`` tokens (default ``max_length``), ``pack_buffer`` samples
    considered together (see :mod:`yivl.data.packing`); a batch is then ``batch_size`` rows.
    """

    def __init__(
        self,
        train: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        val: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        max_length: int = 4096,
        seed: int = 0,
        group_by_length: bool = True,
        drop_last: bool = True,
        resampled: bool = False,
        shuffle_buffer: int = 1000,
        samples_per_epoch: int | None = None,
        val_samples: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        log_every: int = 1000,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        image_tokens: Sequence[str] = DEFAULT_IMAGE_TOKENS,
        max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION,
        packing: bool = False,
        pack_length: int | None = None,
        pack_buffer: int = 512,
    ) -> None:
        super().__init__()
        self.train_sources, self.val_sources = _plain(train), _plain(val)
        if not self.train_sources:
            raise YivlError("data.train lists no sources; add at least one (see configs/data/)")
        for spec in self.train_sources + self.val_sources:
            source_type(spec)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.max_length = int(max_length)
        self.seed = int(seed)
        self.group_by_length, self.drop_last, self.resampled = group_by_length, drop_last, resampled
        self.shuffle_buffer = int(shuffle_buffer)
        self.samples_per_epoch, self.val_samples = samples_per_epoch, val_samples
        self.max_pixels = int(max_pixels)
        self.max_image_bytes = int(max_image_bytes)
        self.image_tokens = accepted_image_tokens(image_tokens, "data.image_tokens")
        self.max_reject_fraction = checked_fraction(max_reject_fraction, "data.max_reject_fraction")
        self.packing, self.pack_buffer = bool(packing), int(pack_buffer)
        self.pack_length = int(pack_length or max_length)
        if self.pack_length < 1 or self.pack_buffer < 1:
            raise YivlError(
                f"data.pack_length and data.pack_buffer must be >= 1, got {pack_length} and {pack_buffer}"
            )
        self.max_record_bytes = int(max_record_bytes)
        if self.max_record_bytes < 1:
            raise YivlError(f"data.max_record_bytes must be >= 1, got {max_record_bytes}")
        self.loader_kwargs = {
            "pin_memory": pin_memory,
            "persistent_workers": persistent_workers and num_workers > 0,
        }
        self.skips = SkipCounter(log_every)
        self.val_skips = SkipCounter(log_every)
        self.encoder: SampleEncoder | None = None  # validation's (and training's, unpacked)
        self.train_encoder: SampleEncoder | None = None
        self.collator: Collator | None = None
        self.train_collator: Collator | None = None
        self._resume: dict | None = None
        self._train_loader: MapDataLoader | StreamDataLoader | None = None
        self.train_survey: Tally | None = None  # what the map-style survey found (see _check_survey)

    # -- model binding and setup -------------------------------------------------------------------
    def bind(self, tokenizer: YiTokenizer, image_processor: ImageProcessor, num_image_tokens: int) -> None:
        """Attach the model's tokenizer, image processor and features per image (before ``fit``).

        Packed training rejects (as ``too_long``) samples longer than a row as well as the context.
        """
        lengths = (
            self.max_length,
            min(self.max_length, self.pack_length) if self.packing else self.max_length,
        )
        self.encoder, self.train_encoder = (
            SampleEncoder(
                tokenizer,
                image_processor,
                num_image_tokens,
                length,
                self.max_pixels,
                max_image_bytes=self.max_image_bytes,
                image_tokens=self.image_tokens,
            )
            for length in lengths
        )
        self.collator = Collator(image_processor.size, tokenizer.pad_token_id)
        collator_type = PackedCollator if self.packing else Collator
        self.train_collator = collator_type(image_processor.size, tokenizer.pad_token_id)

    def prepare_data(self) -> None:
        """Generate synthetic data (Lightning runs this on local rank 0 before any loader is built)."""
        for spec in self.train_sources + self.val_sources:
            if spec["type"] == "synthetic":
                record_files(spec)

    @property
    def is_map_style(self) -> bool:
        """True when training reads one json/synthetic source with length grouping."""
        return len(self.train_sources) == 1 and self.train_sources[0]["type"] in MAP_STYLE

    def _ranks(self) -> tuple[int, int]:
        trainer = self._trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _epoch_fn(self):
        """The trainer's current epoch as a callable; None without a trainer (loaders count epochs)."""
        trainer = self._trainer
        if trainer is None:
            return None
        if trainer.overfit_batches:  # the same batches every epoch, streams included
            return lambda: 0
        return lambda: trainer.current_epoch

    @property
    def _trainer(self):
        return getattr(self, "trainer", None)

    def _bound(self, train: bool = False) -> SampleEncoder:
        if self.encoder is None:
            raise YivlError("the data module is not bound to a model; call datamodule.bind(...) before fit")
        return self.train_encoder if train else self.encoder

    # -- training ------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        encoder = self._bound(train=True)
        loader = self._map_train_loader(encoder) if self.is_map_style else self._stream_train_loader(encoder)
        if self._resume is not None:
            loader.resume(self.resume_batches(), self._resume["epoch"])
        loader.attach(self)
        self._train_loader = loader
        return loader

    def _map_train_loader(self, encoder: SampleEncoder) -> MapDataLoader:
        spec = self.train_sources[0]
        path, folder = record_files(spec)
        guard = RejectGuard(self.skips, self.max_reject_fraction, str(path))
        dataset = ConversationDataset(
            path,
            folder,
            encoder,
            self.skips,
            allow_outside=allows_outside(spec),
            guard=guard,
            max_record_bytes=self.max_record_bytes,
        )
        self._check_survey(dataset, guard)
        world, rank = self._ranks()
        if self.packing:
            sampler = PackedSampler(
                dataset.token_lengths(rank, world),
                self.pack_length,
                self.pack_buffer,
                self.batch_size,
                world,
                rank,
                seed=self.seed,
                drop_last=self.drop_last,
            )
            dataset = PackedRows(dataset, dataset.read)
        else:
            lengths = dataset.lengths(encoder.num_image_tokens) if self.group_by_length else None
            sampler = LengthGroupedSampler(
                lengths,
                len(dataset),
                self.batch_size,
                world,
                rank,
                shuffle=True,
                seed=self.seed,
                drop_last=self.drop_last,
            )
        return MapDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=self.train_collator,
            num_workers=self.num_workers,
            epoch_fn=self._epoch_fn(),
            **self.loader_kwargs,
        )

    def _check_survey(self, dataset: ConversationDataset, guard: RejectGuard) -> None:
        """Judge the reject rule on a survey of the file before any step (one line, then stop)."""
        tally = self.train_survey = dataset.survey()
        log.info(
            "%s: checked %d of %d records: %d usable, %d rejected (%s), %d repaired (%s)",
            dataset.records.path.name,
            tally.total,
            len(dataset),
            tally.kept,
            sum(tally.rejected.values()),
            describe(tally.rejected),
            sum(tally.repaired.values()),
            describe(tally.repaired),
        )
        guard.judge(tally)

    def _batches_per_epoch(self, sources: list, samples: int | None, batch_size: int) -> int | None:
        world, _ = self._ranks()
        if samples is None:
            counts = [known_samples(s) for s in sources]
            if any(c is None for c in counts):
                return None
            samples = sum(counts)
        batches = math.ceil(int(samples) / (batch_size * world))
        workers = max(1, self.num_workers)
        return math.ceil(batches / workers) * workers  # every worker yields the same count

    def _stream_train_loader(self, encoder: SampleEncoder) -> StreamDataLoader:
        sources = [
            build_stream_source(s, self.shuffle_buffer, self.max_record_bytes) for s in self.train_sources
        ]
        batches = self._batches_per_epoch(sources, self.samples_per_epoch, self.batch_size)
        if batches is None:
            raise YivlError("the size of streaming data is unknown; set data.samples_per_epoch")
        dataset = StreamingDataset(sources, self.batch_size, batches, self.resampled, self.seed, self.skips)
        dataset.guard = RejectGuard(self.skips, self.max_reject_fraction, "the training data")
        dataset.pack = (self.pack_length, self.pack_buffer) if self.packing else None
        dataset.bind(encoder, self.train_collator)
        return StreamDataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            epoch_fn=self._epoch_fn(),
            **self.loader_kwargs,
        )

    # -- validation ----------------------------------------------------------------------------------
    def val_dataloader(self) -> DataLoader | list:
        if not self.val_sources:
            return []
        encoder = self._bound()
        if len(self.val_sources) == 1 and self.val_sources[0]["type"] in MAP_STYLE:
            spec = self.val_sources[0]
            path, folder = record_files(spec)
            dataset = ConversationDataset(
                path,
                folder,
                encoder,
                self.val_skips,
                allow_outside=allows_outside(spec),
                max_record_bytes=self.max_record_bytes,
            )
            return DataLoader(
                dataset,
                self.val_batch_size,
                shuffle=False,
                collate_fn=self.collator,
                num_workers=self.num_workers,
            )
        sources = [build_stream_source(s, 0, self.max_record_bytes) for s in self.val_sources]
        world, _ = self._ranks()
        batches = (
            self._batches_per_epoch(sources, self.val_samples, self.val_batch_size) if world > 1 else None
        )
        dataset = StreamingDataset(sources, self.val_batch_size, batches, False, self.seed, self.val_skips)
        dataset.bind(encoder, self.collator)
        return StreamDataLoader(dataset, batch_size=None, num_workers=self.num_workers)

    # -- resume --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The data position: epoch and batches of it already trained (saved in Lightning checkpoints)."""
        world, _ = self._ranks()
        if self._trainer is not None:
            fit = self._trainer.fit_loop
            epoch = self._trainer.current_epoch
            # between epochs (a checkpoint at an epoch's end or the end of training) the epoch already
            # names the next one, while the batch counter still holds the finished one's batches
            between = fit.epoch_progress.current.started == fit.epoch_progress.current.completed
            done = 0 if between else fit.epoch_loop.batch_progress.current.processed
        else:
            loader = self._train_loader
            epoch, done = (loader.epoch, loader.batches_yielded) if loader is not None else (0, 0)
        return {
            "epoch": int(epoch),
            "batches_done": int(done),
            "batch_size": self.batch_size,
            "world_size": world,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a saved data position at the next ``train_dataloader()``."""
        self._resume = dict(state_dict)

    def resume_batches(self) -> int:
        """Batches of the saved epoch to leave out, in this run's batch and world size."""
        state = self._resume
        world, _ = self._ranks()
        samples = state["batches_done"] * state["batch_size"] * state["world_size"]
        if (state["batch_size"], state["world_size"]) != (self.batch_size, world):
            log.warning(
                "batch size or world size changed since the checkpoint; resuming at sample %d", samples
            )
        return samples // (self.batch_size * world)

    def skip_counts(self) -> dict[str, int]:
        """Training samples dropped so far, by reason, summed over all workers."""
        return self.skips.counts()

    def repair_counts(self) -> dict[str, int]:
        """Training samples repaired so far (still used), by repair, summed over all workers."""
        return self.skips.repair_counts()
