"""Issue 35 end to end: ``tabserve score`` with the penguins pipeline's registered model
(``conftest.penguins``: numbers, text, a date, a timestamp, a folded station code, missing
values), on a folder of CSV part files with bad rows in it.

The local engine's answers are the ones a real ``bentoml serve`` gives on ``POST
/predict``; the Spark engine (pyspark in local mode, two cores) gives the local engine's
answers and rejects; every error that can stop a run stops it before any work, and a run
killed half-way leaves no output that looks complete.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tabserve.core.bundle import read_schema
from tabserve.security.users import UserStore
from tests.pipeline.conftest import pipeline_env
from tests.support import cheap_hasher, server_env, serving

pytestmark = pytest.mark.slow
PASSWORD = "batch scoring test password"
BAD = {  # row id: (column, text) written into the input
    3: ("bill_length_mm", "long"),
    5: ("observed", "31/02/2008"),
    6: ("year", ""),
    7: ("year", "2008.5"),
}
UNKNOWN_ISLAND = 4  # Atlantis: never seen, read as missing (or refused under `refuse`)
NO_ID = 10
SCORE = [sys.executable, "-m", "tabserve.cli", "score"]


def score(repo: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """``tabserve score`` in ``repo`` (its embedded MLflow store found by default)."""
    return subprocess.run(
        [sys.executable, "-m", "tabserve.cli", "score", *args],
        cwd=repo,
        env=env or pipeline_env(repo),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def parts(penguins, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The penguins source as two CSV part files, an id column, and bad rows in it."""
    repo, _ = penguins
    raw = pd.read_csv(repo / "data/sources/penguins.csv", dtype=str, keep_default_na=False)
    raw = raw.rename(columns={raw.columns[0]: "penguin_id"})
    for row, (column, text) in BAD.items():
        raw.loc[row, column] = text
    raw.loc[UNKNOWN_ISLAND, "island"] = "Atlantis"
    raw.loc[NO_ID, "penguin_id"] = ""  # a row without its id is still scored, its key null
    folder = tmp_path_factory.mktemp("score") / "parts"
    folder.mkdir()
    raw.iloc[:150].to_csv(folder / "part-00000.csv", index=False)
    raw.iloc[150:].to_csv(folder / "part-00001.csv", index=False)
    return folder, raw


