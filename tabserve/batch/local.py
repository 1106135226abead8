"""The local engine of ``tabserve score``: a file of any size on one machine, in bounded
memory.

The input is cut into pieces (:meth:`~tabserve.batch.sources.Source.pieces`: a CSV at
line ends by byte offset, a Parquet file by row group); each piece is read, checked row
by row (:func:`~tabserve.core.frame_checks.check_frame`), its good rows scored by the
model, and the answers appended to the output in input order. With ``workers`` above
one, the pieces are read and scored by that many forked processes (the model loaded
once, before the fork; one XGBoost thread each) while this process only cuts the input
and writes; at most two pieces per worker are in flight, so memory stays flat whatever
the input's size.

The output is written under a temporary name beside it and renamed when complete: an
interrupted run leaves no file that looks finished.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tabserve.batch.model import VERSION_COLUMN, ScoringModel
from tabserve.batch.progress import Progress, Summary, rejects_path
from tabserve.batch.sources import Piece, Source, arrow_to_frame, numeric_features
from tabserve.core.frame_checks import Policy, check_frame

POSITION_COLUMN = "row"


@dataclass
class Chunk:
    """One scored batch: its answers (key, answer columns, model version) and rejects."""

    scored: pa.Table
    rejects: pa.Table
    rows: int
    rejected_rows: int
    unknown: dict[str, int] = field(default_factory=dict)


def _keys(batch: pa.RecordBatch, id_column: str | None, first: int) -> pa.Array:
    """The rows' keys, as Arrow holds them (a missing id stays null, an int64 id stays
    exact): ``id_column``'s values, or the rows' positions from ``first``."""
    if id_column is not None:
        return batch.column(batch.schema.get_field_index(id_column))
    return pa.array(np.arange(first, first + batch.num_rows, dtype=np.int64))


def score_batch(
    model: ScoringModel,
    batch: pa.RecordBatch,
    first: int,
    id_column: str | None,
    policy: Policy,
) -> Chunk:
    """Check and score one batch whose first row is row ``first`` of the input."""
    frame = arrow_to_frame(batch, model.schema)
    key_name = id_column or POSITION_COLUMN
    keys = _keys(batch, id_column, first)
    unknown: dict[str, int] = {}
    if model.schema is not None:
        checked = check_frame(model.schema, frame, policy, model.whole)
        good = checked.good
        features = checked.clean  # every row good: the common case, no copy
        if not good.all():
            features = features.loc[good].reset_index(drop=True)
        positions = pa.array(checked.rejects["position"].to_numpy(dtype=np.int64))
        rejects = pa.table(
            {
                key_name: keys.take(positions),
                "column": pa.array(checked.rejects["column"].tolist(), pa.string()),
                "reason": pa.array(checked.rejects["reason"].tolist(), pa.string()),
            }
        )
        # The tabserve model's own predict, past MLflow's signature enforcement: the rows
        # were checked above, by the service's rules.
        answers = (
            model.pyfunc.unwrap_python_model().predict(None, features) if len(features) else None
        )
        unknown = checked.unknown
    else:
        good = np.ones(len(frame), dtype=bool)
        rejects = pa.table(
            {key_name: keys.slice(0, 0), "column": pa.array([], pa.string()), "reason": []}
        )
        answers = model.pyfunc.predict(frame[model.inputs]) if len(frame) else None
    columns: dict[str, Any] = {key_name: keys.filter(pa.array(good))}
    for name, kind in model.outputs:
        values = answers[name].to_numpy() if answers is not None else []
        columns[name] = pa.array(values, type=kind, from_pandas=True)
    count = int(good.sum())
    columns[VERSION_COLUMN] = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(count, dtype=np.int32)), pa.array([model.version])
    )
    return Chunk(
        scored=pa.table(columns),
        rejects=rejects,
        rows=len(frame),
        rejected_rows=len(frame) - count,
        unknown=unknown,
    )


@dataclass(frozen=True)
class Job:
    """What every piece is scored with (a forked worker inherits it)."""

    source: Source
    model: ScoringModel
    columns: list[str]
    id_column: str | None
    policy: Policy
    batch_rows: int


def score_piece(job: Job, piece: Piece) -> list[Chunk]:
    """Read, check and score one piece of the input; a row's key is its position in the
    piece until :func:`_positioned` adds the piece's first row."""
    numeric = numeric_features(job.model.schema)
    return [
        score_batch(job.model, batch, 0, job.id_column, job.policy)
        for batch in job.source.read(piece, job.columns, job.batch_rows, numeric)
    ]


# The job a forked worker scores: set in the parent before the pool forks.
_WORKER: dict[str, Job] = {}


def _score_in_worker(piece: Piece) -> list[Chunk]:
    return score_piece(_WORKER["job"], piece)


def _positioned(chunk: Chunk, first: int) -> Chunk:
    """``chunk`` with its positions made the input's (``first``: its first row's)."""
    if first:
        for name in ("scored", "rejects"):
            table = getattr(chunk, name)
            column = pc.add(table.column(POSITION_COLUMN), pa.scalar(first, pa.int64()))
            setattr(chunk, name, table.set_column(0, POSITION_COLUMN, column))
    return chunk


