"""Monitoring for real: a Prometheus server (Debian's binary) scraping two real
``bentoml serve`` (a classifier and a regression model) every second, with the alert
rules of ``deploy/prometheus/alerts.yml``.

Rows from the model's own data keep the drift gauges low; rows with one numeric feature
shifted by five standard deviations raise that feature's PSI above the alert threshold
(and clearly above the others), and the drift alert goes pending. Every PromQL query of
the Grafana dashboard returns at least one series. With the inference log on, every
answered row is one JSON line, and ``make drift-report`` turns the log into a page.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from load_tests.processes import free_port, running
from tabserve.security.users import UserStore
from tests.monitoring import ALERTS, dashboard_queries
from tests.support import (
    REPO,
    TestModel,
    cheap_hasher,
    import_test_model,
    server_env,
    serving,
    wait_until,
)

pytestmark = pytest.mark.slow
PASSWORD = "monitoring test password"
SHIFTED = "mean radius"
WINDOW_ROWS = 300
PSI_THRESHOLD = 0.2  # the drift alert's (deploy/prometheus/alerts.yml)


@dataclass(frozen=True)
class Served:
    url: str
    model: TestModel
    headers: dict[str, str]


@dataclass(frozen=True)
class Stack:
    classifier: Served
    regressor: Served
    prometheus: str
    inference_log: Path
    home: Path


def _server_env(root: Path, model: TestModel, **extra: str) -> dict[str, str]:
    users = UserStore(root / "users.json", hasher=cheap_hasher())
    users.add("alice", PASSWORD, "predict,explain,feedback")
    return server_env(
        root,
        model.tag,
        TABSERVE_JWT_SECRET=secrets.token_urlsafe(48),
        TABSERVE_RECORD_URL=f"sqlite:///{root / 'record.db'}",
        TABSERVE_RECORD_FLUSH_S="0.1",
        TABSERVE_LIVE_QUALITY_INTERVAL_S="1",
        TABSERVE_LOGIN_MAX_FAILURES="2",
        TABSERVE_DRIFT_WINDOW_ROWS=str(WINDOW_ROWS),
        TABSERVE_DRIFT_MIN_ROWS="50",
        TABSERVE_DRIFT_PUBLISH_INTERVAL_S="0",
        **extra,
    )


def _token(url: str) -> dict[str, str]:
    response = httpx.post(f"{url}/auth/token", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from sklearn.datasets import load_breast_cancer, load_diabetes

    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).is_file():
        pytest.fail("no prometheus: install Debian's prometheus (make system-deps)")
    root = tmp_path_factory.mktemp("monitoring")
    cancer = load_breast_cancer(as_frame=True).frame
    classifier = import_test_model(
        root / "c" / "bentoml", cancer, "target", {"objective": "binary:logistic"}
    )
    diabetes = load_diabetes(as_frame=True, scaled=False).frame
    regressor = import_test_model(
        root / "r" / "bentoml", diabetes, "target", {"objective": "reg:squarederror"}
    )
    log_dir = root / "inference"
    c_env = _server_env(
        root / "c",
        classifier,
        TABSERVE_INFERENCE_LOG_DIR=str(log_dir),
        TABSERVE_SHADOW_MODEL=classifier.tag,  # the shadow panel's series
    )
    r_env = _server_env(root / "r", regressor)
    with serving(c_env, root / "c.log") as c, serving(r_env, root / "r.log") as r:
        targets = [c.url.removeprefix("http://"), r.url.removeprefix("http://")]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "tabserve", "static_configs": [{"targets": targets}]}],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        command = [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        url = f"http://127.0.0.1:{port}"
        with running(
            command, ready_url=f"{url}/-/ready", log=root / "prometheus.log", env=dict(os.environ)
        ):
            yield Stack(
                Served(c.url, classifier, _token(c.url)),
                Served(r.url, regressor, _token(r.url)),
                url,
                log_dir,
                root / "c" / "bentoml",
            )


def _query(stack: Stack, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["result"])


def _wait(probe: Any, what: str) -> Any:
    """Prometheus scrapes and evaluates every second: ask as often, for 40 s."""
    return wait_until(probe, what, timeout_s=40, interval_s=1)


def _predict(served: Served, rows: list[dict[str, Any]]) -> httpx.Response:
    response = httpx.post(f"{served.url}/predict", json={"rows": rows}, headers=served.headers)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture(scope="module")
def drifted(stack: Stack) -> dict[str, float]:
    """The classifier's window, first full of its own data, then of shifted rows."""
    rows = stack.classifier.model.rows
    for start in range(0, WINDOW_ROWS, 50):
        _predict(stack.classifier, rows[start : start + 50])
    calm = _wait(
        lambda: _query(stack, 'tabserve_drift_window_rows{job="tabserve"} >= 300'),
        "a full window of the model's own rows",
    )
    assert calm
    before = {
        r["metric"]["feature"]: float(r["value"][1])
        for r in _query(stack, "max by (feature) (tabserve_feature_drift_psi)")
    }
    assert before and max(before.values()) < 0.1, before
    spread = _spread(rows, SHIFTED)
    shifted = [{**row, SHIFTED: row[SHIFTED] + 5 * spread} for row in rows[:WINDOW_ROWS]]
    for start in range(0, WINDOW_ROWS, 50):
        _predict(stack.classifier, shifted[start : start + 50])
    found = _wait(
        lambda: _query(
            stack, f'tabserve_feature_drift_psi{{feature="{SHIFTED}"}} > {PSI_THRESHOLD}'
        ),
        f"the PSI of {SHIFTED!r} above {PSI_THRESHOLD}",
    )
    assert found
    return {
        r["metric"]["feature"]: float(r["value"][1])
        for r in _query(stack, "max by (feature) (tabserve_feature_drift_psi)")
    }


