"""Map-style conversation dataset over a lazy record file, and its length-grouped, resumable sampler."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, DistributedSampler

from yivl.data.checks import record_image_path
from yivl.data.collate import Sample
from yivl.data.encode import SampleEncoder, encode_counted
from yivl.data.guard import RejectGuard
from yivl.data.image_files import check_image_file
from yivl.data.reasons import SampleRejected, SkipCounter, Tally
from yivl.data.records import DEFAULT_MAX_RECORD_BYTES, RecordFile
from yivl.errors import YivlError

MAX_REPLACEMENTS = 64
"""How many following records a rejected one may be replaced by before the dataset gives up."""
SURVEY_RECORDS = 1000
"""Records checked before training (all of a smaller file) to judge the reject rule at once."""


class ConversationDataset(Dataset):
    """Yi-VL/LLaVA JSON or JSONL conversations; images resolved inside ``image_folder`` (anywhere when
    ``allow_outside``).

    A record that cannot be used (see :mod:`yivl.data.reasons`) is counted in ``skips`` and replaced by
    the next usable one, so batches keep their size. ``lengths`` is a cheap per-record length estimate
    (bytes / 4 plus the image tokens) used only to group similar lengths into a batch.
    """

    def __init__(
        self,
        path: str | Path,
        image_folder: str | Path | None,
        encoder: SampleEncoder | None = None,
        skips: SkipCounter | None = None,
        allow_outside: bool = False,
        guard: RejectGuard | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.records = RecordFile(path, max_record_bytes)
        if len(self.records) == 0:
            raise YivlError(f"{path} holds no records; point the data config at a non-empty file")
        self.image_folder = Path(image_folder) if image_folder else Path(path).parent
        self.allow_outside = bool(allow_outside)
        self.encoder = encoder
        self.skips = skips if skips is not None else SkipCounter()
        self.guard = guard

    def bind(self, encoder: SampleEncoder) -> None:
        """Attach the model-dependent encoder (tokenizer, image processor, lengths)."""
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.records)

    def lengths(self, num_image_tokens: int) -> np.ndarray:
        """Estimated tokens per record ``[N]`` (no parsing): bytes / 4 + image tokens when it has one."""
        return self.records.sizes // 4 + self.records.has_image * int(num_image_tokens)

    def token_lengths(self, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Exact tokens per record ``[N]`` with image features counted (text only: no image is read), for
        packing. A record rejected here gets -1 (it is left out) and is counted in ``skips`` only where
        ``index % world_size == rank``: every rank measures the whole file, so each reject is counted once
        over the ranks, as a rank counts only the records it reads (and its reject fraction stays true)."""
        if self.encoder is None:
            raise RuntimeError("call bind() with a SampleEncoder before measuring")
        lengths = np.full(len(self), -1, dtype=np.int64)
        for i in range(len(self)):
            key = f"{self.records.path.name}:{i}"
            try:
                lengths[i] = self.encoder.encode_text(self.records.record(i), key).length
            except SampleRejected as err:
                if i % world_size == rank:
                    self.skips.add(err.reason, str(err), bool(self.records.has_image[i]))
        return lengths

    def read(self, index: int) -> Sample | None:
        """Record ``index`` as a sample, or None when it is rejected (counted; not replaced)."""
        sample = self._attempt(index)
        if self.guard is not None:
            self.guard.check()
        return sample

    def encode(self, index: int) -> Sample:
        """Record ``index`` as a sample; raises :class:`SampleRejected`."""
        if self.encoder is None:
            raise RuntimeError("call bind() with a SampleEncoder before reading samples")
        key = f"{self.records.path.name}:{index}"
        record = self.records.record(index)
        return self.encoder.encode(record, self._image_path(record, key), key)

    def _image_path(self, record: dict, key: str) -> Path | None:
        return record_image_path(record, self.image_folder, key, self.allow_outside)

    def survey(self, limit: int = SURVEY_RECORDS) -> Tally:
        """Check up to ``limit`` records spread evenly over the file, text and image file existence
        only (nothing is decoded): what the reject rule is judged on before training starts."""
        if self.encoder is None:
            raise RuntimeError("call bind() with a SampleEncoder before surveying")
        tally = Tally()
        for i in np.unique(np.linspace(0, len(self) - 1, min(limit, len(self))).round().astype(int)):
            key = f"{self.records.path.name}:{i}"
            has_image = bool(self.records.has_image[i])
            try:
                text = self.encoder.encode_text(self.records.record(int(i)), key)
                path = self._image_path(text.record, key)
                if path is not None:
                    check_image_file(path, key, self.encoder.max_image_bytes)
            except SampleRejected as err:
                tally.add(err.reason, has_image)
                continue
            tally.add(None, text.image is not None, text.repairs)
        return tally

    def _attempt(self, i: int) -> Sample | None:
        key = f"{self.records.path.name}:{i}"
        has_image = bool(self.records.has_image[i])
        try:
            record = self.records.record(i)
            path = self._image_path(record, key)
        except SampleRejected as err:
            self.skips.add(err.reason, str(err), has_image)
            return None
        return encode_counted(self.encoder, record, path, key, self.skips, has_image)

    def __getitem__(self, index: int) -> Sample:
        if self.encoder is None:
            raise RuntimeError("call bind() with a SampleEncoder before reading samples")
        for step in range(MAX_REPLACEMENTS):
            sample = self._attempt((index + step) % len(self))
            if self.guard is not None:
                self.guard.check()
            if sample is not None:
                return sample
        raise YivlError(
            f"{self.records.path}: {MAX_REPLACEMENTS} records in a row from {index} were rejected "
            f"(skips so far: {self.skips.counts()}); run `python -m data_tools validate` on it"
        )