class AtomicParquet:
    """A Parquet file written under a temporary name and renamed into place on
    :meth:`commit` (never left looking complete when the run stops half-way)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.temp = final.with_name(f".{final.name}.partial-{os.getpid()}")
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (the first one fixes the schema)."""
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.temp, table.schema, compression="snappy")
        elif table.schema != self.writer.schema:  # e.g. an id column typed by its batch
            table = table.cast(self.writer.schema)
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows += table.num_rows

    def commit(self, schema: pa.Schema) -> None:
        """Close and move into place (an empty file with ``schema`` if nothing came)."""
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.temp, schema, compression="snappy")
        self.writer.close()
        os.replace(self.temp, self.final)

    def abort(self) -> None:
        """Drop the temporary file."""
        if self.writer is not None:
            self.writer.close()
        self.temp.unlink(missing_ok=True)


def _chunks(job: Job, workers: int) -> Iterator[Chunk]:
    """Scored chunks in input order, from ``workers`` forked processes (or this one),
    each reading its own pieces: this process only cuts the input and writes."""
    pieces = job.source.pieces(job.batch_rows)
    if workers <= 1:
        scored: Iterator[list[Chunk]] = (score_piece(job, piece) for piece in pieces)
        yield from _in_order(scored, job.id_column)
        return
    _WORKER["job"] = job
    # The workers share the parent's pages (MLflow, pandas, the model: about 500 MiB) until
    # they write to them; the cyclic GC's passes over old objects would write to all of them.
    gc.collect()
    gc.freeze()
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_leave_interrupts)
    try:
        yield from _in_order(_bounded(pool, pieces, 2 * workers), job.id_column)
    finally:  # on Ctrl-C too: the pieces not started are dropped, the running ones end
        pool.shutdown(wait=True, cancel_futures=True)


def _leave_interrupts() -> None:
    """In a worker: Ctrl-C is the first process's to handle (one message, no traceback
    per worker); it stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _bounded(
    pool: ProcessPoolExecutor, pieces: Iterator[Piece], in_flight: int
) -> Iterator[list[Chunk]]:
    """The pool's results in submission order, at most ``in_flight`` pieces at a time."""
    pending: deque[Future[list[Chunk]]] = deque()
    for piece in pieces:
        pending.append(pool.submit(_score_in_worker, piece))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _in_order(results: Iterator[list[Chunk]], id_column: str | None) -> Iterator[Chunk]:
    first = 0
    for chunks in results:
        for chunk in chunks:
            yield chunk if id_column is not None else _positioned(chunk, first)
            first += chunk.rows


def score_local(
    source: Source,
    model: ScoringModel,
    output: Path,
    *,
    id_column: str | None,
    policy: Policy,
    workers: int = 1,
    batch_rows: int = 32768,
    progress: Progress | None = None,
) -> Summary:
    """Score ``source`` into the Parquet file ``output`` (rejects beside it)."""
    started = time.monotonic()
    columns = [c for c in source.columns if c in set(model.inputs) or c == id_column]
    rejected_file = Path(rejects_path(output))
    rejected_file.unlink(missing_ok=True)  # a previous run's, not this one's
    answers, rejects = AtomicParquet(output), AtomicParquet(rejected_file)
    summary = Summary(
        str(output), model.version, f"local engine, {workers} worker{'s' if workers > 1 else ''}"
    )
    schema: pa.Schema | None = None
    try:
        job = Job(source, model, columns, id_column, policy, batch_rows)
        for chunk in _chunks(job, workers):
            schema = chunk.scored.schema
            if chunk.scored.num_rows:
                answers.write(chunk.scored)
            if chunk.rejects.num_rows:
                rejects.write(chunk.rejects)
            summary.rows += chunk.rows
            summary.scored += chunk.scored.num_rows
            summary.rejected_rows += chunk.rejected_rows
            for name, count in chunk.unknown.items():
                summary.unknown[name] = summary.unknown.get(name, 0) + count
            if progress is not None:
                progress.update(chunk.rows)
        if schema is None:
            schema = _empty_schema(model, id_column)
        # The rejects first: an OUTPUT in place always has its rejects beside it.
        if rejects.writer is not None:
            rejects.commit(rejects.writer.schema)
            summary.rejects = str(rejected_file)
        answers.commit(schema)
    except BaseException:
        answers.abort()
        rejects.abort()
        raise
    finally:
        if progress is not None:
            progress.close()
    summary.seconds = time.monotonic() - started
    return summary


def _empty_schema(model: ScoringModel, id_column: str | None) -> pa.Schema:
    fields = [pa.field(id_column or POSITION_COLUMN, pa.int64())]
    fields += [pa.field(name, kind) for name, kind in model.outputs]
    fields.append(pa.field(VERSION_COLUMN, pa.dictionary(pa.int32(), pa.string())))
    return pa.schema(fields)
