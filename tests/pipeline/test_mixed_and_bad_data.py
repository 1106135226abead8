"""A mixed-type dataset (categoricals, missing values, an ID column), and refused data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins

from load_tests.processes import free_port, running
from tabserve.core.bundle import read_examples, read_schema, verify_bundle
from tests.pipeline.conftest import (
    commit,
    mlflow_client,
    pipeline_env,
    run,
    served_answers,
    set_params,
    stages_run,
)
from tests.support import REPO

pytestmark = pytest.mark.slow


def test_penguins_with_id_column_categoricals_and_missing_values(penguins) -> None:
    repo, proc = penguins
    assert stages_run(proc.stdout)[-1] == "import"
    assert "dropping column 'Unnamed: 0': id-like" in proc.stderr

    store = repo / ".bentoml/models/tabserve/v1"
    verify_bundle(store)
    schema = read_schema(store)
    assert schema.target.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert "Unnamed: 0" not in schema.feature_names
    assert schema.feature("island").categories == ["Biscoe", "Dream", "Torgersen"]
    assert schema.feature("sex").kind == "categorical" and schema.feature("sex").nullable
    assert schema.feature("bill_length_mm").nullable and schema.feature("year").integer
    metrics = json.loads((repo / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.9
    examples = read_examples(store)
    assert examples and {"island", "species"} <= set(examples[0])
    test = pd.read_parquet(repo / "data/prepared/test.parquet")
    assert len(examples) == len(test)  # fewer than 200 test rows: all of them
    # Missing values survive as null (never NaN, which is not JSON).
    assert sum(row["sex"] is None for row in examples) == test["sex"].isna().sum()
    assert (
        sum(row["bill_length_mm"] is None for row in examples)
        == test["bill_length_mm"].isna().sum()
    )

    client = mlflow_client(repo)
    assert str(client.get_model_version_by_alias("tabserve", "champion").version) == "1"
    # The data report reached the train run.
    run_id = json.loads((repo / "models/train_run.json").read_text())["run_id"]
    logged = client.get_run(run_id).data
    assert logged.metrics["data_max_feature_score"] < 0.99
    report = json.loads((repo / "data/prepared/report.json").read_text())
    scored = {f["source"] for f in report["leakage"]["features"]}
    assert scored == set(schema.feature_names)
    assert json.loads((repo / "data/prepared/feature_scores.json").read_text())


def test_registered_champion_scores_raw_frames_like_the_service(penguins) -> None:
    import mlflow

    repo, proc = penguins
    # Its signature and input example validate: MLflow warns about nothing.
    mlflow_warnings = [
        line
        for line in proc.stderr.splitlines()
        if "mlflow" in line.lower() and ("WARNING" in line or "Warning:" in line)
    ]
    assert not mlflow_warnings, mlflow_warnings

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/tabserve@champion")
    parquet = pd.read_parquet(repo / "data/prepared/test.parquet").drop(columns=["species"])
    assert str(parquet["island"].dtype) == "str"  # pandas 3's text dtype, as read
    expected = served_answers(repo, parquet)
    pd.testing.assert_frame_equal(model.predict(parquet), expected, check_dtype=False)
    csv = repo / "test.csv"
    parquet.to_csv(csv, index=False)
    from_csv = pd.read_csv(csv)
    pd.testing.assert_frame_equal(
        model.predict(from_csv), served_answers(repo, from_csv), check_dtype=False
    )
    as_objects = parquet.astype({"island": object, "sex": object})
    pd.testing.assert_frame_equal(model.predict(as_objects), expected, check_dtype=False)


_LOAD_CARRIED = """
import importlib.util, json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/tabserve@champion")
import tabserve
rows = pd.read_parquet(sys.argv[1]).drop(columns=["species"]).head(5)
print(json.dumps({
    "tabserve": tabserve.__file__,
    "security": importlib.util.find_spec("tabserve.security") is not None,
    "labels": [str(v) for v in model.predict(rows)["label"]],
}))
"""


def test_registered_model_carries_only_the_core_and_its_own_layer(penguins, tmp_path) -> None:
    """The model's code is a copy of ``tabserve/`` with the core and the MLflow layer only,
    and a fresh process loads and scores with that copy, not with the project."""
    import mlflow

    repo, _ = penguins
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    uri = "models:/tabserve@champion"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    carried = local / "code" / "tabserve"
    assert sorted(p.name for p in carried.iterdir()) == ["__init__.py", "core", "mlflow_model"]
    env = pipeline_env(repo) | {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlruns/mlflow.db'}"}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_CARRIED, str(repo / "data/prepared/test.parquet")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert str(REPO) not in seen["tabserve"] and "code" in seen["tabserve"]
    assert seen["security"] is False
    test = pd.read_parquet(repo / "data/prepared/test.parquet").drop(columns=["species"]).head(5)
    assert seen["labels"] == [str(v) for v in served_answers(repo, test)["label"]]


def test_mlflow_models_serve_answers_like_the_service(penguins) -> None:
    repo, _ = penguins
    port = free_port()
    env = pipeline_env(repo) | {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlruns/mlflow.db'}"}
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve"]
    command += ["-m", "models:/tabserve@champion", "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with running(
        command,
        ready_url=f"{url}/ping",
        log=repo / "mlflow-serve.log",
        env=env,
        cwd=repo,
        timeout_s=120,
    ):
        test = pd.read_parquet(repo / "data/prepared/test.parquet").drop(columns=["species"])
        records = test.astype(object).where(test.notna(), None).to_dict("records")
        response = httpx.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=60)
        assert response.status_code == 200, response.text
        served = pd.DataFrame(response.json()["predictions"])
        expected = served_answers(repo, test).reset_index(drop=True)
        pd.testing.assert_frame_equal(served, expected, check_dtype=False)


def test_leaks_are_refused_then_allowed_or_dropped_end_to_end(make_repo) -> None:
    from tabserve.core.validation import RequestValidator
    from ui.form import form_fields

    repo = make_repo(
        "leaky",
        {"data.source": "data/sources/leaky.csv", "data.target": "species", "tune.n_trials": 2},
    )
    frame = load_penguins()
    rng = np.random.default_rng(0)
    frame["recorded_code"] = frame["species"].astype("category").cat.codes + rng.normal(
        0, 0.05, len(frame)
    )
    frame["tag_id"] = np.where(frame["species"] == "Adelie", np.nan, rng.normal(size=len(frame)))
    frame.to_csv(repo / "data/sources/leaky.csv", index=False)
    commit(repo, "leaky data")
    proc = run(repo, "dvc", "repro", check=False)
    assert proc.returncode != 0
    assert "suspected label leakage" in proc.stderr
    assert "feature 'recorded_code': alone it predicts the target" in proc.stderr
    assert "feature 'tag_id'" in proc.stderr and "separates class 'Adelie'" in proc.stderr
    assert "prepare.allow" in proc.stderr and "data.drop" in proc.stderr
    assert not (repo / "data/prepared/schema.json").exists()

    set_params(repo, {"prepare.allow": ["tag_id"], "data.drop": ["recorded_code", "year"]})
    commit(repo, "allow one, drop the other")
    proc = run(repo, "dvc", "repro")
    assert stages_run(proc.stdout)[-1] == "import"
    assert "allowed by prepare.allow: feature 'tag_id'" in proc.stderr
    schema = read_schema(repo / ".bentoml/models/tabserve/v1")
    assert "tag_id" in schema.feature_names
    for dropped in ("recorded_code", "year"):
        assert dropped not in schema.feature_names
        assert {"name": dropped, "reason": "dropped by data.drop"} in [
            d.model_dump() for d in schema.dropped
        ]
        assert dropped not in [field.name for field in form_fields(schema)]  # the UI form
    # The API refuses the dropped column as an unknown field.
    validator = RequestValidator(schema, max_rows=10)
    row = {**schema.example_row(), "year": 2008}
    with pytest.raises(Exception, match="1 invalid value") as err:
        validator.validate({"rows": [row]})
    assert "unknown field 'year'" in str(err.value.details)  # type: ignore[attr-defined]


def test_refused_data_stops_the_pipeline_and_writes_nothing(make_repo) -> None:
    repo = make_repo("bad", {"data.source": "data/sources/bad.csv", "data.target": "label"})
    frame = pd.DataFrame({"x": range(30), "y": [0.5] * 30, "label": ["only"] * 30})
    frame.to_csv(repo / "data/sources/bad.csv", index=False)
    proc = run(repo, "dvc", "repro", check=False)
    assert proc.returncode != 0
    assert "target 'label' has 1 class(es)" in proc.stderr
    assert not (repo / "data/prepared").exists() or not any((repo / "data/prepared").iterdir())

    set_params(repo, {"data.target": "outcome"})
    proc = run(repo, "dvc", "repro", check=False)
    assert proc.returncode != 0
    assert "target column 'outcome' not found" in proc.stderr and "x, y, label" in proc.stderr

    (repo / "data/sources/bad.csv").write_text("a,b,a\n1,2,3\n")
    proc = run(repo, "dvc", "repro", check=False)
    assert proc.returncode != 0 and "duplicate column names: a" in proc.stderr
    assert not (repo / "data/raw/data.parquet").exists()


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            pd.DataFrame({"x": [1.0] * 20, "label": ["a"] * 17 + ["b"] * 3}),
            "class 'b' of 'label' has 3 rows",
        ),
        (
            pd.DataFrame({"x": [1.0, float("inf")] * 10, "label": ["a", "b"] * 10}),
            "column 'x' has infinite values",
        ),
    ],
)
def test_prepare_cli_names_the_fault_and_writes_nothing(
    tmp_path: Path, frame: pd.DataFrame, message: str
) -> None:
    from tests.pipeline.conftest import ROOT

    frame.to_parquet(tmp_path / "raw.parquet")
    params = (ROOT / "params.yaml").read_text().replace("target: target", "target: label")
    (tmp_path / "params.yaml").write_text(params)
    proc = run(
        tmp_path,
        "python",
        "-m",
        "training.prepare",
        "--raw",
        "raw.parquet",
        "--out",
        "out",
        check=False,
    )
    assert proc.returncode == 1
    assert message in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
