"""The Spark engine of ``tabserve score``: the registered model as a Spark UDF.

Spark reads the input with its own readers, checks each row by the service's rules
(:func:`~tabserve.core.frame_checks.check_frame`, in ``mapInPandas`` on the executors),
scores the good rows with ``mlflow.pyfunc.spark_udf`` over the same model URI, and writes
the answers and the rejects as Parquet folders through Spark's commit protocol. Nothing is
collected to the driver but a count per input split (for row positions) and the totals.

``local[*]`` by default; any master (standalone, YARN, Kubernetes) by ``--master``. The
executors need the model's Python environment and the ``tabserve`` package, whose row
checks they run (the docs' "Batch scoring" page has the recipe).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.accumulators import AccumulatorParam

from tabserve.batch.local import POSITION_COLUMN
from tabserve.batch.model import VERSION_COLUMN, ScoringModel
from tabserve.batch.progress import Summary, rejects_path
from tabserve.batch.sources import InputError, Source
from tabserve.core.frame_checks import NULL_TOKENS, Policy, check_frame
from tabserve.core.schema import FeatureSchema, schema_from_json

REJECT_COLUMNS_FIELD = "_reject_columns"
REJECT_REASONS_FIELD = "_reject_reasons"


def session(master: str) -> Any:
    """A Spark session for scoring (no UI; executors run this interpreter in local mode)."""
    from pyspark.sql import SparkSession

    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName("tabserve score")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Timestamps reach the row checks and the model as the local engine reads them
        # (UTC), whatever the machine's time zone.
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )


def _read(spark: Any, source: Source, columns: list[str]) -> Any:
    paths = [str(f.resolve()) for f in source.files]
    if source.format == "parquet":
        frame = spark.read.parquet(*paths)
    else:  # every column as text, as the local engine reads it
        frame = spark.read.options(
            header=True,
            sep=source.delimiter,
            encoding="UTF-8",
            mode="FAILFAST",
            escape='"',  # RFC 4180 (and Arrow's): a quote in a value is doubled
        ).csv(paths)
    return frame.select(*[f"`{c}`" for c in dict.fromkeys(columns)], "_metadata")


def _with_positions(frame: Any) -> Any:
    """Add ``row``: each row's position in the input (files in name order), without a
    shuffle of the data: a count per input split, offsets from those counts."""
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    marked = frame.select(
        "*",
        sf.col("_metadata.file_path").alias("_file"),
        sf.col("_metadata.file_block_start").alias("_block"),
        sf.monotonically_increasing_id().alias("_id"),
    ).drop("_metadata")
    splits = marked.groupBy("_file", "_block").agg(
        sf.min("_id").alias("_first_id"), sf.count(sf.lit(1)).alias("_rows")
    )
    order = Window.orderBy("_file", "_block")  # one row per split: small
    splits = splits.withColumn("_offset", sf.sum("_rows").over(order) - sf.col("_rows"))
    return (
        marked.join(sf.broadcast(splits), ["_file", "_block"])
        .withColumn(POSITION_COLUMN, sf.col("_offset") + sf.col("_id") - sf.col("_first_id"))
        .drop("_file", "_block", "_id", "_first_id", "_rows", "_offset")
    )


class CountsParam(AccumulatorParam):
    """Counts per name, summed over the executors' tasks (a Spark accumulator)."""

    def zero(self, value: dict[str, int]) -> dict[str, int]:
        return {}

    def addInPlace(self, total: dict[str, int], more: dict[str, int]) -> dict[str, int]:  # noqa: N802 (Spark's name)
        for name, count in more.items():
            total[name] = total.get(name, 0) + count
        return total


