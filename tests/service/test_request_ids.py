"""Request ids and error lines on a real ``bentoml serve``, with tracing off and on.

By default (no tracing exporter configured) tabserve switches OpenTelemetry off
(``OTEL_SDK_DISABLED=true``, ``tabserve/serving/tracing.py``) and BentoML's access log too
(``TABSERVE_ACCESS_LOG=errors``). BentoML takes a request's id from its span, which is
then the invalid one (id 0) for every request: each answer must still carry its own id,
in ``X-Request-ID``, BentoML's ``X-BentoML-Request-ID`` and the error envelope, and every
error answer must be logged with it. With an exporter configured through BentoML's own
configuration, tracing stays on and the ids are the spans' again.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    CHEAP_ARGON2,
    TRACING_ON,
    cheap_hasher,
    child_env,
    import_test_model,
    serving,
)

pytestmark = pytest.mark.slow

HEX_ID = re.compile(r"^[0-9a-f]{16}$")


def _environment(tmp_path: Path, **extra: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    from sklearn.datasets import load_breast_cancer

    from tabserve.security.users import UserStore

    home = tmp_path / "bentoml"
    model = import_test_model(
        home, load_breast_cancer(as_frame=True).frame, "target", {"objective": "binary:logistic"}
    )
    users = tmp_path / "users.json"
    UserStore(users, hasher=cheap_hasher()).add("alice", "correct-horse-1", "predict")
    base = child_env()
    for name in ("OTEL_SDK_DISABLED", "TABSERVE_ACCESS_LOG", "BENTOML_CONFIG_OPTIONS"):
        base.pop(name, None)
    env = {
        **base,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "TABSERVE_ENV": "development",
        "TABSERVE_JWT_SECRET": secrets.token_urlsafe(48),
        "TABSERVE_USERS_FILE": str(users),
        "TABSERVE_LOCAL_DIR": str(tmp_path / "local"),
        "TABSERVE_MODEL_TAG": model.tag,
        **CHEAP_ARGON2,
        **extra,
    }
    return env, model.rows


def _answers(url: str, rows: list[dict[str, Any]]) -> dict[str, list[httpx.Response]]:
    """Good predictions and three kinds of error answers, each its own request."""
    with httpx.Client(base_url=url, timeout=30) as client:
        login = client.post(
            "/auth/token", data={"username": "alice", "password": "correct-horse-1"}
        )
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        return {
            "ok": [
                client.post("/predict", json={"rows": rows[i : i + 2]}, headers=auth)
                for i in range(6)
            ],
            "invalid": [client.post("/predict", json={"rows": [{"nope": 1}]}, headers=auth)],
            "anonymous": [client.post("/predict", json={"rows": rows[:1]})],
            "missing": [client.get("/no-such-route", headers=auth)],
        }


def _check_ids(answers: dict[str, list[httpx.Response]]) -> list[str]:
    """Every answer has its own valid id, the same in each place it appears; returns them."""
    ids = []
    for kind, responses in answers.items():
        for response in responses:
            rid = response.headers.get("x-request-id", "")
            assert HEX_ID.match(rid) and rid != "0" * 16, (kind, rid)
            if kind == "ok":
                assert response.status_code == 200, response.text
                assert response.headers.get("x-bentoml-request-id") == rid
            else:
                assert response.status_code >= 400
                assert response.json()["error"]["request_id"] == rid
            ids.append(rid)
    assert len(set(ids)) == len(ids), ids
    return ids


def test_tracing_off_by_default_every_answer_has_its_own_id_and_errors_are_logged(
    tmp_path: Path,
) -> None:
    env, rows = _environment(tmp_path)
    log = tmp_path / "serve.log"
    with serving(env, log) as served:
        answers = _answers(served.url, rows)
    _check_ids(answers)
    text = log.read_text()
    for kind in ("invalid", "anonymous", "missing"):
        (response,) = answers[kind]
        rid = response.headers["x-request-id"]
        lines = [line for line in text.splitlines() if rid in line]
        assert lines, f"the {kind} answer ({response.status_code}) was not logged with its id"
        assert str(response.status_code) in lines[0]
    for response in answers["ok"]:
        assert response.headers["x-request-id"] not in text  # no access line per request
    assert "path=/predict" not in text  # BentoML's access log is off
    assert "trace=" not in text  # no span ids: tracing is off


def test_with_an_exporter_configured_tracing_stays_on(tmp_path: Path) -> None:
    env, rows = _environment(
        tmp_path,
        # An exporter in BentoML's own configuration (in_memory: BentoML's test exporter).
        BENTOML_CONFIG_OPTIONS=TRACING_ON,
        TABSERVE_ACCESS_LOG="all",
    )
    log = tmp_path / "serve.log"
    with serving(env, log) as served:
        answers = _answers(served.url, rows)
    _check_ids(answers)
    access = [line for line in log.read_text().splitlines() if "path=/predict" in line]
    assert len(access) >= len(answers["ok"])  # BentoML's access log: a line per request
    assert all("trace=" in line and "sampled=1" in line for line in access)  # traced
