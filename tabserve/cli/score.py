"""``tabserve score``: the registered model over a file or a folder of part files.

Everything that can stop a run is checked before any work: the output (refused when it
exists, unless ``--overwrite``), the input (readable, one format, a header), the model
(found and loaded) and the columns (every required feature and the id column present).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

EMBEDDED_TRACKING = Path("mlruns") / "mlflow.db"
# Nothing of tabserve.batch is imported to build the parser: the service's image builds it
# too (its entrypoint is this command), and has no MLflow or pyarrow.
DEFAULT_MODEL = "models:/tabserve@champion"


def add_parser(commands: Any) -> None:
    """Add ``score`` to the ``tabserve`` command's subcommands."""
    score = commands.add_parser(
        "score",
        help="score a CSV or Parquet file (or a folder of parts) with the registered model",
        description="Score a CSV or Parquet file, or a folder of part files, with an MLflow "
        "model: on this machine in bounded memory (--engine local), or as a Spark UDF "
        "(--engine spark). Writes Parquet: the row key, the answer columns and the model "
        "version; rows that fail the service's checks go to a rejects file beside OUTPUT.",
        epilog="The MLflow tracking and registry URI come from MLFLOW_TRACKING_URI (in the "
        "project's folder, its embedded store mlruns/mlflow.db when unset). A category never "
        "seen in training is read as missing, or rejected with "
        "TABSERVE_UNKNOWN_CATEGORY=refuse.",
    )
    score.add_argument(
        "input", type=Path, metavar="INPUT", help="a .csv or .parquet file, or a folder of them"
    )
    score.add_argument(
        "output",
        metavar="OUTPUT",
        help="the Parquet output: a file (local engine) or a folder of parts (Spark)",
    )
    score.add_argument(
        "--model", default=DEFAULT_MODEL, help="an MLflow model URI (default: %(default)s)"
    )
    score.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local: this machine, in bounded memory; spark: a Spark UDF (default: %(default)s)",
    )
    score.add_argument(
        "--master",
        default=os.environ.get("SPARK_MASTER", "local[*]"),
        help="Spark master URL, with --engine spark (default: $SPARK_MASTER or %(default)s)",
    )
    score.add_argument(
        "--id-column",
        default=None,
        help="an input column that identifies each row, kept in the output and the rejects "
        "(default: the row's position in the input, as `row`)",
    )
    score.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="local engine: scoring processes, one XGBoost thread each (default: the "
        "usable cores, %(default)s)",
    )
    score.add_argument(
        "--batch-rows",
        type=int,
        default=32768,
        help="local engine: rows read and scored at a time (default: %(default)s)",
    )
    score.add_argument(
        "--delimiter", default=None, help="a CSV's delimiter (default: sniffed from the file)"
    )
    score.add_argument(
        "--overwrite", action="store_true", help="replace OUTPUT (and its rejects) if they exist"
    )
    score.set_defaults(handler=run, needs_settings=False)


def _fail(message: str) -> int:
    print(f"tabserve score: error: {message}", file=sys.stderr)
    return 2


def run(settings: Any, args: argparse.Namespace) -> int:
    """The ``score`` command (``settings``: None, scoring needs none of the service's)."""
    try:
        from tabserve.batch.model import ModelError, load_scoring_model, unknown_policy
        from tabserve.batch.progress import rejects_path
        from tabserve.batch.sources import InputError, open_source
        from tabserve.core.frame_checks import absent_required
    except ImportError as exc:  # the service's image has no MLflow or pyarrow
        return _fail(f"scoring needs the training dependencies (uv sync --group training): {exc}")
    if args.workers < 1 or args.batch_rows < 1:
        return _fail("--workers and --batch-rows must be at least 1")
    output = str(args.output)
    remote = "://" in output
    if args.engine == "local" and not output.endswith((".parquet", ".pq")):
        return _fail(f"{output}: the local engine writes one Parquet file (name it .parquet)")
    if not remote and not args.overwrite:
        for path in (output, rejects_path(output)):
            if Path(path).exists():
                return _fail(f"{path} exists; pass --overwrite to replace it")
    # MLflow's per-file download bar would drown the scoring progress.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not os.environ.get("MLFLOW_TRACKING_URI") and EMBEDDED_TRACKING.exists():
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{EMBEDDED_TRACKING.resolve()}"
    try:
        policy = unknown_policy()
        source = open_source(args.input, args.delimiter)
        model = load_scoring_model(args.model)
    except (InputError, ModelError) as exc:
        return _fail(str(exc))
    if args.engine == "spark" and model.schema is None:
        return _fail(f"the Spark engine scores tabserve models only; {args.model} has no schema")
    if args.id_column is not None and args.id_column not in source.columns:
        return _fail(f"{args.input} has no column {args.id_column!r} (--id-column)")
    if model.schema is not None:
        absent = absent_required(model.schema, source.columns)
    else:
        absent = [c for c in model.inputs if c not in source.columns]
    if absent:
        return _fail(
            f"{args.input} lacks {len(absent)} column(s) the model requires in every row: "
            f"{', '.join(absent)}"
        )
    if not remote and args.overwrite:
        for stale in (Path(output), Path(rejects_path(output))):
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink(missing_ok=True)
    if not remote:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    try:
        summary = _run_engine(args, source, model, output, policy)
    except InputError as exc:  # found mid-run (a malformed CSV line): nothing was written
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("tabserve score: interrupted; no output written", file=sys.stderr)
        return 130
    print(summary.text())
    return 0


def _run_engine(args: argparse.Namespace, source: Any, model: Any, output: str, policy: Any) -> Any:
    from tabserve.batch.progress import Progress

    if args.engine == "spark":
        from tabserve.batch.spark import score_spark

        return score_spark(
            source,
            model,
            output,
            id_column=args.id_column,
            policy=policy,
            master=args.master,
            overwrite=args.overwrite,
        )
    from tabserve.batch.local import score_local

    return score_local(
        source,
        model,
        Path(output),
        id_column=args.id_column,
        policy=policy,
        workers=args.workers,
        batch_rows=args.batch_rows,
        progress=Progress(source.estimated_rows(), estimated=source.rows is None),
    )
