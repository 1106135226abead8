"""A mixed-type dataset (categoricals, missing values, an ID column), and refused data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from palmerpenguins import load_penguins

from tabserve.bundle import read_examples, read_schema, verify_bundle
from tests.pipeline.conftest import commit, mlflow_client, run, set_params, stages_run

pytestmark = pytest.mark.slow


def test_penguins_with_id_column_categoricals_and_missing_values(make_repo) -> None:
    repo = make_repo(
        "penguins", {"data.source": "data/sources/penguins.csv", "data.target": "species"}
    )
    # Written with its index: the unnamed row-number column must be dropped, not learnt.
    load_penguins().to_csv(repo / "data/sources/penguins.csv", index=True)
    commit(repo, "penguins")
    proc = run(repo, "dvc", "repro")
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
