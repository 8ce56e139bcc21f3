"""Running one task: fixed batches, images from DataLoader workers, batched greedy generation and/or
likelihood scoring, one JSONL record per finished sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from yivl.checkpoint.load import LoadedModel
from yivl.data.images import DEFAULT_MAX_PIXELS
from yivl.data.tokenizer import YiTokenizer
from yivl.evaluation.items import Item
from yivl.evaluation.likelihood import pad_sequences, sequence_logprobs
from yivl.evaluation.loader import ImageDataset, iterate_batches, plan_batches
from yivl.evaluation.prompting import Prepared, too_long
from yivl.evaluation.records import SampleWriter
from yivl.evaluation.tasks import TaskSpec
from yivl.models.generation import GenerationSettings, PrefixCache, generate

Progress = Callable[[int], None]


@dataclass
class RunOptions:
    """Run-wide settings that shape batches and decoding (part of what a resume must match)."""

    batch_size: int = 8
    num_workers: int = 2
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    seed: int = 0
    batch_check: int = 0


@dataclass
class TaskOutcome:
    """Records in dataset order, what this run computed, and the batch-size check."""

    records: list[dict[str, Any]]
    computed: int = 0
    gen_tokens: int = 0
    wall_s: float = 0.0
    batch_check: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    """Item indices in the order a fresh single-process run writes them (skipped, then batch by batch)."""


class TaskRunner:
    """Runs the items of one task against a loaded model."""

    def __init__(self, loaded: LoadedModel, options: RunOptions) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.options = options
        self.context = int(loaded.config.llm["max_position_embeddings"])
        self.image_tokens = loaded.model.config.num_image_tokens
        self.device = self.model.llm.get_input_embeddings().weight.device
        self.pixel_dtype = next(self.model.vision_tower.parameters()).dtype
        # the system prompt's KV cache, computed once per run(): the weights cannot change inside one
        self.prefixes: PrefixCache | None = None

    def prepare(self, spec: TaskSpec, items: list[Item]) -> list[Prepared]:
        """Render and tokenise every item (its type's ``prepare``); one that does not fit the context
        gets ``skip`` set."""
        kind, generates = spec.kind, spec.generates
        prepared = [kind.prepare(item, spec.options, self.tokenizer, self.image_tokens) for item in items]
        for prep in prepared:
            prep.skip = too_long(prep.length, self.context, generates)
        return prepared

    def dataset(self, items: list[Item]) -> ImageDataset:
        pad = self.loaded.config.image_aspect_ratio == "pad"
        return ImageDataset(
            [i.image for i in items], self.loaded.image_processor, pad, self.options.max_image_pixels
        )

    def run(
        self,
        spec: TaskSpec,
        items: list[Item],
        done: dict[str, dict[str, Any]],
        writer: SampleWriter | None,
        progress: Progress | None = None,
        share: tuple[int, int] = (0, 1),
    ) -> TaskOutcome:
        """Compute every item not in ``done`` (whole planned batches), writing records as batches finish.

        Items that do not fit the context are recorded as skipped, never computed. ``share=(rank,
        world)`` runs only every ``world``-th planned batch from ``rank`` (and rank 0 records the
        skipped items), whatever ``done`` holds, so a resume with any world size leaves no batch
        out; ``records`` then hold this share (and ``done``) only, and the batch-size check is left
        to :meth:`check_batches` over the merged records. ``writer=None`` writes no file.
        """
        self.prefixes = PrefixCache()
        try:
            return self._run(spec, items, done, writer, progress, share)
        finally:
            self.prefixes = None

    def _run(
        self,
        spec: TaskSpec,
        items: list[Item],
        done: dict[str, dict[str, Any]],
        writer: SampleWriter | None,
        progress: Progress | None,
        share: tuple[int, int],
    ) -> TaskOutcome:
        prepared = self.prepare(spec, items)
        rank, world = share
        plan = self.plan(prepared)
        todo = [b for b in plan[rank::world] if any(items[i].id not in done for i in b)]
        if progress is not None and len(done):
            progress(sum(1 for item in items if item.id in done))
        outcome = TaskOutcome(records=[])
        start = time.perf_counter()
        if rank == 0:
            skipped = self.record_skips(spec, items, prepared, done, writer)
            if progress is not None and skipped:
                progress(skipped)
        for indices, pixels in iterate_batches(self.dataset(items), todo, self.options.num_workers):
            t0 = time.perf_counter()
            fields = self.compute(spec, [items[i] for i in indices], [prepared[i] for i in indices], pixels)
            elapsed = time.perf_counter() - t0
            fresh = 0
            for i, extra in zip(indices, fields, strict=True):
                if items[i].id in done:
                    continue
                record = base_record(spec, items[i], prepared[i]) | extra
                record |= {"batch_size": len(indices), "batch_s": round(elapsed, 4)}
                _write(writer, record)
                done[items[i].id] = record
                outcome.gen_tokens += int(record.get("gen_tokens") or 0)
                fresh += 1
            outcome.computed += fresh
            if progress is not None:
                progress(fresh)
        if writer is not None:
            writer.sync()
        outcome.wall_s = time.perf_counter() - start
        outcome.records = [done[item.id] for item in items if item.id in done]
        outcome.order = [i for i, p in enumerate(prepared) if p.skip is not None] + [
            i for b in plan for i in b
        ]
        if world == 1:
            outcome.batch_check = self.check_batches(spec, items, outcome.records, prepared)
        return outcome

    def check_batches(
        self,
        spec: TaskSpec,
        items: list[Item],
        records: list[dict[str, Any]],
        prepared: list[Prepared] | None = None,
    ) -> dict[str, Any] | None:
        """The batch-size check of a generation task (``batch_check`` items alone), None when it has none."""
        prepared = self.prepare(spec, items) if prepared is None else prepared
        scored = any(p.skip is None for p in prepared)
        if not (spec.generates and scored and self.options.batch_check and self.options.batch_size > 1):
            return None
        if self.prefixes is not None:
            return self.check_batch_invariance(spec, items, prepared, records)
        self.prefixes = PrefixCache()
        try:
            return self.check_batch_invariance(spec, items, prepared, records)
        finally:
            self.prefixes = None

    def plan(self, prepared: list[Prepared]) -> list[list[int]]:
        """Batches of the items that fit the context, planned as if the others were not in the file."""
        fits = [i for i, p in enumerate(prepared) if p.skip is None]
        batches = plan_batches([prepared[i].length for i in fits], self.options.batch_size)
        return [[fits[k] for k in batch] for batch in batches]

    def record_skips(
        self,
        spec: TaskSpec,
        items: list[Item],
        prepared: list[Prepared],
        done: dict[str, dict[str, Any]],
        writer: SampleWriter | None,
    ) -> int:
        """Write the skipped record of every item that does not fit and is not yet in ``done``."""
        count = 0
        for item, prep in zip(items, prepared, strict=True):
            if prep.skip is not None and item.id not in done:
                record = base_record(spec, item, prep) | prep.skip
                _write(writer, record)
                done[item.id] = record
                count += 1
        return count

    def compute(
        self, spec: TaskSpec, items: list[Item], prepared: list[Prepared], pixels: list[torch.Tensor | None]
    ) -> list[dict[str, Any]]:
        """Per item of one batch, the record fields produced by the model (scored by the task's type)."""
        kind, options = spec.kind, spec.options
        fields: list[dict[str, Any]] = [{} for _ in items]
        if spec.generates:
            answers, counts = self.generate(spec, prepared, pixels)
            for f, item, answer, count in zip(fields, items, answers, counts, strict=True):
                f["raw_output"] = answer
                f["gen_tokens"] = count
                f |= kind.score_output(item, answer, options, self.options.seed)
        if spec.scores_likelihood:  # every sequence of every item of the batch in one forward pass
            seqs = [seq for p in prepared for seq in p.sequences or []]
            repeated = [px for p, px in zip(prepared, pixels, strict=True) for _ in p.sequences or []]
            sums, counts = self.logprobs(seqs, repeated, kind.padding_side(options))
            start = 0
            for f, item, prep in zip(fields, items, prepared, strict=True):
                k = len(prep.sequences or [])
                f |= kind.score_sequences(item, sums[start : start + k], counts[start : start + k], options)
                start += k
        return fields

    def generate(
        self, spec: TaskSpec, prepared: list[Prepared], pixels: list[torch.Tensor | None]
    ) -> tuple[list[str], list[int | None]]:
        """Greedy answers for one batch (left-padded), capped to the room left in the context, and the
        number of tokens each sample generated (stop-string tokens included, eos not)."""
        prompts = [p.prompt_ids or [] for p in prepared]
        longest = max(p.length for p in prepared)
        budget = max(1, min(int(spec.options["max_new_tokens"]), self.context - longest))
        settings = GenerationSettings(temperature=0.0, top_k=None, max_new_tokens=budget)
        images = [None if px is None else px.to(self.device, self.pixel_dtype) for px in pixels]
        counter = TokenCounter(self.tokenizer)
        answers = generate(self.model, counter, prompts, images, settings, prefixes=self.prefixes)
        return answers, counter.per_row(len(prompts))

    def logprobs(
        self, sequences: list[tuple[list[int], list[int]]], pixels: list[torch.Tensor | None], side: str
    ) -> tuple[list[float], list[int]]:
        """Summed log-probs and token counts of the scored labels of each sequence."""
        if not sequences:
            return [], []
        pad = self.tokenizer.pad_token_id or 0
        ids, mask, labels = pad_sequences(sequences, pad, side)
        images = [px for px in pixels if px is not None]
        stacked = torch.stack(images) if images else None
        return sequence_logprobs(self.model, ids, mask, labels, stacked, side)

    def check_batch_invariance(
        self, spec: TaskSpec, items: list[Item], prepared: list[Prepared], records: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Regenerate the first ``batch_check`` scored items alone; list those whose answer differs."""
        fits = [i for i, p in enumerate(prepared) if p.skip is None]
        singles = [[i] for i in fits[: self.options.batch_check]]
        by_id = {str(r["id"]): r for r in records}
        differ = []
        for indices, pixels in iterate_batches(self.dataset(items), singles, 0):
            i = indices[0]
            answer = self.generate(spec, [prepared[i]], pixels)[0][0]
            batched = by_id[items[i].id]["raw_output"]
            if answer != batched:
                differ.append({"id": items[i].id, "batched": batched, "alone": answer})
        return {"checked": len(singles), "batch_size": self.options.batch_size, "differ": differ}


class TokenCounter:
    """The tokenizer handed to ``generate``, counting each sample's generated tokens.

    ``generate`` decodes every sample's growing id list after each new token; the longest list seen per
    sample is its count. Lists are told apart by identity, in the order samples first decode, which is
    row order (every row decodes at the first step unless its first token is eos).
    """

    def __init__(self, tokenizer: YiTokenizer) -> None:
        self._tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self._longest: dict[int, int] = {}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        key = id(ids)
        self._longest[key] = max(self._longest.get(key, 0), len(ids))
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def per_row(self, rows: int) -> list[int | None]:
        """Tokens per row; rows cannot be told apart (None) when some row stopped on its first token."""
        counts = list(self._longest.values())
        return counts if len(counts) == rows else [None] * rows


def _write(writer: SampleWriter | None, record: dict[str, Any]) -> None:
    if writer is not None:
        writer.write(record)


def base_record(spec: TaskSpec, item: Item, prepared: Prepared) -> dict[str, Any]:
    """The fields every sample record has: identity, the exact prompt(s), image and target."""
    record: dict[str, Any] = {"id": item.id, "index": item.index, "task": spec.name, "type": spec.type}
    record["prompt"] = prepared.prompt
    if prepared.cloze_prompt is not None:
        record["likelihood_prompt"] = prepared.cloze_prompt
        record["continuations"] = item.continuations
    record["image"] = item.image.display() if item.image else None
    if item.target is not None:
        record["target"] = item.target
    record |= {k: v for k, v in item.meta.items() if k != "open"}
    return record