def _checker(
    schema_json: str,
    policy: Policy,
    whole: list[str],
    key: str,
    text_input: bool,
    unknown: Any = None,
) -> Any:
    """The ``mapInPandas`` function: each batch checked, features as the model reads them,
    and per row the columns at fault and the reasons (empty for a good row); the
    categories never seen in training counted in ``unknown`` (an accumulator), if given."""

    def check(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        schema = schema_from_json(schema_json)
        for frame in batches:
            if text_input:  # a CSV's null tokens, as the local engine's reader reads them
                frame = frame.mask(frame.isin(NULL_TOKENS), None)
            checked = check_frame(schema, frame, policy, whole)
            if unknown is not None and checked.unknown:
                unknown.add(checked.unknown)
            out = pd.DataFrame({key: frame[key].to_numpy()})
            for spec in schema.features:
                out[spec.name] = _spark_values(spec, checked.clean[spec.name])
            columns: list[list[str]] = [[] for _ in range(len(frame))]
            reasons: list[list[str]] = [[] for _ in range(len(frame))]
            for position, column, reason in checked.rejects.itertuples(index=False):
                columns[position].append(column)
                reasons[position].append(reason)
            out[REJECT_COLUMNS_FIELD] = columns
            out[REJECT_REASONS_FIELD] = reasons
            yield out

    return check


def _spark_values(spec: Any, values: pd.Series) -> Any:
    """A checked column as Spark takes it: numbers as doubles, the rest as text (a date in
    ISO 8601, which the model reads back to the same value)."""
    if spec.kind == "numeric":
        return values.to_numpy(dtype=np.float64)
    if spec.is_when:
        written = values.dt.strftime("%Y-%m-%d" if spec.kind == "date" else "%Y-%m-%dT%H:%M:%S.%f")
        return written.astype("object").where(values.notna(), None).to_numpy()
    return values.astype("object").where(values.notna(), None).to_numpy()


def _output_schema(schema: FeatureSchema, frame: Any, key: str) -> Any:
    from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

    fields = [frame.schema[key]]
    for spec in schema.features:
        kind = DoubleType() if spec.kind == "numeric" else StringType()
        fields.append(StructField(spec.name, kind, True))
    fields.append(StructField(REJECT_COLUMNS_FIELD, ArrayType(StringType()), False))
    fields.append(StructField(REJECT_REASONS_FIELD, ArrayType(StringType()), False))
    return StructType(fields)


def score_spark(
    source: Source,
    model: ScoringModel,
    output: str,
    *,
    id_column: str | None,
    policy: Policy,
    master: str = "local[*]",
    overwrite: bool = False,
) -> Summary:
    """Score ``source`` into the Parquet folder ``output`` (rejects in a folder beside it)."""
    import mlflow.pyfunc
    from pyspark import StorageLevel
    from pyspark.sql import functions as sf

    if model.schema is None:
        raise ValueError("the Spark engine scores tabserve models (with a FeatureSchema) only")
    started = time.monotonic()
    schema = model.schema
    key = id_column or POSITION_COLUMN
    present = [c for c in source.columns if c in set(schema.feature_names)]
    spark = session(master)
    spark.sparkContext.setLogLevel("ERROR")  # Spark's own warnings would drown the summary
    frame = _read(spark, source, [*present, *([id_column] if id_column else [])])
    frame = _with_positions(frame) if id_column is None else frame.drop("_metadata")
    unknown = spark.sparkContext.accumulator({}, CountsParam())
    checker = _checker(
        schema.to_json(), policy, sorted(model.whole), key, source.format == "csv", unknown
    )

    checked = frame.mapInPandas(checker, _output_schema(schema, frame, key)).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    good = checked.where(sf.size(REJECT_COLUMNS_FIELD) == 0)
    features = [_as_signature_type(model, name) for name in schema.feature_names]
    predict = mlflow.pyfunc.spark_udf(
        spark, model.resolved or model.uri, result_type=model.output_ddl, env_manager="local"
    )
    answers = good.select(sf.col(f"`{key}`"), predict(sf.struct(*features)).alias("_answer"))
    answers = answers.select(f"`{key}`", "_answer.*", sf.lit(model.version).alias(VERSION_COLUMN))
    rejects = checked.where(sf.size(REJECT_COLUMNS_FIELD) > 0).select(
        sf.col(f"`{key}`"),
        sf.explode(sf.arrays_zip(REJECT_COLUMNS_FIELD, REJECT_REASONS_FIELD)).alias("_r"),
    )
    rejects = rejects.select(
        f"`{key}`",
        sf.col(f"_r.{REJECT_COLUMNS_FIELD}").alias("column"),
        sf.col(f"_r.{REJECT_REASONS_FIELD}").alias("reason"),
    )
    rejected_output = rejects_path(output)
    try:
        # The rejects first: an OUTPUT in place always has its rejects beside it.
        rejected = checked.where(sf.size(REJECT_COLUMNS_FIELD) > 0).count()
        if rejected:
            _write(rejects, rejected_output, overwrite)
        _write(answers, output, overwrite)
    except Exception as exc:  # Spark's own error, for a person: its first line
        if "Malformed" not in str(exc):
            raise
        raise InputError(f"{source.path}: not a readable CSV (a malformed line)") from None
    total = checked.count()
    checked.unpersist()
    summary = Summary(output, model.version, f"Spark engine, {master}")
    summary.rows, summary.rejected_rows, summary.scored = total, rejected, total - rejected
    summary.rejects = rejected_output if rejected else None
    # Counted once per row: the checked rows are persisted, so no task runs twice unless
    # Spark must recompute a lost partition.
    summary.unknown = dict(unknown.value)
    summary.seconds = time.monotonic() - started
    return summary


def _as_signature_type(model: ScoringModel, name: str) -> Any:
    """A checked column as the model's signature types it (MLflow's check refuses text
    for a ``long`` column, as a categorical feature whose training values were numbers
    is): numbers as doubles or whole numbers, a category as its training type (a value
    that is no number there is one never seen in training: missing, as locally)."""
    from pyspark.sql import functions as sf

    column = sf.col(f"`{name}`")
    declared = model.input_types.get(name, "any")
    if model.schema is not None and model.schema.feature(name).kind == "numeric":
        return column.cast("long" if name in model.whole else "double").alias(name)
    spark_type = {"long": "long", "integer": "int", "double": "double", "float": "float"}
    spark_type |= {"boolean": "boolean"}
    if declared in spark_type:
        return column.cast(spark_type[declared]).alias(name)
    return column


def _write(frame: Any, output: str, overwrite: bool = False) -> None:
    """Write ``frame`` as Parquet at ``output``: a local folder under a temporary name,
    moved into place once Spark has committed it; elsewhere Spark's commit protocol alone
    (the folder's ``_SUCCESS`` marks it complete), refusing an existing one unless
    ``overwrite``."""
    if "://" in output:
        frame.write.mode("overwrite" if overwrite else "errorifexists").parquet(output)
        return
    final = Path(output)
    temp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        frame.write.mode("overwrite").parquet(str(temp.resolve()))
        os.replace(temp, final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
