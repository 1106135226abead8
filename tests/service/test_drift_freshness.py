"""Drift gauges that are current when they are read (issue 34, 4b), on a real
``bentoml serve`` with the default publication interval (1 s).

Before: the gauges were recomputed only by a model call at least a second after the last
computation, so after a burst a scrape read the window as it stood early in the burst
(600 rows sent in one second, then ``/metrics`` two seconds later: 50 rows, no PSI).
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

import httpx
import pytest

from tabserve.security.users import UserStore
from tests.support import cheap_hasher, import_test_model, server_env, serving

pytestmark = pytest.mark.slow
PASSWORD = "drift freshness test password"
BURST_ROWS = 600
PER_REQUEST = 50


def _gauge(metrics: str, name: str) -> float | None:
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_a_scrape_after_a_burst_reads_every_row_served(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    model = import_test_model(
        tmp_path / "bentoml", frame, "target", {"objective": "binary:logistic"}
    )
    UserStore(tmp_path / "users.json", hasher=cheap_hasher()).add("alice", PASSWORD, "predict")
    env = server_env(
        tmp_path,
        model.tag,
        TABSERVE_JWT_SECRET=secrets.token_urlsafe(48),
        TABSERVE_DRIFT_WINDOW_ROWS="1000",
        TABSERVE_DRIFT_MIN_ROWS="500",
    )
    rows = (model.rows * 2)[:BURST_ROWS]
    with serving(env, tmp_path / "serve.log") as served:
        token = httpx.post(
            f"{served.url}/auth/token", data={"username": "alice", "password": PASSWORD}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(headers=headers, timeout=30) as client:
            for start in range(0, BURST_ROWS, PER_REQUEST):
                answered = client.post(
                    f"{served.url}/predict", json={"rows": rows[start : start + PER_REQUEST]}
                )
                assert answered.status_code == 200, answered.text
        # No request after the burst: only the publisher can bring the gauges up to date.
        time.sleep(2.5)
        metrics = httpx.get(f"{served.url}/metrics").text
    assert _gauge(metrics, "tabserve_drift_window_rows") == BURST_ROWS
    psi = re.findall(r'^tabserve_feature_drift_psi\{.*feature="([^"]+)".*\} (\S+)$', metrics, re.M)
    assert {name for name, _ in psi} == set(model.schema.feature_names)
    assert _gauge(metrics, "tabserve_prediction_drift_psi") is not None