def _spread(rows: list[dict[str, Any]], name: str) -> float:
    values = [row[name] for row in rows]
    mean = sum(values) / len(values)
    return float((sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5)


def test_the_shifted_feature_drifts_above_the_threshold_and_the_others_do_not(
    drifted: dict[str, float],
) -> None:
    others = {k: v for k, v in drifted.items() if k != SHIFTED}
    assert drifted[SHIFTED] > PSI_THRESHOLD
    assert drifted[SHIFTED] > 3 * max(others.values()), drifted


def test_the_drift_alert_goes_pending(stack: Stack, drifted: dict[str, float]) -> None:
    alerts = _wait(
        lambda: _query(stack, 'ALERTS{alertname="TabserveFeatureDrift"}'),
        "the drift alert",
    )
    states = {(a["metric"]["feature"], a["metric"]["alertstate"]) for a in alerts}
    assert (SHIFTED, "pending") in states or (SHIFTED, "firing") in states, states


def _feedback(served: Served, answers: list[dict[str, Any]], truths: list[Any]) -> None:
    sent = httpx.post(
        f"{served.url}/feedback",
        json={"rows": [{"id": a["id"], "actual": t} for a, t in zip(answers, truths, strict=True)]},
        headers=served.headers,
    )
    assert sent.status_code == 200 and sent.json()["counts"]["recorded"] == len(answers), sent.text


def test_the_quality_alert_goes_pending_on_wrong_answers(stack: Stack) -> None:
    """Every answer wrong for 200 rows: live accuracy far under the test figure (0.9 in
    the test model's lineage) on enough rows, and TabserveQualityDrop goes pending."""
    served = stack.classifier
    answers = _predict(served, served.model.rows[:200]).json()
    _feedback(served, answers, [1 - int(a["label"]) for a in answers])
    alerts = _wait(
        lambda: _query(stack, 'ALERTS{alertname="TabserveQualityDrop"}'), "the quality alert"
    )
    assert {(a["metric"]["metric"], a["metric"]["alertstate"]) for a in alerts} <= {
        ("accuracy", "pending"),
        ("accuracy", "firing"),
    }, alerts
    live = _query(stack, 'tabserve_live_quality{metric="accuracy", role="champion"}')
    assert live and float(live[0]["value"][1]) == 0.0


def test_every_dashboard_query_returns_a_series(stack: Stack, drifted: dict[str, float]) -> None:
    # What some panels need to have happened: an error status, failed and throttled
    # logins, a regression model's predictions, explanations.
    for _ in range(4):
        httpx.post(
            f"{stack.classifier.url}/auth/token", data={"username": "alice", "password": "nope"}
        )
    bad = httpx.post(
        f"{stack.classifier.url}/predict", json={"rows": [{}]}, headers=stack.classifier.headers
    )
    assert bad.status_code == 422
    answers = _predict(stack.regressor, stack.regressor.model.rows[:40]).json()
    _feedback(stack.regressor, answers, stack.regressor.model.targets[:40])  # live quality
    httpx.post(
        f"{stack.classifier.url}/explain",
        json={"rows": stack.classifier.model.rows[:3]},
        headers=stack.classifier.headers,
    )
    queries = dashboard_queries(variables={"job": "tabserve"}, interval="20s")
    assert len(queries) >= 20

    def empty() -> list[str]:
        return [f"{q.panel}: {q.expr}" for q in queries if not _query(stack, q.expr)]

    deadline = time.monotonic() + 30
    missing = empty()
    while missing and time.monotonic() < deadline:
        time.sleep(2)
        missing = empty()
    assert not missing, "\n".join(missing)


def test_inference_log_has_one_line_per_answered_row(
    stack: Stack, drifted: dict[str, float]
) -> None:
    served = stack.classifier
    before = _lines(stack.inference_log)
    responses = [
        _predict(served, served.model.rows[i : i + n]) for i, n in ((0, 1), (1, 4), (5, 5))
    ]
    refused = httpx.post(
        f"{served.url}/predict", json={"rows": [{"nope": 1}]}, headers=served.headers
    )
    assert refused.status_code == 422

    def new_lines() -> list[dict[str, Any]] | None:
        got = _lines(stack.inference_log)
        return got[len(before) :] if len(got) >= len(before) + 10 else None

    lines = _wait(new_lines, "10 new lines in the inference log")
    assert len(lines) == 10  # three answered requests, ten rows; the refused one: nothing
    expected = [
        (response.headers["x-request-id"], answer)
        for response in responses
        for answer in response.json()
    ]
    assert [(line["request_id"], line["answer"]) for line in lines] == expected
    for line in lines:
        assert line["model_version"] == "v1" and line["endpoint"] == "predict"
        assert line["source"] == "api" and set(line["row"]) == set(
            served.model.schema.feature_names
        )
        assert line["time"].endswith("+00:00")
    text = "".join(p.read_text() for p in stack.inference_log.glob("*"))
    token = served.headers["Authorization"].split()[1]
    assert token not in text and "Bearer" not in text and PASSWORD not in text


def _lines(folder: Path) -> list[dict[str, Any]]:
    from tabserve.core.inference_records import read_log

    return read_log(folder) if folder.exists() else []


def test_make_drift_report_writes_the_page_from_the_log_and_from_rows(
    stack: Stack, drifted: dict[str, float], tmp_path: Path
) -> None:
    env = {**os.environ, "BENTOML_HOME": str(stack.home)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    out = tmp_path / "drift.html"
    result = _drift_report(stack.inference_log, out, env)
    assert "largest feature PSI" in result.stdout and f"({SHIFTED})" in result.stdout
    page = out.read_text()
    assert "Drift report" in page and page.count("plotly") > 3
    for name in stack.classifier.model.schema.feature_names:
        assert f">{name}<" in page
    # The same page from rows of the model's own data: no drift there.
    import pandas as pd

    rows = tmp_path / "rows.csv"
    pd.DataFrame(stack.classifier.model.rows).to_csv(rows, index=False)
    result = _drift_report(rows, out, env)
    largest = float(result.stdout.split("largest feature PSI ")[1].split()[0])
    assert largest < 0.05, result.stdout
    assert json.dumps("significant shift") not in out.read_text()


def _drift_report(log: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``make drift-report LOG=log OUT=out`` for the classifier's model."""
    result = subprocess.run(
        ["make", "-s", "drift-report", f"LOG={log}", f"OUT={out}", "MODEL_TAG=tabserve:v1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result