def _json_rows(repo: Path, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as a client sends them: numbers as numbers, empty cells null."""
    schema = read_schema(repo / ".bentoml/models/tabserve/v1")
    rows = []
    for record in frame[schema.feature_names].to_dict("records"):
        row: dict[str, Any] = {}
        for name, text in record.items():
            numeric = schema.feature(name).kind == "numeric"
            row[name] = None if text == "" else (float(text) if numeric else text)
        rows.append(row)
    return rows


def test_the_local_engine_answers_like_the_service_and_rejects_bad_rows(
    penguins, parts, tmp_path
) -> None:
    repo, _ = penguins
    folder, raw = parts
    out = tmp_path / "scores.parquet"
    proc = score(repo, str(folder), str(out), "--id-column", "penguin_id", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    total, bad = len(raw), len(BAD)
    assert (
        f"Scored {total - bad:,} of {total:,} rows with tabserve/1 (local engine, 2 workers)"
        in (proc.stdout)
    )
    assert f"Rejected {bad} rows (the row, the column, the reason): {tmp_path}/scores.rejects" in (
        proc.stdout
    )
    assert "Categories never seen in training, read as missing" in proc.stdout
    assert "island (1)" in proc.stdout
    scored = pd.read_parquet(out)
    assert list(scored.columns) == [
        "penguin_id",
        "label",
        "proba_Adelie",
        "proba_Chinstrap",
        "proba_Gentoo",
        "model_version",
    ]
    assert set(scored["model_version"].astype(str)) == {"tabserve/1"}
    assert not set(scored["penguin_id"]) & {str(r) for r in BAD}
    assert scored["penguin_id"].isna().sum() == 1 and len(scored) == total - bad

    rejects = pd.read_parquet(tmp_path / "scores.rejects.parquet")
    reasons = {(int(r.penguin_id), r.column): r.reason for r in rejects.itertuples()}
    assert reasons == {
        (3, "bill_length_mm"): "'long' is not a number",
        (5, "observed"): "'31/02/2008' is not a date in ISO 8601",
        (6, "year"): "a value is required",
        (7, "year"): "2008.5 is not a whole number",
    }

    # A sample of the answers, against a real `bentoml serve`: the Atlantis row (read as
    # missing there too), rows with missing values, and others.
    sample = raw[~raw.index.isin(BAD)].iloc[[0, 3, 8, 9, 40, 120, 200, 250, 300, 330]]
    UserStore(tmp_path / "users.json", hasher=cheap_hasher()).add("alice", PASSWORD, "predict")
    env = server_env(
        tmp_path,
        "tabserve:v1",
        TABSERVE_JWT_SECRET=secrets.token_urlsafe(48),
        BENTOML_HOME=str(repo / ".bentoml"),
    )
    with serving(env, tmp_path / "serve.log") as served:
        token = httpx.post(
            f"{served.url}/auth/token", data={"username": "alice", "password": PASSWORD}
        ).json()["access_token"]
        answered = httpx.post(
            f"{served.url}/predict",
            json={"rows": _json_rows(repo, sample)},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answered.status_code == 200, answered.text
    by_id = scored.set_index("penguin_id")
    for penguin, answer in zip(sample["penguin_id"], answered.json(), strict=True):
        ours = by_id.loc[penguin]
        assert ours["label"] == answer["label"]
        for label, p in answer["probabilities"].items():
            assert math.isclose(ours[f"proba_{label}"], p, abs_tol=1e-6)


def test_under_refuse_an_unknown_category_is_a_rejected_row(penguins, parts, tmp_path) -> None:
    repo, _ = penguins
    folder, raw = parts
    env = pipeline_env(repo) | {"TABSERVE_UNKNOWN_CATEGORY": "refuse"}
    out = tmp_path / "refused.parquet"
    proc = score(repo, str(folder), str(out), "--id-column", "penguin_id", env=env)
    assert proc.returncode == 0, proc.stderr
    rejects = pd.read_parquet(tmp_path / "refused.rejects.parquet")
    island = rejects[rejects["column"] == "island"]
    assert island["penguin_id"].tolist() == [str(UNKNOWN_ISLAND)]
    assert island["reason"].iloc[0].startswith("'Atlantis' is a category never seen in training")
    assert len(pd.read_parquet(out)) == len(raw) - len(BAD) - 1


def test_the_spark_engine_gives_the_local_engines_answers(penguins, parts, tmp_path) -> None:
    repo, _ = penguins
    folder, _ = parts
    local, spark = tmp_path / "local.parquet", tmp_path / "spark"
    proc = score(repo, str(folder), str(local), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    proc = score(repo, str(folder), str(spark), "--engine", "spark", "--master", "local[2]")
    assert proc.returncode == 0, proc.stderr
    assert "(Spark engine, local[2])" in proc.stdout
    assert "island (1)" in proc.stdout  # the unknown category, counted on the executors
    assert (spark / "_SUCCESS").exists()  # committed by Spark, then moved into place
    assert not list(tmp_path.glob(".spark.partial-*"))

    def ordered(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({"model_version": str})
        return frame.sort_values(["row", *frame.columns[1:2]], ignore_index=True)

    expected, got = ordered(pd.read_parquet(local)), ordered(pd.read_parquet(spark))
    assert got["row"].tolist() == expected["row"].tolist()  # positions: files in name order
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, atol=1e-9)
    rejected_local = pd.read_parquet(tmp_path / "local.rejects.parquet")
    rejected_spark = pd.read_parquet(tmp_path / "spark.rejects")
    pd.testing.assert_frame_equal(
        rejected_spark.sort_values(["row", "column"], ignore_index=True),
        rejected_local.sort_values(["row", "column"], ignore_index=True),
        check_dtype=False,
    )
    assert sorted(set(rejected_local["row"])) == sorted(BAD)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no year", "lacks 1 column(s) the model requires in every row: year"),
        ("unknown model", "cannot load the model models:/nobody@champion"),
        ("output exists", "exists; pass --overwrite to replace it"),
        ("junk parquet", "not a readable Parquet file"),
        ("no id column", "has no column 'ident' (--id-column)"),
    ],
)
def test_what_stops_a_run_stops_it_before_any_work(penguins, parts, tmp_path, case, message):
    repo, _ = penguins
    folder, raw = parts
    source, out, extra = folder, tmp_path / "out.parquet", []
    if case == "no year":
        source = tmp_path / "no-year.csv"
        raw.drop(columns=["year"]).to_csv(source, index=False)
    elif case == "unknown model":
        extra = ["--model", "models:/nobody@champion"]
    elif case == "output exists":
        out.write_bytes(b"a previous run")
    elif case == "junk parquet":
        source = tmp_path / "junk.parquet"
        source.write_bytes(b"PAR1 not really")
    else:
        extra = ["--id-column", "ident"]
    proc = score(repo, str(source), str(out), *extra)
    assert proc.returncode == 2
    assert proc.stderr.startswith("tabserve score: error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr
    if case != "output exists":
        assert not out.exists()
    else:
        assert out.read_bytes() == b"a previous run"


def test_a_run_killed_half_way_leaves_no_output_that_looks_complete(
    penguins, parts, tmp_path
) -> None:
    repo, _ = penguins
    _, raw = parts
    big = tmp_path / "big.csv"
    clean = raw.drop(index=list(BAD))
    pd.concat([clean] * 300, ignore_index=True).to_csv(big, index=False)  # about 100,000 rows
    out = tmp_path / "big-scores.parquet"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tabserve.cli",
            "score",
            str(big),
            str(out),
            "--workers",
            "1",
            "--batch-rows",
            "500",
        ],
        cwd=repo,
        env=pipeline_env(repo),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".big-scores.parquet.partial-*")):
        assert proc.poll() is None, "finished before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists()
    (partial,) = tmp_path.glob(".big-scores.parquet.partial-*")  # hidden, and named so
    assert partial.name.startswith(".")


def test_ctrl_c_stops_a_run_with_one_line_and_nothing_written(penguins, parts, tmp_path) -> None:
    repo, _ = penguins
    _, raw = parts
    big = tmp_path / "big.csv"
    pd.concat([raw.drop(index=list(BAD))] * 300, ignore_index=True).to_csv(big, index=False)
    out = tmp_path / "interrupted.parquet"
    proc = subprocess.Popen(
        [*SCORE, str(big), str(out), "--workers", "2", "--batch-rows", "500"],
        cwd=repo,
        env=pipeline_env(repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test runner may have left SIGINT ignored for its children.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".interrupted.parquet.partial-*")):
        assert proc.poll() is None, "finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert stderr.strip().splitlines()[-1] == "tabserve score: interrupted; no output written"
    assert "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.glob(".interrupted.parquet.partial-*"))
