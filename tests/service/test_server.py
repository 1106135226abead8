"""A real ``bentoml serve`` subprocess (breast_cancer model), on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np
import psutil
import pytest
import xgboost as xgb

from load_tests.scrape import batches
from tests.service.conftest import TEST_PASSWORD
from tests.support import serving

pytestmark = pytest.mark.slow


def _server_env(test_env: dict[str, str], **overrides: str) -> dict[str, str]:
    env = {**os.environ, **test_env, "TABSERVE_MODEL_TAG": "tabserve:v1", **overrides}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # bentoml serve sets up its own
    return env


@dataclass(frozen=True)
class Server:
    """A running server: its base URL, its log file and its ``bentoml serve`` process."""

    url: str
    log: Path
    pid: int


@pytest.fixture(scope="module")
def running(
    test_env: dict[str, str],
    models: dict[str, Any],
    users_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """A running ``bentoml serve service:Tabserve``."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with serving(_server_env(test_env), log) as served:
        yield Server(served.url, log, served.process.pid)


@pytest.fixture(scope="module")
def server(running: Server) -> str:
    """Base URL of the running server."""
    return running.url


@pytest.fixture(scope="module")
def model(models: dict[str, Any]) -> Any:
    return models["binary"]


@pytest.fixture(scope="module")
def access_token(server: str) -> str:
    """A token from the real OAuth2 password flow (argon2 check included)."""
    response = httpx.post(
        f"{server}/auth/token", data={"username": "alice", "password": TEST_PASSWORD}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _expected(model: Any, rows: list[dict[str, Any]]) -> list[float]:
    raw = model.booster.predict(xgb.DMatrix(model.schema.to_frame(rows), enable_categorical=True))
    return [float(p) for p in raw.astype(np.float64)]


def test_predictions_equal_the_models_own_output(
    server: str, model: Any, access_token: str
) -> None:
    rows = model.rows[:25]
    response = httpx.post(
        f"{server}/predict",
        json={"rows": rows},
        headers={"Authorization": f"Bearer {access_token}"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "v1"
    got = [answer["probabilities"]["1"] for answer in response.json()]
    assert got == _expected(model, rows)
    assert [a["label"] for a in response.json()] == [int(p > 0.5) for p in got]


def test_a_request_larger_than_the_batch_is_split_and_rejoined(
    server: str, model: Any, access_token: str
) -> None:
    rows = (model.rows * 2)[:1000]  # over the default max batch size (256 rows)
    response = httpx.post(
        f"{server}/predict",
        json={"rows": rows},
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert [a["probabilities"]["1"] for a in response.json()] == _expected(model, rows)


def test_concurrent_requests_of_mixed_sizes_get_their_own_rows(
    server: str, model: Any, access_token: str
) -> None:
    headers = {"Authorization": f"Bearer {access_token}"}
    requests = [model.rows[10 * i : 10 * i + 1 + i % 7] for i in range(24)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server, headers=headers, timeout=60) as client:
            return await asyncio.gather(
                *(client.post("/predict", json={"rows": r}) for r in requests)
            )

    for rows, response in zip(requests, asyncio.run(burst()), strict=True):
        assert response.status_code == 200, response.text
        assert [a["probabilities"]["1"] for a in response.json()] == _expected(model, rows)


def test_burst_of_single_rows_batches_and_answers_each_caller(
    server: str, model: Any, access_token: str
) -> None:
    headers = {"Authorization": f"Bearer {access_token}"}
    rows = model.rows[100:164]
    expected = _expected(model, rows)
    for row in model.rows[:5]:  # let the dispatcher finish its warm-up
        httpx.post(f"{server}/predict", json={"rows": [row]}, headers=headers)
    before = batches(server)

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(
            base_url=server, headers=headers, limits=limits, timeout=60
        ) as client:
            return await asyncio.gather(
                *(client.post("/predict", json={"rows": [row]}) for row in rows)
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 64
    got = [r.json()[0]["probabilities"]["1"] for r in responses]
    assert got == expected  # every caller got its own row's answer

    formed = batches(server) - before
    assert formed.calls < 64, "no batch merged two requests"
    assert formed.single < formed.calls, "every model call had a single row"


def test_errors_use_the_envelope_through_the_real_server(
    running: Server, model: Any, access_token: str
) -> None:
    server = running.url
    auth = {"Authorization": f"Bearer {access_token}"}
    cases = [
        (
            httpx.post(
                f"{server}/predict",
                content=b"{",
                headers={**auth, "content-type": "application/json"},
            ),
            400,
            "malformed_request",
        ),
        (httpx.get(f"{server}/nowhere", headers=auth), 404, "not_found"),
        (httpx.put(f"{server}/predict", headers=auth), 405, "method_not_allowed"),
        (
            httpx.post(
                f"{server}/predict",
                content=b"\x80\x04N.",
                headers={**auth, "content-type": "application/vnd.bentoml+pickle"},
            ),
            415,
            "unsupported_media_type",
        ),
        (
            httpx.post(f"{server}/predict", json={"rows": [{"mean radius": "big"}]}, headers=auth),
            422,
            "validation_error",
        ),
        (
            httpx.post(f"{server}/predict", json={"rows": model.rows[:1] * 1001}, headers=auth),
            413,
            "payload_too_large",
        ),
    ]
    time.sleep(0.5)  # let the log flush
    log_text = running.log.read_text()
    assert access_token not in log_text and TEST_PASSWORD not in log_text
    for response, status, code in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code
        assert error["request_id"] == response.headers["x-request-id"]
        assert f"request_id={error['request_id']}" in log_text  # the server log has the id


def _claims(settings: Any, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "alice",
        "scopes": ["predict"],
        "iat": now,
        "exp": now + 60,
        "jti": "t",
        **changes,
    }


def test_auth_failures_through_the_real_server(
    server: str, model: Any, settings: Any, token: Any
) -> None:
    key, kid = settings.keys.signing_key, {"kid": settings.keys.key_id}
    now = int(time.time())
    header_none = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    body_none = jwt.utils.base64url_encode(json.dumps(_claims(settings)).encode()).decode()
    refused = {
        "no token": {},
        "bad signature": jwt.encode(_claims(settings), "y" * 48, "HS256", headers=kid),
        "expired": jwt.encode(
            _claims(settings, exp=now - 300, iat=now - 400), key, "HS256", headers=kid
        ),
        "alg none": f"{header_none}.{body_none}.",
        "wrong aud": jwt.encode(_claims(settings, aud="x"), key, "HS256", headers=kid),
        "wrong iss": jwt.encode(_claims(settings, iss="x"), key, "HS256", headers=kid),
    }
    body = {"rows": model.rows[:1]}
    for name, credential in refused.items():
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        response = httpx.post(f"{server}/predict", json=body, headers=headers)
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"].startswith("Bearer"), name
        assert response.json()["error"]["code"] == "unauthenticated", name
    response = httpx.post(
        f"{server}/explain", json=body, headers={"Authorization": f"Bearer {token('predict')}"}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def _context_switches(pid: int) -> int:
    """Context switches so far of every thread of process ``pid``, summed."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[-1])
    return total


def test_an_idle_worker_waits_for_work(running: Server) -> None:
    """An idle worker's event loop sleeps until a request comes. Gradio's queue loops
    polled every millisecond in every worker (about 900 wake-ups a second and 4 % of a
    core with no request at all) although the UI's events do not use the queue
    (ui/mount.py: slow_queue_polling)."""
    workers = [
        p
        for p in psutil.Process(running.pid).children(recursive=True)
        if "_bentoml_impl.worker.service" in " ".join(p.cmdline())
    ]
    assert workers, "no BentoML worker process found"
    time.sleep(1.0)  # past the earlier tests' requests
    for worker in workers:
        before, started = _context_switches(worker.pid), time.monotonic()
        time.sleep(3.0)
        rate = (_context_switches(worker.pid) - before) / (time.monotonic() - started)
        assert rate < 150, f"an idle worker woke up {rate:.0f} times a second"


def _login_page_session(server: str, user: str, password: str) -> httpx.Client:
    """A browser-like client logged in to the UI (the login form with its CSRF field)."""
    client = httpx.Client(base_url=server, follow_redirects=False, timeout=30)
    page = client.get("/ui/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    done = client.post("/ui/login", data={"username": user, "password": password, "csrf": csrf})
    assert done.status_code == 303 and done.headers["location"].endswith("/ui/"), done.headers
    return client


def _refused_within(call: Any, seconds: float = 3.0) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        response: httpx.Response = call()
        if response.status_code == 401 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_access_ends_when_a_user_is_removed_or_their_password_changes(
    server: str, model: Any, settings: Any, test_env: dict[str, str], users_file: Path
) -> None:
    """One worker, ``memory://`` state (as ``make serve``): the CLI's change reaches the
    running server through the users file, within a second, tokens and UI sessions alike."""
    import subprocess
    import sys

    from tabserve.security.users import UserStore

    store = UserStore(users_file)
    store.add("dave", TEST_PASSWORD, "predict")
    store.add("erin", TEST_PASSWORD, "predict")
    body = {"rows": model.rows[:1]}

    def token_of(user: str, password: str = TEST_PASSWORD) -> str:
        got = httpx.post(f"{server}/auth/token", data={"username": user, "password": password})
        assert got.status_code == 200, got.text
        return str(got.json()["access_token"])

    def predict(token: str) -> httpx.Response:
        return httpx.post(
            f"{server}/predict", json=body, headers={"Authorization": f"Bearer {token}"}
        )

    dave, erin = token_of("dave"), token_of("erin")
    dave_browser = _login_page_session(server, "dave", TEST_PASSWORD)
    assert predict(dave).status_code == predict(erin).status_code == 200
    assert dave_browser.get("/ui/config").status_code == 200
    time.sleep(1.1)  # the change must come after the tokens' issue second
    cli = [str(Path(sys.executable).with_name("tabserve")), "users"]
    env = {**os.environ, **test_env}
    removed = subprocess.run([*cli, "remove", "dave"], env=env, capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr
    assert "refused from now on" in removed.stdout
    refused = _refused_within(lambda: predict(dave))
    assert refused.status_code == 401 and "removed" in refused.json()["error"]["message"]
    assert _refused_within(lambda: dave_browser.get("/ui/config")).status_code == 401
    assert predict(erin).status_code == 200  # nobody else is touched
    changed = subprocess.run(
        [*cli, "add", "erin", "--scopes", "predict", "--password-stdin"],
        input="a new password\n",
        env=env,
        capture_output=True,
        text=True,
    )
    assert changed.returncode == 0, changed.stderr
    refused = _refused_within(lambda: predict(erin))
    assert refused.status_code == 401 and "changed" in refused.json()["error"]["message"]
    time.sleep(1.1)  # a login in the change's own second is refused too (whole seconds)
    assert predict(token_of("erin", "a new password")).status_code == 200
    dave_browser.close()


def test_a_signed_token_that_lives_longer_than_the_maximum_is_refused(
    server: str, model: Any, settings: Any
) -> None:
    key, kid = settings.keys.signing_key, {"kid": settings.keys.key_id}
    now = int(time.time())
    ten_years = jwt.encode(
        _claims(settings, iat=now, exp=now + 10 * 365 * 86_400), key, "HS256", headers=kid
    )
    response = httpx.post(
        f"{server}/predict",
        json={"rows": model.rows[:1]},
        headers={"Authorization": f"Bearer {ten_years}"},
    )
    assert response.status_code == 401
    assert "lifetime" in response.json()["error"]["message"]
