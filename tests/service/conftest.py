"""Fixtures for the service tests: real bundles in a private BentoML home, users, tokens.

Two tiny real models are trained once per test package and imported into a temporary
BentoML model store exactly as the pipeline's ``import`` stage does
(``bentoml.models.create`` + ``write_bundle``):

- ``tabserve:v1``: breast_cancer (binary, numeric features);
- ``tabserve:v2``: palmerpenguins (multiclass, categoricals, missing values).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tabserve.core.bundle import Lineage, sha256_file, write_bundle
from tabserve.core.schema import FeatureSchema
from tabserve.core.schema_inference import infer_schema

REPO = Path(__file__).resolve().parents[2]
TEST_PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class BuiltModel:
    """A model imported into the test BentoML home."""

    tag: str
    path: Path
    schema: FeatureSchema
    booster: xgb.Booster
    rows: list[dict[str, Any]]  # feature rows (no target), JSON-ready


def _json_ready(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for record in frame.to_dict("records"):
        rows.append(
            {
                k: (None if (isinstance(v, float) and np.isnan(v)) or v is pd.NA else v)
                for k, v in record.items()
            }
        )
    return rows


def _train(frame: pd.DataFrame, target: str, objective: dict[str, Any]) -> tuple[Any, ...]:
    schema = infer_schema(frame, target)
    features = frame.drop(columns=[target])
    x = schema.to_frame(features)
    y = schema.encode_target(frame[target])
    params = {"max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 0, **objective}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, enable_categorical=True), 20)
    return schema, booster, params, _json_ready(features)


def _import(
    name: str,
    version: str,
    schema: FeatureSchema,
    booster: xgb.Booster,
    params: dict[str, Any],
    rows: list[dict[str, Any]],
    target_values: list[Any],
    workdir: Path,
) -> BuiltModel:
    import bentoml
    from bentoml import Tag

    model_file = workdir / f"{name}-{version}.ubj"
    booster.save_model(str(model_file))
    lineage = Lineage(
        model_name=name,
        registry_version=version.lstrip("v"),
        mlflow_run_id=f"run-{version}",
        data_md5={"train": "0" * 32, "test": "1" * 32},
        git_commit="deadbeef",
        params=params,
        metrics={"accuracy": 0.9},
        model_sha256=sha256_file(model_file),
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC).isoformat(),
    )
    examples = [
        {**row, schema.target.name: t} for row, t in zip(rows[:5], target_values[:5], strict=True)
    ]
    with bentoml.models.create(
        Tag(name, version), labels={"source": "tests"}, metadata={"registry_version": version}
    ) as model:
        write_bundle(
            model.path, model_file=model_file, schema=schema, lineage=lineage, examples=examples
        )
    stored = bentoml.models.get(Tag(name, version))
    return BuiltModel(f"{name}:{version}", Path(stored.path), schema, booster, rows)


@pytest.fixture(scope="package")
def test_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """TABSERVE_* settings, set for the whole package.

    The private BentoML home and Prometheus directory are the session's (see
    ``tests/conftest.py``): BentoML and prometheus_client read them once, on import.
    """
    root = tmp_path_factory.mktemp("tabserve")
    env = {
        "BENTOML_HOME": os.environ["BENTOML_HOME"],
        "TABSERVE_ENV": "development",
        "TABSERVE_JWT_SECRET": secrets.token_urlsafe(48),
        "TABSERVE_USERS_FILE": str(root / "users.json"),
        "TABSERVE_LOCAL_DIR": str(root / "local"),
        "TABSERVE_MODEL_TAG": "tabserve:v2",
        "TABSERVE_MAX_ROWS": "1000",
        "TABSERVE_LOGIN_MAX_FAILURES": "3",
        "BENTOML_DO_NOT_TRACK": "True",
        # BentoML's /metrics always reads Prometheus' multiprocess directory.
        "PROMETHEUS_MULTIPROC_DIR": os.environ["PROMETHEUS_MULTIPROC_DIR"],
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="package")
def models(
    test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, BuiltModel]:
    """Both test models, trained and imported once."""
    import palmerpenguins
    from sklearn.datasets import load_breast_cancer

    workdir = tmp_path_factory.mktemp("models")
    cancer = load_breast_cancer(as_frame=True).frame
    schema, booster, params, rows = _train(cancer, "target", {"objective": "binary:logistic"})
    binary = _import(
        "tabserve", "v1", schema, booster, params, rows, cancer["target"].tolist(), workdir
    )

    penguins = palmerpenguins.load_penguins()
    schema, booster, params, rows = _train(
        penguins, "species", {"objective": "multi:softprob", "num_class": 3}
    )
    multi = _import(
        "tabserve", "v2", schema, booster, params, rows, penguins["species"].tolist(), workdir
    )
    return {"binary": binary, "multiclass": multi}


@pytest.fixture(scope="package")
def users_file(test_env: dict[str, str]) -> Path:
    """Users: ``alice`` (predict, explain), ``bob`` (predict), ``carol`` (admin)."""
    from tabserve.security.users import UserStore

    store = UserStore(test_env["TABSERVE_USERS_FILE"])
    store.add("alice", TEST_PASSWORD, "predict,explain")
    store.add("bob", TEST_PASSWORD, "predict")
    store.add("carol", TEST_PASSWORD, "admin")
    return store.path


@pytest.fixture(scope="package")
def settings(test_env: dict[str, str]) -> Any:
    """The settings the service reads."""
    from tabserve.serving.settings import load_settings

    return load_settings()


@pytest.fixture(scope="package")
def token(settings: Any) -> Any:
    """Make a signed token: ``token(scopes=..., sub=...)``."""
    from tabserve.security.tokens import issue_token

    def make(scopes: str = "predict,explain", sub: str = "alice", ttl_s: int | None = None) -> str:
        return issue_token(settings, sub, scopes.split(","), ttl_s)[0]

    return make


@pytest.fixture(scope="package")
def service_module(models: dict[str, BuiltModel], users_file: Path) -> Any:
    """``service.py``, imported once the environment points at the test models."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import service

    return service
