"""``TABSERVE_LOG_FORMAT=json`` on a real ``bentoml serve``: every line it writes is JSON.

One server (the breast_cancer model) gets a login, predictions, explanations, the
model card, a validation error, missing and wrong credentials, an unknown route, a
malformed HTTP request (answered by uvicorn itself) and an unhandled error (the users
file corrupted under it: a 500 with a stack trace in the log), with BentoML's access log
and tracing switched on. Once it has stopped,
every line of its output (stdout and stderr, supervisor and worker) must parse as a
JSON object, and each answer's ``X-Request-ID`` must be on its log lines.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import TEST_PASSWORD
from tests.support import TRACING_ON, child_env, serving

pytestmark = pytest.mark.slow

FIELDS = {"time", "level", "logger", "message", "request_id", "trace_id", "component"}
REQUEST_ID = re.compile(r"[0-9a-f]{16}")
TRACE_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Run:
    """What the server was asked, what it answered, and every line it wrote."""

    responses: dict[str, httpx.Response]
    records: list[dict[str, Any]]


def _exercise(url: str, rows: list[dict[str, Any]], users: Path) -> dict[str, httpx.Response]:
    answers: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        login = {"username": "alice", "password": TEST_PASSWORD}
        answers["login"] = client.post("/auth/token", data=login)
        auth = {"Authorization": f"Bearer {answers['login'].json()['access_token']}"}
        answers["predict"] = client.post("/predict", json={"rows": rows[:5]}, headers=auth)
        answers["explain"] = client.post("/explain", json={"rows": rows[:2]}, headers=auth)
        answers["model"] = client.get("/model", headers=auth)
        answers["invalid"] = client.post("/predict", json={"rows": [{"x": 1}]}, headers=auth)
        answers["anonymous"] = client.post("/predict", json={"rows": rows[:1]})
        answers["unknown route"] = client.get("/no-such-route", headers=auth)
        answers["wrong password"] = client.post(
            "/auth/token", data={"username": "alice", "password": "not the password"}
        )
        users.write_text("{not json")  # a broken users file: the next login fails inside
        answers["internal error"] = client.post("/auth/token", data=login)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"NOT HTTP AT ALL\x00\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
    return answers


@pytest.fixture(scope="module")
def run(
    test_env: dict[str, str],
    models: dict[str, Any],
    users_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    root = tmp_path_factory.mktemp("json-logs")
    users = root / "users.json"  # a private copy: this test corrupts it
    shutil.copy(users_file, users)
    env = {
        **child_env(),
        **test_env,
        "TABSERVE_MODEL_TAG": "tabserve:v1",
        "TABSERVE_USERS_FILE": str(users),
        "TABSERVE_LOG_FORMAT": "json",
        # BentoML's access log and tracing on (both off by default), so that their lines
        # are shown to be JSON with the request's ids too; tests/service/test_request_ids.py
        # covers the defaults.
        "TABSERVE_ACCESS_LOG": "all",
        "BENTOML_CONFIG_OPTIONS": TRACING_ON,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # bentoml serve sets up its own
    log = root / "serve.log"
    with serving(env, log) as served:
        responses = _exercise(served.url, models["binary"].rows, users)
    # Stopped: the log is complete, shutdown lines included.
    lines = log.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"line {number} of the server output is not JSON: {line!r}")
        assert isinstance(record, dict), f"line {number} is not an object: {line!r}"
        records.append(record)
    return Run(responses, records)


def test_the_requests_got_their_expected_answers(run: Run) -> None:
    statuses = {name: response.status_code for name, response in run.responses.items()}
    assert statuses == {
        "login": 200,
        "predict": 200,
        "explain": 200,
        "model": 200,
        "invalid": 422,
        "anonymous": 401,
        "unknown route": 404,
        "wrong password": 401,
        "internal error": 500,
    }


def test_every_line_is_an_object_with_the_fields(run: Run) -> None:
    assert len(run.records) > len(run.responses)  # start-up, requests, shutdown
    for record in run.records:
        assert set(record) >= FIELDS, record
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, record
        assert datetime.fromisoformat(record["time"]).utcoffset() is not None, record
        assert isinstance(record["message"], str), record


def test_each_answer_is_logged_with_its_request_id_and_trace_id(run: Run) -> None:
    for name, response in run.responses.items():
        request_id = response.headers["x-request-id"]
        assert REQUEST_ID.fullmatch(request_id), name
        lines = [r for r in run.records if r["request_id"] == request_id]
        access = [r for r in lines if r["logger"] == "bentoml.access"]
        assert len(access) == 1, f"{name}: no access log line with request id {request_id}"
        assert f"status={response.status_code}" in access[0]["message"], name
        # One request, one trace: every line of it names the same trace id.
        traces = {r["trace_id"] for r in lines}
        assert len(traces) == 1, f"{name}: {traces}"
        assert TRACE_ID.fullmatch(traces.pop() or ""), name


def test_lines_written_inside_a_request_carry_its_ids(run: Run) -> None:
    in_request = [r for r in run.records if r["logger"] in {"bentoml.access", "tabserve.gateway"}]
    assert in_request
    for record in in_request:
        assert REQUEST_ID.fullmatch(record["request_id"] or ""), record
        assert TRACE_ID.fullmatch(record["trace_id"] or ""), record


def test_an_unhandled_error_is_one_line_with_its_stack_trace(run: Run) -> None:
    request_id = run.responses["internal error"].headers["x-request-id"]
    assert run.responses["internal error"].json()["error"]["request_id"] == request_id
    (error,) = [r for r in run.records if r["request_id"] == request_id and r["level"] == "ERROR"]
    assert error["logger"] == "tabserve.gateway"
    assert error["exc_info"].startswith("Traceback (most recent call last):")
    assert "\n" in error["exc_info"]  # the whole trace, inside one JSON line


def test_supervisor_and_uvicorn_lines_are_json_too(run: Run) -> None:
    components = {r["component"] for r in run.records}
    assert "cli" in components  # the `bentoml serve` supervisor
    assert any(c and c.startswith("entry_service:tabserve") for c in components)  # the worker
    starting = [r for r in run.records if r["message"].startswith("Starting production HTTP")]
    assert starting
    assert starting[0]["component"] == "cli"
    invalid = [r for r in run.records if r["logger"] == "uvicorn.error"]
    assert any("Invalid HTTP request" in r["message"] for r in invalid)
