"""``make bench-score``: ``tabserve score`` against what a user writes by hand.

On the benchmark's ``categorical`` profile (breast-cancer rows as a mixed table: 14
numbers, 6 text columns, missing values; its registered MLflow model), a CSV of N rows is
built by repeating the rows, then scored by, one after the other, on the same file:

- ``by hand``: ``mlflow.pyfunc.load_model(uri).predict(pd.read_csv(path)).to_parquet(...)``;
- ``local, 1 worker`` and ``local, 2 workers``: ``tabserve score --engine local``;
- ``spark, local[2]``: ``tabserve score --engine spark`` (two cores).

Each runs as its own process; its wall time (model loading included) and the peak of the
summed resident memory (PSS) of its process tree (sampled every 0.1 s: the JVM and
Python workers for Spark) are recorded, with the ratios against ``by hand`` in
``load_tests/results/score/report.md``.

    python -m load_tests.score_bench --rows 1000000,10000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "load_tests" / "results" / "score"
BY_HAND = """
import sys, mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
model.predict(pd.read_csv(sys.argv[2])).to_parquet(sys.argv[3])
"""


def build_input(rows: int, folder: Path) -> Path:
    """A CSV of ``rows`` rows of the categorical profile's features (built once)."""
    import pandas as pd

    from load_tests.profile_models import categorical_frame

    path = folder / f"input-{rows}.csv"
    if path.exists():
        return path
    base = categorical_frame().drop(columns=["diagnosis"])
    block = pd.concat([base] * (100_000 // len(base) + 1), ignore_index=True).head(100_000)
    temp = path.with_suffix(".partial")
    with temp.open("w") as handle:
        written = 0
        while written < rows:
            part = block.head(rows - written)
            part.to_csv(handle, index=False, header=written == 0)
            written += len(part)
    temp.rename(path)
    return path


def measure(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``command``; its wall time and the peak of its process tree's summed
    proportional set size (PSS: resident memory, shared pages split among sharers)."""
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        total = 0
        with contextlib.suppress(psutil.Error):
            for process in [root, *root.children(recursive=True)]:
                # PSS: pages a forked worker shares with its parent counted once.
                with contextlib.suppress(psutil.Error):
                    total += process.memory_full_info().pss
        peak = max(peak, total)
        time.sleep(0.1)
    seconds = time.monotonic() - started
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{err.decode()[-2000:]}")
    return {"seconds": seconds, "peak_rss_mib": peak / 2**20, "stdout": out.decode()[-400:]}


def run(rows_list: list[int], spark: bool) -> dict[str, Any]:
    """Every contender on every size; the results as a dict."""
    from load_tests.profiles import build_profile

    OUT.mkdir(parents=True, exist_ok=True)
    profile = build_profile("categorical", REPO / "load_tests" / "results" / "profiles")
    uri = profile.mlflow_model
    env = dict(os.environ, MLFLOW_TRACKING_URI=profile.mlflow_tracking_uri)
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    tabserve = [sys.executable, "-m", "tabserve.cli", "score"]
    results: dict[str, Any] = {"model": uri, "cores": len(os.sched_getaffinity(0)), "runs": {}}
    for rows in rows_list:
        path = build_input(rows, OUT)
        target = OUT / "scores.parquet"
        contenders = {
            "by hand": [sys.executable, "-c", BY_HAND, uri, str(path), str(target)],
            "local, 1 worker": [
                *tabserve,
                str(path),
                str(target),
                "--model",
                uri,
                "--workers",
                "1",
                "--overwrite",
            ],
            "local, 2 workers": [
                *tabserve,
                str(path),
                str(target),
                "--model",
                uri,
                "--workers",
                "2",
                "--overwrite",
            ],
        }
        if spark:
            contenders["spark, local[2]"] = [
                *tabserve,
                str(path),
                str(OUT / "scores-spark"),
                "--model",
                uri,
                "--engine",
                "spark",
                "--master",
                "local[2]",
                "--overwrite",
            ]
        measured = {}
        for name, command in contenders.items():
            print(f"{rows:,} rows: {name} ...", file=sys.stderr, flush=True)
            measured[name] = measure(command, env)
            print(
                f"  {measured[name]['seconds']:.1f} s, peak "
                f"{measured[name]['peak_rss_mib']:,.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
        results["runs"][str(rows)] = measured
    return results


def spark_breakdown(rows: int) -> str:
    """Where the Spark engine's time goes, on ``rows`` rows: each step added in turn to a
    plain read-and-write of the same CSV, timed as its own Spark job (local[2])."""
    import mlflow.pyfunc
    from pyspark.sql import functions as sf

    from load_tests.profiles import build_profile
    from tabserve.batch import spark as engine
    from tabserve.batch.model import load_scoring_model
    from tabserve.batch.sources import open_source

    profile = build_profile("categorical", REPO / "load_tests" / "results" / "profiles")
    os.environ["MLFLOW_TRACKING_URI"] = profile.mlflow_tracking_uri
    model = load_scoring_model(profile.mlflow_model)
    assert model.schema is not None
    source = open_source(build_input(rows, OUT))
    present = [c for c in source.columns if c in set(model.inputs)]
    spark = engine.session("local[2]")
    read = engine._read(spark, source, present)
    positioned = engine._with_positions(read)
    checker = engine._checker(model.schema.to_json(), "missing", [], "row", True)
    checked = positioned.mapInPandas(
        checker, engine._output_schema(model.schema, positioned, "row")
    )
    predict = mlflow.pyfunc.spark_udf(
        spark, model.uri, result_type=model.output_ddl, env_manager="local"
    )
    features = [
        sf.col(f"`{n}`").cast("double").alias(n)
        if model.schema.feature(n).kind == "numeric"
        else sf.col(f"`{n}`")
        for n in model.schema.feature_names
    ]
    steps = {
        "read the CSV, write Parquet (JVM only)": read.drop("_metadata"),
        "+ row positions (a count per split, a join)": positioned,
        "+ row checks (mapInPandas: JVM → Arrow → pandas and back)": checked,
        "+ the model (spark_udf: the same trip again)": checked.select(
            "row", predict(sf.struct(*features)).alias("a")
        ),
    }
    lines = [f"Spark engine's steps, {rows:,} rows, local[2]:", ""]
    lines += ["| step | seconds |", "|---|---:|"]
    for name, frame in steps.items():
        started = time.monotonic()
        frame.write.mode("overwrite").parquet(str(OUT / "breakdown"))
        lines.append(f"| {name} | {time.monotonic() - started:.1f} |")
    spark.stop()
    return "\n".join(lines) + "\n"


def report(results: dict[str, Any]) -> str:
    """The results as a Markdown table, ratios against ``by hand``."""
    lines = [
        f"Model `{results['model']}` (the categorical profile), {results['cores']} cores; "
        "wall time includes loading the model.",
        "",
        "| rows | contender | seconds | rows/s | speed vs by hand | peak PSS (MiB) | "
        "memory vs by hand |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for rows, measured in results["runs"].items():
        hand = measured["by hand"]
        for name, m in measured.items():
            lines.append(
                f"| {int(rows):,} | {name} | {m['seconds']:.1f} | "
                f"{int(rows) / m['seconds']:,.0f} | {hand['seconds'] / m['seconds']:.2f}× | "
                f"{m['peak_rss_mib']:,.0f} | {m['peak_rss_mib'] / hand['peak_rss_mib']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--rows 1000000,10000000``, ``--no-spark``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,10000000", help="comma-separated sizes")
    parser.add_argument("--no-spark", action="store_true", help="leave the Spark engine out")
    parser.add_argument(
        "--spark-breakdown",
        type=int,
        metavar="ROWS",
        help="only time the Spark engine's steps one by one on ROWS rows",
    )
    args = parser.parse_args(argv)
    if args.spark_breakdown:
        text = spark_breakdown(args.spark_breakdown)
        (OUT / "spark-breakdown.md").write_text(text)
        print(text)
        return 0
    results = run([int(r) for r in args.rows.split(",")], spark=not args.no_spark)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    text = report(results)
    (OUT / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
