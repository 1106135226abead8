"""Issue 37 end to end: the penguins pipeline with a date, a timestamp, an order
reference, free-text notes and a station code of 90 levels (``conftest.penguins``).

``prepare`` derives, drops, folds and says so; the model trains, registers, serves
(a real ``bentoml serve``) and explains; a row with a date, a timestamp and
categories never seen in training is answered and counted under the default policy,
refused in a short 422 under ``refuse``, and the registered MLflow model answers it
like the service.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tabserve.core.bundle import read_schema
from tabserve.security.users import UserStore
from tests.pipeline.conftest import STATIONS, served_answers
from tests.support import cheap_hasher, server_env, serving

pytestmark = pytest.mark.slow
PASSWORD = "columns test password"
NEW_DAY = "2031-05-01"  # after everything in training: the model has never seen it


def _new_rows(repo: Path) -> list[dict[str, Any]]:
    """Two test rows: one as it is, one with a new date and timestamp, an island never
    seen (no `other` level: read as missing) and a station never seen (its `other`)."""
    schema = read_schema(repo / ".bentoml/models/tabserve/v1")
    test = pd.read_parquet(repo / "data/prepared/test.parquet")
    rows = [schema.json_row(r) for r in test[schema.feature_names].head(2).to_dict("records")]
    rows[1] |= {
        "observed": NEW_DAY,
        "logged_at": f"{NEW_DAY}T08:15:00Z",
        "island": "Atlantis",
        "station": "ST-NEW",
    }
    return rows


def test_prepare_derives_drops_and_folds_and_says_so(penguins) -> None:
    repo, proc = penguins
    log = proc.stderr
    assert "dropping column 'order_ref': id-like" in log
    assert re.search(r"'order_ref': id-like: .*100% of its values are distinct", log)
    assert "dropping column 'notes': free text" in log and "prepare.text_length" in log
    assert re.search(r"date 'observed' \(2007-.* the model reads its parts", log)
    assert re.search(r"timestamp 'logged_at' .* the model reads its parts", log)
    schema = read_schema(repo / ".bentoml/models/tabserve/v1")
    assert schema.feature("observed").kind == "date"
    assert schema.feature("logged_at").kind == "timestamp"
    assert "order_ref" not in schema.feature_names and "notes" not in schema.feature_names
    station = schema.feature("station")
    assert station.other == "(other)" and len(station.categories or []) == 50
    assert "observed.dayofyear" in schema.model_feature_names
    assert "logged_at.hour" in schema.model_feature_names
    report = json.loads((repo / "data/prepared/report.json").read_text())
    assert report["features"]["date"] == 1 and report["features"]["timestamp"] == 1
    assert report["derived"]["observed"][0] == "observed.year"
    folded = report["folded"]["station"]
    assert folded["kept"] == 49 and 0 < folded["values_folded"] <= STATIONS - 49  # in train
    assert folded["training_rows"] > 0
    assert "categorical 'station' keeps its 49 most frequent values; the rest fold" in log


def test_new_dates_and_categories_are_answered_counted_and_explained(penguins, tmp_path) -> None:
    repo, _ = penguins
    rows = _new_rows(repo)
    UserStore(tmp_path / "users.json", hasher=cheap_hasher()).add(
        "alice", PASSWORD, "predict,explain"
    )
    secret = secrets.token_urlsafe(48)
    env = server_env(
        tmp_path, "tabserve:v1", TABSERVE_JWT_SECRET=secret, BENTOML_HOME=str(repo / ".bentoml")
    )
    with serving(env, tmp_path / "serve.log") as served:
        token = httpx.post(
            f"{served.url}/auth/token", data={"username": "alice", "password": PASSWORD}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        answered = httpx.post(f"{served.url}/predict", json={"rows": rows}, headers=headers)
        assert answered.status_code == 200, answered.text
        # As if the island were missing (station: its `other` level): the core's own answer.
        as_missing = pd.DataFrame([rows[0], {**rows[1], "island": None}])
        expected = served_answers(repo, as_missing)
        got = answered.json()
        assert [a["label"] for a in got] == list(expected["label"])
        for answer, (_, row) in zip(got, expected.iterrows(), strict=True):
            for label, p in answer["probabilities"].items():
                assert p == pytest.approx(row[f"proba_{label}"], abs=1e-6)

        explained = httpx.post(f"{served.url}/explain", json={"rows": rows}, headers=headers)
        assert explained.status_code == 200, explained.text
        contributions = explained.json()[1]["contributions"]
        assert set(contributions) == set(
            read_schema(repo / ".bentoml/models/tabserve/v1").feature_names
        )  # the date, never its parts

        metrics = httpx.get(f"{served.url}/metrics").text
        assert 'tabserve_unknown_category_total{feature="island"} 2.0' in metrics
        assert 'tabserve_unknown_category_total{feature="station"} 2.0' in metrics
        share = re.search(r'tabserve_feature_new_category_share\{feature="island"\} (\S+)', metrics)
        assert share and float(share.group(1)) > 0

    refusing = env | {"TABSERVE_UNKNOWN_CATEGORY": "refuse"}
    with serving(refusing, tmp_path / "serve-refuse.log") as served:
        token = httpx.post(
            f"{served.url}/auth/token", data={"username": "alice", "password": PASSWORD}
        ).json()["access_token"]
        refused = httpx.post(
            f"{served.url}/predict",
            json={"rows": rows},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert refused.status_code == 422
        assert len(refused.content) < 4000, len(refused.content)
        body = refused.text
        assert "'Atlantis'" in body
        assert "ST-NEW" not in body  # station has an `other` level: it takes any value
        assert NEW_DAY not in body  # a new date is a date, never an error


def test_the_registered_model_answers_new_values_like_the_service(penguins, monkeypatch) -> None:
    import mlflow

    repo, _ = penguins
    rows = _new_rows(repo)
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/tabserve@champion")
    frame = pd.DataFrame(rows)
    expected = served_answers(repo, frame)
    pd.testing.assert_frame_equal(model.predict(frame), expected, check_dtype=False)
    # Dates as a Parquet file holds them (a date type), not as text: the same answers.
    typed = frame.assign(
        observed=pd.to_datetime(frame["observed"]),
        logged_at=pd.to_datetime(frame["logged_at"], format="ISO8601", utc=True),
    )
    pd.testing.assert_frame_equal(model.predict(typed), expected, check_dtype=False)
    monkeypatch.setenv("TABSERVE_UNKNOWN_CATEGORY", "refuse")
    with pytest.raises(Exception, match=r"never seen in training \(island: \['Atlantis'\]\)"):
        model.predict(frame)
