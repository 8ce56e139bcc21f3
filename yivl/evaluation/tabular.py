"""Benchmark tables as published: VLMEvalKit TSVs (base64 image cells) and the Parquet files of the
lmms-eval datasets (image cells as ``{bytes, path}`` structs, as HF ``datasets`` writes an Image
feature). Rows come out as plain dicts, one at a time; every image cell is checked against
``max_image_bytes`` before it is decoded or kept.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from yivl.errors import YivlError

TSV_SUFFIXES = (".tsv",)
PARQUET_SUFFIXES = (".parquet",)
TABLE_SUFFIXES = TSV_SUFFIXES + PARQUET_SUFFIXES
PARQUET_BATCH_ROWS = 32
"""Rows per Parquet read: a batch of image cells is what is held beyond the kept images."""
TSV_FIELD_SLACK = 1024 * 1024
"""Room above the base64 size of one limit-sized image (multi-image cells, quoting)."""
VLMEVAL_REFERENCE_CHARS = 64
"""VLMEvalKit's rule: an image cell this short names another row's index instead of holding an image."""


def is_table(path: Path) -> bool:
    """True for a benchmark table (or a folder of Parquet files)."""
    if path.is_dir():
        return any(path.glob("*.parquet"))
    return path.suffix.lower() in TABLE_SUFFIXES


def table_format(path: Path) -> str:
    """``tsv`` or ``parquet``."""
    return "tsv" if path.suffix.lower() in TSV_SUFFIXES else "parquet"


def read_columns(path: Path) -> list[str]:
    """The column names of a TSV (its header) or a Parquet file (its schema)."""
    if table_format(path) == "tsv":
        with _open_tsv(path) as f:
            header = next(_tsv_reader(f, path, 0), None)
        if header is None:
            raise YivlError(f"{path} is empty; give a TSV with a header line and one row per question")
        return header
    return list(_parquet_file(_parquet_files(path)[0]).schema_arrow.names)


def iter_rows(path: Path, max_image_bytes: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) for every row of the table, in file order (``where`` names file and row)."""
    if table_format(path) == "tsv":
        yield from _tsv_rows(path, max_image_bytes)
    else:
        for file in _parquet_files(path):
            yield from _parquet_rows(file)


def _open_tsv(path: Path) -> Any:
    try:
        return open(path, encoding="utf-8", newline="")
    except OSError as err:
        raise YivlError(f"cannot read {path} ({err.strerror})") from None


def _tsv_reader(f: Any, path: Path, max_image_bytes: int) -> Iterator[list[str]]:
    """csv rows as pandas' ``read_csv(sep='\\t')`` (VLMEvalKit's reader) splits them, cells bounded."""
    limit = max(csv.field_size_limit(), (max_image_bytes * 4) // 3 + TSV_FIELD_SLACK)
    csv.field_size_limit(limit)
    try:
        yield from csv.reader(f, delimiter="\t", quotechar='"')
    except csv.Error as err:
        raise YivlError(
            f"{path}: a cell is larger than max_image_bytes allows or the TSV is malformed ({err}); "
            "raise max_image_bytes or re-export the file"
        ) from None
    except UnicodeDecodeError:
        raise YivlError(f"{path} is not UTF-8 text; give the TSV as published") from None


def _tsv_rows(path: Path, max_image_bytes: int) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_tsv(path) as f:
        rows = _tsv_reader(f, path, max_image_bytes)
        header = next(rows, None)
        if header is None:
            raise YivlError(f"{path} is empty; give a TSV with a header line and one row per question")
        for number, cells in enumerate(rows, start=1):
            if not any(c.strip() for c in cells):
                continue
            where = f"{path}:row {number}"
            if len(cells) != len(header):
                raise YivlError(
                    f"{where}: {len(cells)} cells but the header has {len(header)}; re-export the TSV"
                )
            yield where, dict(zip(header, cells, strict=True))


def _parquet_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    return sorted(path.glob("*.parquet"))


def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise YivlError(f"reading {path} needs pyarrow; pip install pyarrow") from None
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise YivlError(
            f"{path} is not a readable Parquet file ({err}); give the file as published"
        ) from None


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows read in batches of ``PARQUET_BATCH_ROWS``, so memory holds one batch of cells at a time."""
    table = _parquet_file(path)
    number = 0
    try:
        for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                number += 1
                yield f"{path}:row {number}", row
    except (OSError, ValueError) as err:
        raise YivlError(f"{path}: cannot read row {number} ({err}); give the file as published") from None


def is_missing(value: Any) -> bool:
    """An empty cell: None, '', or the text 'nan' that pandas writes and lmms-lab's tables hold."""
    return value is None or (isinstance(value, str) and value.strip() in ("", "nan", "NaN"))


def tsv_image_cells(cell: str) -> list[str]:
    """A VLMEvalKit image cell as a list of base64 strings (multi-image cells are a list literal)."""
    text = cell.strip()
    if len(text) > 1 and text[0] == "[" and text[-1] == "]":
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return [text]
        if isinstance(items, list) and all(isinstance(x, str) for x in items):
            return items
    return [text]


def decode_base64(cell: str, where: str, column: str, max_image_bytes: int) -> bytes:
    """One base64 image, checked against ``max_image_bytes`` before decoding (one-line YivlError)."""
    size = len(cell) * 3 // 4
    if size > max_image_bytes:
        raise YivlError(
            f"{where}: the {column!r} cell holds about {size} bytes, over max_image_bytes={max_image_bytes}; "
            "raise max_image_bytes or drop the row"
        )
    try:
        return base64.b64decode(cell, validate=True)
    except (binascii.Error, ValueError) as err:
        raise YivlError(
            f"{where}: the {column!r} cell is not valid base64 ({err}); re-export the row's image"
        ) from None


def parquet_image(cell: Any, where: str, column: str, max_image_bytes: int) -> tuple[bytes | None, int]:
    """(the first image's bytes, the number of images) of an HF Image cell: ``{bytes, path}``, raw
    bytes, or a list of those (SEED-Bench)."""
    cells = cell if isinstance(cell, list) else [cell]
    cells = [c for c in cells if c is not None]
    if not cells:
        return None, 0
    first = cells[0]
    data = first.get("bytes") if isinstance(first, dict) else first
    if not isinstance(data, bytes | bytearray):
        raise YivlError(
            f"{where}: the {column!r} cell has no image bytes (got {type(data).__name__}); give the "
            "Parquet file with embedded images, as the lmms-eval datasets publish them"
        )
    if len(data) > max_image_bytes:
        raise YivlError(
            f"{where}: the {column!r} cell holds {len(data)} bytes, over max_image_bytes={max_image_bytes}; "
            "raise max_image_bytes or drop the row"
        )
    return bytes(data), len(cells)
