"""The input of ``tabserve score``: a CSV or Parquet file, or a folder of part files, read
as a stream of Arrow record batches (never whole).

Part files are read in the order of their names (``part-00000``, ``part-00001``, …), so a
row's position in the input is well defined without an id column. A CSV's columns are read
as text and its numbers converted per batch (:func:`arrow_to_frame`): a value that is not a
number is then one rejected row, not a failed file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tabserve.core.frame_checks import NULL_TOKENS
from tabserve.core.schema import FeatureSchema

Format = Literal["csv", "parquet"]
SUFFIXES: dict[str, Format] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
DELIMITERS = ",;\t|"


class InputError(ValueError):
    """The input cannot be scored at all; the message names the file and says why."""


@dataclass(frozen=True)
class Piece:
    """A part of the input that one worker reads and scores alone: a CSV file's lines
    between two byte offsets (``start`` on a line's first byte, ``end`` after a line's
    newline), or a Parquet file's row group ``start``."""

    file: Path
    start: int
    end: int


@dataclass(frozen=True)
class Source:
    """A readable input: its files (in order), format, columns and size."""

    path: Path
    files: tuple[Path, ...]
    format: Format
    columns: tuple[str, ...]
    delimiter: str = ","
    rows: int | None = None  # known up front for Parquet (its footers), not for CSV
    size: int = 0  # bytes, for a CSV's progress

    def pieces(self, batch_rows: int) -> Iterator[Piece]:
        """The input cut into pieces of about ``batch_rows`` rows, in order. For a CSV
        only the cut points are read here (a seek and a look for the next newline):
        the workers read and parse the pieces themselves, in parallel."""
        for file in self.files:
            if self.format == "parquet":
                groups = pq.ParquetFile(file).metadata.num_row_groups
                yield from (Piece(file, group, group + 1) for group in range(groups))
                continue
            size = file.stat().st_size
            with file.open("rb") as handle:
                header = handle.readline()
                step = max(_bytes_per_row(handle.read(1 << 16)) * batch_rows, 1 << 12)
                start = len(header)
                while start < size:
                    handle.seek(min(start + step, size))
                    handle.readline()  # to the end of the line the cut fell in
                    end = min(handle.tell(), size)
                    yield Piece(file, start, end)
                    start = end

    def read(
        self,
        piece: Piece,
        columns: list[str],
        batch_rows: int,
        numeric: frozenset[str] = frozenset(),
    ) -> Iterator[pa.RecordBatch]:
        """A piece's rows with ``columns`` only, at most ``batch_rows`` at a time: a
        Parquet file's own types; for a CSV, the ``numeric`` columns as numbers where the
        whole piece reads so (one parse), else every column as text, for the row checks to
        name each value that is not a number.

        Raises:
            InputError: for a CSV line with too few or too many fields.
        """
        if self.format == "parquet":
            reader = pq.ParquetFile(piece.file)
            yield from reader.iter_batches(
                batch_size=batch_rows, row_groups=[piece.start], columns=columns
            )
            return
        with piece.file.open("rb") as handle:
            header = handle.readline()
            handle.seek(piece.start)
            data = header + handle.read(piece.end - piece.start)
        typed = {c: pa.float64() if c in numeric else pa.string() for c in columns}
        try:
            table = self._parse(data, columns, typed)
        except pa.ArrowInvalid:  # a value that is not a number, or a malformed line
            try:
                table = self._parse(data, columns, dict.fromkeys(columns, pa.string()))
            except pa.ArrowInvalid as exc:  # a line with too few or too many fields
                # Arrow counts rows from the piece's start, not the file's: dropped.
                reason = re.sub(r"Row #\d+: ", "", str(exc))
                raise InputError(
                    f"{piece.file}: not a readable CSV (after byte {piece.start:,}): {reason}"
                ) from None
        yield from table.combine_chunks().to_batches(max_chunksize=batch_rows)

    def _parse(self, data: bytes, columns: list[str], types: dict[str, pa.DataType]) -> pa.Table:
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=self.delimiter),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types=types,
                null_values=sorted(NULL_TOKENS),
                strings_can_be_null=True,
            ),
        )

    def estimated_rows(self) -> int | None:
        """The row count: exact for Parquet, estimated for a CSV from its size and its
        first lines' width (None for a file of fewer than two lines)."""
        if self.rows is not None:
            return self.rows
        with self.files[0].open("rb") as handle:
            head = handle.read(1 << 16)
        if head.count(b"\n") < 2:
            return None
        return max(self.size // _bytes_per_row(head) - len(self.files), 1)

    def batches(self, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The whole input's rows, in order, at most ``batch_rows`` at a time."""
        for piece in self.pieces(batch_rows):
            yield from self.read(piece, columns, batch_rows)


def _bytes_per_row(sample: bytes) -> int:
    """The mean length of the lines in ``sample`` (a file's first rows)."""
    lines = sample.count(b"\n")
    return max(len(sample) // max(lines, 1), 16)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(("_", "."))
        )
        if not files:
            raise InputError(f"{path}: a folder with no .csv or .parquet part files")
        return files
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path}: not a .csv or .parquet file (or a folder of them)")
    return [path]


def sniff_delimiter(file: Path) -> str:
    """The delimiter of a CSV file (``,`` ``;`` tab or ``|``), from its first lines."""
    with file.open("r", encoding="utf-8-sig", errors="replace", newline="") as handle:
        head = handle.read(1 << 16)
    try:
        return csv.Sniffer().sniff(head, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def open_source(path: str | Path, delimiter: str | None = None) -> Source:
    """Find and check the input: its files exist, share one format, can be read, and
    have a header.

    Raises:
        InputError: naming the file and the reason.
    """
    root = Path(path)
    files = _files(root)
    formats = {SUFFIXES[f.suffix.lower()] for f in files}
    if len(formats) > 1:
        raise InputError(f"{root}: mixes CSV and Parquet part files")
    kind = formats.pop()
    rows: int | None = None
    size = sum(f.stat().st_size for f in files)
    if kind == "parquet":
        schemas = []
        rows = 0
        for file in files:
            try:
                meta = pq.ParquetFile(file)
            except (pa.ArrowException, OSError) as exc:
                raise InputError(f"{file}: not a readable Parquet file ({exc})") from None
            schemas.append(meta.schema_arrow)
            rows += meta.metadata.num_rows
        columns = tuple(schemas[0].names)
        for file, schema in zip(files, schemas, strict=True):
            if tuple(schema.names) != columns:
                raise InputError(
                    f"{root}: the part files do not all have the same columns "
                    f"({files[0].name}: {len(columns)}, {file.name}: {len(schema.names)})"
                )
        return Source(root, tuple(files), kind, columns, rows=rows, size=size)
    sep = delimiter or sniff_delimiter(files[0])
    headers = []
    for file in files:
        try:
            with file.open("r", encoding="utf-8-sig", newline="") as handle:
                header = next(csv.reader(handle, delimiter=sep), None)
        except UnicodeDecodeError:
            raise InputError(f"{file}: not UTF-8 text") from None
        if not header:
            raise InputError(f"{file}: empty (a header line is needed)")
        with file.open("rb") as handle:
            first_line = handle.readline(1 << 20)
        if not first_line.endswith(b"\n") and b"\r" in first_line.rstrip(b"\r"):
            raise InputError(
                f"{file}: no line break (\\n) after the header: lines ending in a bare CR "
                "(old Mac files) are not read; convert them to LF or CRLF"
            )
        headers.append(tuple(header))
    if any(h != headers[0] for h in headers):
        raise InputError(f"{root}: the part files do not all have the same header")
    dupes = sorted({c for c in headers[0] if headers[0].count(c) > 1})
    if dupes:
        raise InputError(f"{files[0]}: duplicate column names: {', '.join(dupes)}")
    return Source(root, tuple(files), kind, headers[0], delimiter=sep, size=size)


def arrow_to_frame(batch: pa.RecordBatch, schema: FeatureSchema | None) -> pd.DataFrame:
    """A batch as a pandas frame, the numeric features of a text batch converted by Arrow
    (a batch with a value that is not a number keeps that column as text, for the row
    check to name it)."""
    if schema is not None:
        numeric = numeric_features(schema)
        arrays = []
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if pa.types.is_string(column.type) and name in numeric:
                column = _as_numbers(column)
            arrays.append(column)
        batch = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
    return batch.to_pandas()


def _as_numbers(column: pa.Array) -> pa.Array:
    """Text as float64 where all of it reads as numbers (surrounding spaces allowed), else
    as it is: the row checks then name each value that is not a number."""
    try:
        return pc.cast(column, pa.float64())
    except pa.ArrowInvalid:
        pass
    try:
        return pc.cast(pc.utf8_trim_whitespace(column), pa.float64())
    except pa.ArrowInvalid:
        return column


def numeric_features(schema: FeatureSchema | None) -> frozenset[str]:
    """The names of ``schema``'s numeric features (none without a schema)."""
    return (
        frozenset(s.name for s in schema.features if s.kind == "numeric") if schema else frozenset()
    )
