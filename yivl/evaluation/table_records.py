"""Benchmark tables (VLMEvalKit TSV, lmms-eval Parquet) -> task records with their images in memory.

VLMEvalKit stores an image once: a later row's ``image`` cell of at most 64 characters names the
``index`` of the row that holds it (``ImageBaseDataset``). Such a row shares that image, and its image
name (hence MME's default pairing) is the holding row's. Identical image bytes are kept once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from yivl.errors import YivlError
from yivl.evaluation.benchmarks import Layout, pick_layout
from yivl.evaluation.sources import ImageRef, RawRecord, finish_records
from yivl.evaluation.tabular import (
    VLMEVAL_REFERENCE_CHARS,
    decode_base64,
    iter_rows,
    parquet_image,
    read_columns,
    table_format,
    tsv_image_cells,
)

GQA_IMAGE_COLUMNS = ("id", "image")


class _Store:
    """Image bytes by content, so rows that repeat an image hold one copy."""

    def __init__(self) -> None:
        self._by_digest: dict[bytes, bytes] = {}

    def keep(self, data: bytes) -> bytes:
        return self._by_digest.setdefault(hashlib.sha256(data).digest(), data)


def read_table(
    path: Path,
    kind: str,
    benchmark: str | None,
    hints: list[str],
    limit: int | None,
    max_image_bytes: int,
    images: Path | None = None,
) -> tuple[Layout, list[RawRecord]]:
    """The layout and the first ``limit`` records of a benchmark table (or a folder of Parquet files)."""
    if not path.exists():
        raise YivlError(f"task file not found: {path}; give the benchmark's .tsv or .parquet file")
    fmt = table_format(path)
    if path.is_file() and path.stat().st_size == 0:
        raise YivlError(f"{path} is empty; give the benchmark's .{fmt} file as published")
    layout = pick_layout(str(path), fmt, read_columns(path), kind, benchmark, [*hints, path.stem])
    if layout.image_column is None and images is None:
        raise YivlError(
            f"{path}: {layout.benchmark} questions hold no images; add images=PATH (its images Parquet) "
            "in the task mapping"
        )
    if layout.image_column is not None and images is not None:
        raise YivlError(f"{path}: images= is for GQA's separate images Parquet; this table holds its images")
    store = _Store()
    if fmt == "tsv":
        records = _tsv_records(path, layout, limit, max_image_bytes, store)
    else:
        records = _parquet_records(path, layout, limit, max_image_bytes, store)
    if not records:
        raise YivlError(f"{path} holds no records; give the benchmark's table with its rows")
    if images is not None:
        _attach_images(records, images.expanduser(), max_image_bytes, store)
    return layout, finish_records(records, None)


def _tsv_records(
    path: Path, layout: Layout, limit: int | None, max_bytes: int, store: _Store
) -> list[RawRecord]:
    """Rows up to ``limit`` (and on, only as far as the images they reference)."""
    kept: list[tuple[str, dict[str, Any]]] = []
    images: dict[str, tuple[bytes, int]] = {}
    refs: dict[str, str] = {}
    pending: dict[str, str] = {}  # referenced index -> where the reference is
    column = str(layout.image_column)
    for where, row in iter_rows(path, max_bytes):
        keep = limit is None or len(kept) < limit
        if not keep and not pending:
            break
        index, cell = str(row["index"]).strip(), str(row.get(column) or "").strip()
        if keep:  # without its image cell: the decoded bytes are kept once, below
            kept.append((where, {k: v for k, v in row.items() if k != column}))
        if not cell:
            continue
        if len(cell) <= VLMEVAL_REFERENCE_CHARS:
            if keep:
                refs[index] = cell
                if cell not in images:
                    pending.setdefault(cell, where)
            continue
        if keep or index in pending:
            cells = tsv_image_cells(cell)
            images[index] = (store.keep(decode_base64(cells[0], where, column, max_bytes)), len(cells))
            pending.pop(index, None)
    if pending:
        target, where = next(iter(pending.items()))
        raise YivlError(
            f"{where}: the {column!r} cell names row index {target}, which holds no image in {path.name}; "
            "give the TSV as published"
        )
    return [_tsv_record(path, layout, where, row, images, refs) for where, row in kept]


def _tsv_record(
    path: Path,
    layout: Layout,
    where: str,
    row: dict[str, Any],
    images: dict[str, tuple[bytes, int]],
    refs: dict[str, str],
) -> RawRecord:
    index = str(row["index"]).strip()
    holder = refs.get(index, index)
    image, count = None, 0
    if holder in images:
        data, count = images[holder]
        image = ImageRef(str(path), name=f"{path.name}:{holder}", data=data)
    data_fields = {"id": index} | layout.convert(row, where)
    return RawRecord(0, index, where, data_fields, image, count)


def _parquet_records(
    path: Path, layout: Layout, limit: int | None, max_bytes: int, store: _Store
) -> list[RawRecord]:
    out = []
    for position, (where, row) in enumerate(iter_rows(path, max_bytes)):
        if limit is not None and position >= limit:
            break
        record_id = str(row[layout.id_column]) if layout.id_column else str(position)
        image, count = None, 0
        if layout.image_column is not None:
            data, count = parquet_image(row.get(layout.image_column), where, layout.image_column, max_bytes)
            if data is not None:
                image = ImageRef(str(path), name=f"{path.name}:{record_id}", data=store.keep(data))
        fields = {"id": record_id} | layout.convert(row, where)
        if layout.image_column is None:
            fields["image_id"] = str(row["imageId"])
        out.append(RawRecord(0, record_id, where, fields, image, count))
    return out


def _attach_images(records: list[RawRecord], images: Path, max_bytes: int, store: _Store) -> None:
    """GQA: the images Parquet (``id``, ``image``) joined on the questions' ``imageId``."""
    if not images.exists():
        raise YivlError(f"images file not found: {images}; give GQA's images Parquet (columns id, image)")
    columns = read_columns(images)
    if not set(GQA_IMAGE_COLUMNS) <= set(columns):
        raise YivlError(
            f"{images}: unknown images layout; columns found: {', '.join(columns)}; expected id, image"
        )
    wanted = {str(r.data["image_id"]) for r in records}
    found: dict[str, tuple[bytes, str]] = {}
    for where, row in iter_rows(images, max_bytes):
        key = str(row["id"])
        if key in wanted and key not in found:
            data, _ = parquet_image(row.get("image"), where, "image", max_bytes)
            if data is not None:
                found[key] = (store.keep(data), f"{images.name}:{key}")
        if len(found) == len(wanted):
            break
    for record in records:
        key = str(record.data["image_id"])
        if key not in found:
            raise YivlError(
                f"{record.where}: image {key} is not in {images}; give the images Parquet of these questions"
            )
        data, name = found[key]
        record.image, record.num_images = ImageRef(str(images), name=name, data=data), 1
