"""A regression model served by a real ``bentoml serve``: values and intervals equal to
the boosters' own output, explanations that add up to the value, the model card, the
predicted-value histogram and the OpenAPI answer shape."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import xgboost as xgb

from tabserve.core.bundle import QUANTILES_FILE, read_interval
from tabserve.security.users import UserStore
from tests.support import TestModel, cheap_hasher, import_test_model, server_env, serving

pytestmark = pytest.mark.slow
PASSWORD = "regression test password"


@dataclass(frozen=True)
class Server:
    url: str
    model: TestModel
    bundle: Path
    headers: dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from sklearn.datasets import load_diabetes

    root = tmp_path_factory.mktemp("regression")
    frame = load_diabetes(as_frame=True, scaled=False).frame
    model = import_test_model(root / "bentoml", frame, "target", {"objective": "reg:squarederror"})
    UserStore(root / "users.json", hasher=cheap_hasher()).add("alice", PASSWORD, "predict,explain")
    env = server_env(root, model.tag, TABSERVE_JWT_SECRET=secrets.token_urlsafe(48))
    with serving(env, root / "serve.log") as served:
        token = httpx.post(
            f"{served.url}/auth/token", data={"username": "alice", "password": PASSWORD}
        ).json()["access_token"]
        yield Server(
            served.url,
            model,
            root / "bentoml/models/tabserve/v1",
            {"Authorization": f"Bearer {token}"},
        )


def test_values_and_intervals_are_the_boosters_own(server: Server) -> None:
    rows = server.model.rows[:25]
    response = httpx.post(f"{server.url}/predict", json={"rows": rows}, headers=server.headers)
    assert response.status_code == 200, response.text
    answers = response.json()
    matrix = server.model.schema.encode(rows)
    values = xgb.Booster(model_file=str(server.bundle / "model.ubj")).inplace_predict(matrix)
    ends = xgb.Booster(model_file=str(server.bundle / QUANTILES_FILE)).inplace_predict(matrix)
    interval = read_interval(server.bundle)
    assert interval is not None
    assert [a["value"] for a in answers] == np.asarray(values, dtype=np.float64).tolist()
    for answer, value, (low, high) in zip(answers, values, ends, strict=True):
        assert answer["interval"]["coverage"] == 0.9
        assert answer["interval"]["low"] == pytest.approx(min(low - interval.offset, value))
        assert answer["interval"]["high"] == pytest.approx(max(high + interval.offset, value))


def test_explanations_add_up_to_the_value(server: Server) -> None:
    rows = server.model.rows[:10]
    explained = httpx.post(f"{server.url}/explain", json={"rows": rows}, headers=server.headers)
    assert explained.status_code == 200, explained.text
    for answer in explained.json():
        total = answer["base_value"] + sum(answer["contributions"].values())
        assert total == pytest.approx(answer["value"], rel=1e-5, abs=1e-3)
        assert set(answer["contributions"]) == set(server.model.schema.feature_names)


def test_model_card_metrics_histogram_and_openapi(server: Server) -> None:
    card = httpx.get(f"{server.url}/model", headers=server.headers).json()
    assert card["task"] == "regression" and card["interval_coverage"] == 0.9
    assert card["schema"]["target"]["kind"] == "regression" and "rmse" in card["metrics"]
    metrics = httpx.get(f"{server.url}/metrics").text
    buckets = [
        line for line in metrics.splitlines() if line.startswith("tabserve_predicted_value_bucket")
    ]
    assert len(buckets) >= 10, metrics[-2000:]
    assert 'endpoint="predict"' in buckets[0] and 'source="api"' in buckets[0]
    spec = httpx.get(f"{server.url}/docs.json").json()
    prediction = spec["components"]["schemas"]["Prediction"]
    assert prediction["required"] == ["id", "value", "interval"]
    assert set(prediction["properties"]["interval"]["properties"]) == {"low", "high", "coverage"}
    answer_ref = spec["paths"]["/predict"]["post"]["responses"]["200"]["content"]
    assert answer_ref["application/json"]["schema"]["items"]["$ref"].endswith("/Prediction")
