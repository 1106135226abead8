"""Regression end to end on scikit-learn's diabetes data (shipped inside the package):
task inferred, metrics, the interval's coverage, registry, BentoML model and lineage,
the registered model's answers, and a promotion metric that does not fit the task."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tabserve.core.bundle import (
    INTERVAL_FILE,
    QUANTILES_FILE,
    REFERENCE_FILE,
    read_interval,
    read_schema,
    verify_bundle,
)
from tabserve.core.predictor import Predictor, answer_columns
from tests.pipeline.conftest import mlflow_client, pipeline_env, run, set_params, stages_run

pytestmark = pytest.mark.slow
COVERAGE_TOLERANCE = 0.12  # about 2.5 standard errors on 89 test rows calibrated on 71


@pytest.fixture(scope="module")
def repo(make_repo) -> Path:
    repo = make_repo("diabetes", {"data.source": "diabetes", "data.target": "target"})
    proc = run(repo, "dvc", "repro")
    assert stages_run(proc.stdout)[-1] == "import"
    assert "task: regression (data.task: auto" in proc.stderr
    return repo


def test_metrics_plots_and_interval_coverage(repo: Path) -> None:
    metrics = json.loads((repo / "metrics.json").read_text())
    assert {"rmse", "mae", "r2", "mape", "interval_coverage", "interval_nominal"} <= set(metrics)
    assert metrics["r2"] > 0.2 and metrics["rmse"] < 70  # the target's spread is about 77
    assert metrics["interval_nominal"] == 0.9
    assert abs(metrics["interval_coverage"] - 0.9) <= COVERAGE_TOLERANCE, metrics
    pairs = json.loads((repo / "plots/predicted_vs_actual.json").read_text())
    test = pd.read_parquet(repo / "data/prepared/test.parquet")
    assert len(pairs) == len(test) and {"actual", "predicted"} == set(pairs[0])
    assert json.loads((repo / "plots/residuals.json").read_text())
    assert not (repo / "plots/roc.json").exists()
    report = json.loads((repo / "data/prepared/report.json").read_text())
    assert report["task"] == "regression" and "target" in report


def test_registry_and_bundle_carry_the_interval_model_with_its_lineage(repo: Path) -> None:
    client = mlflow_client(repo)
    version = client.get_model_version_by_alias("tabserve", "champion")
    train = client.get_run(version.tags["mlflow_run_id"])
    assert {"test_rmse", "test_r2", "test_interval_coverage"} <= set(train.data.metrics)
    plots = {a.path for a in client.list_artifacts(train.info.run_id, "plots")}
    assert plots == {"plots/predicted_vs_actual.png", "plots/residuals.png"}
    promotion = json.loads((repo / "registry/promotion.json").read_text())
    assert promotion["metric"] == "rmse" and promotion["promoted"]

    bundle = repo / ".bentoml/models/tabserve/v1"
    lineage = verify_bundle(bundle)
    assert set(lineage.files_sha256) == {QUANTILES_FILE, INTERVAL_FILE, REFERENCE_FILE}
    schema = read_schema(bundle)
    assert schema.target.is_regression and len(schema.target.quantiles) == 11
    interval = read_interval(bundle)
    assert interval is not None and interval.coverage == 0.9 and interval.rows > 30

    # The service's predictor: values are the booster's, intervals the quantile model's
    # ends moved by the calibration offset.
    predictor = Predictor.from_bundle(bundle, version="v1")
    test = pd.read_parquet(repo / "data/prepared/test.parquet")
    features = test[schema.feature_names]
    values, lows, highs = predictor.predict_values(features)
    matrix = schema.encode(features)
    assert np.array_equal(
        values, xgb.Booster(model_file=str(bundle / "model.ubj")).inplace_predict(matrix)
    )
    ends = xgb.Booster(model_file=str(bundle / QUANTILES_FILE)).inplace_predict(matrix)
    assert np.allclose(np.minimum(ends[:, 0] - interval.offset, values), lows)
    assert np.all(lows <= values) and np.all(values <= highs)


def test_registered_model_answers_like_the_service(repo: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/tabserve@champion")
    test = pd.read_parquet(repo / "data/prepared/test.parquet").drop(columns=["target"])
    predictor = Predictor.from_bundle(repo / ".bentoml/models/tabserve/v1", version="v1")
    expected = pd.DataFrame(answer_columns(predictor.predict(test)), index=test.index)
    pd.testing.assert_frame_equal(model.predict(test), expected)
    assert list(expected.columns) == ["prediction", "low", "high"]


def test_batch_scoring_answers_like_the_service(repo: Path, tmp_path: Path) -> None:
    test = pd.read_parquet(repo / "data/prepared/test.parquet").drop(columns=["target"])
    source = tmp_path / "rows.parquet"
    test.assign(patient=[f"p{i}" for i in range(len(test))]).to_parquet(source)
    out = tmp_path / "scores.parquet"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tabserve.cli",
            "score",
            str(source),
            str(out),
            "--id-column",
            "patient",
        ],
        cwd=repo,
        env=pipeline_env(repo),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Scored {len(test)} of {len(test)} rows with tabserve/1" in proc.stdout
    scored = pd.read_parquet(out)
    assert list(scored.columns) == ["patient", "prediction", "low", "high", "model_version"]
    predictor = Predictor.from_bundle(repo / ".bentoml/models/tabserve/v1", version="v1")
    expected = pd.DataFrame(answer_columns(predictor.predict(test)))  # POST /predict's code
    pd.testing.assert_frame_equal(
        scored[["prediction", "low", "high"]], expected, check_exact=False, rtol=1e-12
    )


def test_a_classification_metric_for_a_regression_model_is_a_clear_error(repo: Path) -> None:
    set_params(repo, {"promote.metric": "roc_auc"})
    proc = run(repo, "dvc", "repro", check=False)
    assert proc.returncode != 0
    assert "promote.metric 'roc_auc' does not fit a regression model" in proc.stderr
    assert "rmse, mae, r2, mape" in proc.stderr
    set_params(repo, {"promote.metric": "auto"})