class LengthGroupedSampler(DistributedSampler):
    """Indices for one rank, in batches of similar estimated length, reshuffled every epoch.

    Samples are shuffled, cut into mega-batches of ``50 * batch_size * num_replicas``, sorted by length
    inside each, and cut into global batches; every rank takes its slice of each global batch, and the
    batch order is shuffled with the longest batch first (an out-of-memory shows at once). Being a
    ``DistributedSampler``, Lightning keeps it (no sampler injection) and calls ``set_epoch``.
    ``skip_batches`` drops the first batches of one epoch, to resume mid-epoch.
    """

    def __init__(
        self,
        lengths: np.ndarray | None,
        size: int,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.size = size
        self.batch_size = int(batch_size)
        global_batch = self.batch_size * num_replicas
        n_batches = size // global_batch if drop_last else math.ceil(size / global_batch)
        if n_batches == 0:
            raise YivlError(f"{size} samples cannot fill one batch of {batch_size} x {num_replicas} ranks")
        self.num_batches = n_batches
        self.num_samples = n_batches * self.batch_size
        self.total_size = n_batches * global_batch
        self._skip: tuple[int, int] | None = None

    def skip_batches(self, epoch: int, batches: int) -> None:
        """Leave out the first ``batches`` batches of ``epoch`` (once)."""
        self._skip = (epoch, batches) if batches > 0 else None

    def _global_batches(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        order = np.resize(order, self.total_size) if self.total_size > self.size else order[: self.total_size]
        batches = order.reshape(self.num_batches, -1)
        if self.lengths is None or not self.shuffle:
            return batches
        mega = 50 * batches.shape[1]
        flat = batches.reshape(-1)
        for start in range(0, len(flat), mega):
            chunk = flat[start : start + mega]
            flat[start : start + mega] = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
        batches = flat.reshape(self.num_batches, -1)
        batches = batches[rng.permutation(self.num_batches)]
        longest = int(np.argmax(self.lengths[batches].max(axis=1)))
        batches[[0, longest]] = batches[[longest, 0]]
        return batches

    def __iter__(self):
        batches = self._global_batches()
        mine = batches[:, self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        if self._skip is not None and self._skip[0] == self.epoch:
            mine = mine[self._skip[1] :]
            self._skip = None
        return iter(mine.reshape(-1).tolist())

    def __len__(self) -> int:
        return self.num_samples
