"""Two workers sharing a real Redis as the auth state store (``TABSERVE_WORKERS=2``).

One ``bentoml serve`` with two worker processes, ``TABSERVE_STATE_URL`` pointing at a
``redis-server`` started here on a free port, no trusted proxy, and an HS256 key
rotation in progress (the previous secret still listed). Requests are sent on fresh
connections, which the kernel hands to either worker; each answer's request id is
found in the server log next to the worker's index, so a test can insist that both
workers answered.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xgboost as xgb
from pydantic import SecretStr

from tabserve.security.tokens import issue_token
from tabserve.serving.settings import Settings
from tests.hardening.conftest import PASSWORD, add_user, assert_envelope, server_env
from tests.support import TestModel, redis_server, serving
from tests.ui.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    WAIT_MS,
    complete_row,
    csv_bytes,
    fill_form,
    log_in,
    shown_answer,
    wait_for,
    without_id,
)
from ui.session import SESSION_COOKIE

pytestmark = pytest.mark.slow

TABSERVE = str(Path(sys.executable).with_name("tabserve"))
MAX_FAILURES = 5
WORKER = re.compile(r"\[entry_service:tabserve:(\d+)\][^\n]*request_id=([0-9a-f]+)")


@dataclass(frozen=True)
class Cluster:
    """The two-worker server, its Redis and the settings that sign like it."""

    url: str
    log: Path
    env: dict[str, str]
    model: TestModel
    settings: Settings

    def token(self, sub: str = "alice", scopes: str = "predict,explain") -> str:
        return issue_token(self.settings, sub, scopes.split(","))[0]

    def workers_of(self, responses: list[httpx.Response]) -> set[str]:
        """The indices of the workers that answered ``responses`` (errors are logged)."""
        time.sleep(0.3)  # let the log flush
        by_id = {rid: worker for worker, rid in WORKER.findall(self.log.read_text())}
        return {
            by_id[r.headers["x-request-id"]]
            for r in responses
            if r.headers.get("x-request-id") in by_id
        }

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TABSERVE, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def cluster(
    penguins_root: tuple[Path, TestModel],
    rotation: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    root, model = penguins_root
    work = tmp_path_factory.mktemp("workers")
    users = work / "users.json"
    for name in ("alice", "carol", "dave", "erin"):
        add_user(users, name)
    previous, current = rotation
    with redis_server(work / "redis") as redis_url:
        env = server_env(root, model.tag, TABSERVE_USERS_FILE=str(users))
        env.update(
            TABSERVE_WORKERS="2",
            TABSERVE_STATE_URL=redis_url,
            TABSERVE_JWT_SECRET=current,
            TABSERVE_JWT_PREVIOUS_SECRETS=previous,
            TABSERVE_LOCAL_DIR=str(work / "local"),
            GRADIO_ANALYTICS_ENABLED="False",
            GRADIO_TEMP_DIR=str(work / "gradio"),
            # Which worker served each UI call is read from BentoML's access log.
            TABSERVE_ACCESS_LOG="all",
        )
        env.pop("TABSERVE_TRUSTED_PROXIES", None)
        settings = Settings(jwt_secret=SecretStr(current))
        # No keep-alive: every request opens a connection that either worker may accept,
        # so the browser's requests (Gradio's included) are spread over both.
        args = ("--timeout-keep-alive", "0")
        with serving(env, work / "serve.log", args=args, timeout_s=120) as served:
            yield Cluster(served.url, served.log, env, model, settings)


def _until_both_workers(
    cluster: Cluster,
    send: Callable[[], httpx.Response],
    among: Callable[[httpx.Response], bool] = lambda _: True,
    most: int = 40,
) -> list[httpx.Response]:
    """``send()`` on fresh connections until both workers have given answers that
    satisfy ``among`` (bounded)."""
    answers: list[httpx.Response] = []
    while len(answers) < most:
        answers.extend(send() for _ in range(4))
        if len(cluster.workers_of([a for a in answers if among(a)])) == 2:
            return answers
    raise AssertionError(f"one worker answered all {len(answers)} requests")


def _expected(cluster: Cluster, rows: list[dict[str, Any]]) -> np.ndarray:
    from tabserve.core.bundle import MODEL_FILE, read_schema

    bundle = Path(cluster.env["BENTOML_HOME"]) / "models" / "tabserve" / "v1"
    schema = read_schema(bundle)
    booster = xgb.Booster(model_file=str(bundle / MODEL_FILE))
    frame = schema.to_frame(rows)
    return booster.predict(xgb.DMatrix(frame, enable_categorical=True)).astype(np.float64)


def _metric(cluster: Cluster, name: str) -> float:
    text = httpx.get(f"{cluster.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_a_burst_of_64_concurrent_predictions_is_right_and_counted_once(
    cluster: Cluster,
) -> None:
    rows = cluster.model.rows
    requests = [rows[(5 * i) % len(rows) : (5 * i) % len(rows) + 1 + i % 4] for i in range(64)]
    headers = {"Authorization": f"Bearer {cluster.token()}"}
    before = _metric(cluster, "tabserve_predictions_total{")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=60) as c:
            return list(
                await asyncio.gather(*(c.post("/predict", json={"rows": r}) for r in requests))
            )

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 64, [a.text[:200] for a in answers]
    classes = [str(c) for c in cluster.model.schema.target.classes]
    for rows_sent, answer in zip(requests, answers, strict=True):
        got = [[row["probabilities"][c] for c in classes] for row in answer.json()]
        assert np.allclose(got, _expected(cluster, rows_sent), rtol=0, atol=1e-6)
    # Prometheus' multiprocess directory: each worker writes its own file, and /metrics
    # (whichever worker serves it) adds them up.
    sent = sum(len(r) for r in requests)
    for _ in range(4):
        assert _metric(cluster, "tabserve_predictions_total{") - before == sent


def test_the_login_throttle_holds_across_both_workers(cluster: Cluster) -> None:
    before = _metric(cluster, 'tabserve_login_attempts_total{outcome="failure"}')

    def guess() -> httpx.Response:
        return httpx.post(
            f"{cluster.url}/auth/token", data={"username": "carol", "password": "guess"}
        )

    # Until both workers have refused guesses: the limit is the same on both.
    answers = _until_both_workers(cluster, guess, among=lambda a: a.status_code == 429)
    statuses = Counter(a.status_code for a in answers)
    assert statuses[401] == MAX_FAILURES and statuses[429] == len(answers) - MAX_FAILURES
    after = _metric(cluster, 'tabserve_login_attempts_total{outcome="failure"}')
    assert after - before == MAX_FAILURES  # only five guesses reached the hash, overall
    right = httpx.post(
        f"{cluster.url}/auth/token", data={"username": "carol", "password": PASSWORD}
    )
    assert_envelope(right, 429, "too_many_requests")


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(cluster: Cluster) -> None:
    def login(password: str, client: str) -> httpx.Response:
        return httpx.post(
            f"{cluster.url}/auth/token",
            data={"username": "dave", "password": password},
            headers={"X-Forwarded-For": client},
        )

    for i in range(MAX_FAILURES):
        assert login("guess", f"198.51.100.{i}").status_code == 401
    # A "new" client by its own say-so is still the same peer: still throttled.
    assert_envelope(login(PASSWORD, "198.51.100.99"), 429, "too_many_requests")
    time.sleep(0.3)
    log = cluster.log.read_text()
    assert "failed login for user 'dave' from 127.0.0.1" in log
    assert "from 198.51.100." not in log


def test_a_token_of_the_previous_key_verifies_while_it_is_listed(
    cluster: Cluster, rotation: tuple[str, str]
) -> None:
    previous, _ = rotation
    old = issue_token(Settings(jwt_secret=SecretStr(previous)), "alice", ["predict"])[0]
    answers = _until_both_workers(
        cluster,
        lambda: httpx.post(
            f"{cluster.url}/explain",  # not its scope: a 403, logged with the worker's index
            json={"rows": cluster.model.rows[:1]},
            headers={"Authorization": f"Bearer {old}"},
        ),
    )
    assert {a.status_code for a in answers} == {403}  # verified: refused for its scope only
    body = {"rows": cluster.model.rows[:1]}
    ok = httpx.post(f"{cluster.url}/predict", json=body, headers={"Authorization": f"Bearer {old}"})
    assert ok.status_code == 200, ok.text


def _login_token(cluster: Cluster, user: str) -> dict[str, str]:
    response = httpx.post(
        f"{cluster.url}/auth/token", data={"username": user, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_a_revoked_token_is_refused_by_both_workers(cluster: Cluster) -> None:
    import jwt

    headers = _login_token(cluster, "alice")
    token = headers["Authorization"].split()[1]
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    body = {"rows": cluster.model.rows[:1]}
    assert httpx.post(f"{cluster.url}/predict", json=body, headers=headers).status_code == 200
    before = _metric(cluster, "tabserve_revoked_tokens_rejected_total")
    revoked = cluster.cli("token", "revoke", jti)
    assert revoked.returncode == 0, revoked.stderr
    answers = _until_both_workers(
        cluster, lambda: httpx.post(f"{cluster.url}/predict", json=body, headers=headers)
    )
    for answer in answers:
        assert_envelope(answer, 401, "unauthenticated")
        assert answer.json()["error"]["message"] == "token revoked (sign in again)"
    assert _metric(cluster, "tabserve_revoked_tokens_rejected_total") - before == len(answers)
    # Other tokens of the same user are unaffected.
    assert (
        httpx.post(
            f"{cluster.url}/predict", json=body, headers=_login_token(cluster, "alice")
        ).status_code
        == 200
    )


def test_removing_a_user_revokes_their_outstanding_tokens(cluster: Cluster) -> None:
    headers = _login_token(cluster, "erin")
    body = {"rows": cluster.model.rows[:1]}
    assert httpx.post(f"{cluster.url}/predict", json=body, headers=headers).status_code == 200
    time.sleep(1.1)  # the removal must come after the token's issue second
    removed = cluster.cli("users", "remove", "erin")
    assert removed.returncode == 0, removed.stderr
    assert "refused from now on" in removed.stdout
    time.sleep(1.2)  # each worker looks at the users file once a second at most
    answers = _until_both_workers(
        cluster, lambda: httpx.post(f"{cluster.url}/predict", json=body, headers=headers)
    )
    # The users file (re-read within a second) or Redis (at once) refuses it, on both.
    assert {a.json()["error"]["message"] for a in answers} <= {
        "token revoked (sign in again)",
        "token no longer valid: the user was removed (sign in again)",
    }


def test_a_password_change_ends_the_old_tokens_on_both_workers(cluster: Cluster) -> None:
    cluster.cli("users", "add", "fred", "--scopes", "predict", "--password-stdin", stdin=PASSWORD)
    headers = _login_token(cluster, "fred")
    body = {"rows": cluster.model.rows[:1]}
    assert httpx.post(f"{cluster.url}/predict", json=body, headers=headers).status_code == 200
    time.sleep(1.1)
    changed = cluster.cli(
        "users", "add", "fred", "--scopes", "predict", "--password-stdin", stdin="another one"
    )
    assert changed.returncode == 0, changed.stderr
    time.sleep(1.2)  # each worker looks at the users file once a second at most
    answers = _until_both_workers(
        cluster, lambda: httpx.post(f"{cluster.url}/predict", json=body, headers=headers)
    )
    assert {a.json()["error"]["message"] for a in answers} == {
        "token no longer valid: the user's password or scopes changed after this token was "
        "issued (sign in again)"
    }


def test_after_logout_the_old_session_cookie_is_refused_by_both_workers(
    cluster: Cluster,
) -> None:
    with httpx.Client(base_url=cluster.url, follow_redirects=False) as browser:
        page = browser.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text
        form = {"username": "alice", "password": PASSWORD, "csrf": csrf.group(1)}
        assert browser.post("/ui/login", data=form).status_code == 303
        cookie = browser.cookies[SESSION_COOKIE]
        assert browser.get("/ui/config").status_code == 200
        assert browser.get("/ui/logout").status_code == 303
    answers = _until_both_workers(
        cluster, lambda: httpx.get(f"{cluster.url}/ui/config", cookies={SESSION_COOKIE: cookie})
    )
    for answer in answers:
        assert_envelope(answer, 401, "unauthenticated")


def test_the_browser_ui_works_end_to_end_on_two_workers(cluster: Cluster, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (see the Makefile)")
    model = cluster.model
    headers = {"Authorization": f"Bearer {cluster.token()}"}
    row = complete_row(model, model.targets[0])
    expected = without_id(
        httpx.post(f"{cluster.url}/predict", json={"rows": [row]}, headers=headers).json()[0]
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            log_in(page, cluster.url, "alice", PASSWORD)
            wait_for(lambda: shown_answer(page) is not None, True, "the first prediction")
            fill_form(page, model, row)
            page.click("#ui-predict")
            wait_for(lambda: shown_answer(page), expected, "probabilities vs POST /predict")

            page.get_by_role("tab", name="Batch (CSV)").click()
            rows = [dict(r) for r in model.rows[:6]]
            batch = tmp_path / "batch.csv"
            batch.write_bytes(csv_bytes(rows, {}))
            page.set_input_files("#ui-batch-upload input[type=file]", str(batch))
            page.wait_for_function(
                "document.querySelector('#ui-batch-status').innerText.includes('Scored')",
                timeout=WAIT_MS,
            )
            assert "Scored 6 of 6 rows" in page.inner_text("#ui-batch-status")
            with page.expect_download() as download:
                page.locator("#ui-batch-download a[download]").click()
            scored = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
            answers = httpx.post(
                f"{cluster.url}/predict", json={"rows": rows}, headers=headers
            ).json()
            assert [r["label"] for r in scored] == [str(a["label"]) for a in answers]
        finally:
            browser.close()


ACCESS = re.compile(
    r"\[entry_service:tabserve:(\d)\] [^\n]*path=/ui/gradio_api/(upload|run/score_csv|file=)"
)


def test_the_ui_protocol_holds_when_its_requests_land_on_different_workers(
    cluster: Cluster,
) -> None:
    """The UI's calls, each on a fresh connection: upload a CSV, score it, download the
    result, until one round had its steps served by different workers."""
    model = cluster.model
    auth = {"Authorization": f"Bearer {cluster.token()}"}
    config = httpx.get(f"{cluster.url}/ui/config", headers=auth).json()
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    form = next(d for d in config["dependencies"] if d.get("api_name") == "predict_form")
    row = next(r for r in model.rows if all(v is not None for v in r.values()))
    data = [row[str(ids[i]).removeprefix("feature-")] for i in form["inputs"]]
    expected = without_id(
        httpx.post(f"{cluster.url}/predict", json={"rows": [row]}, headers=auth).json()[0]
    )
    rows = model.rows[:5]
    answers = httpx.post(f"{cluster.url}/predict", json={"rows": rows}, headers=auth).json()
    body = csv_bytes(rows, {})
    log_start = len(cluster.log.read_text())
    for round_ in range(1, 21):
        shown = httpx.post(
            f"{cluster.url}/ui/gradio_api/run/predict_form",
            json={"data": data, "session_hash": f"s{round_}"},
            headers=auth,
            timeout=60,
        )
        assert shown.status_code == 200, shown.text[:500]
        assert without_id(json.loads(shown.json()["data"][3])) == expected
        uploaded = httpx.post(
            f"{cluster.url}/ui/gradio_api/upload",
            files={"files": ("batch.csv", body, "text/csv")},
            headers=auth,
        )
        assert uploaded.status_code == 200, uploaded.text[:500]
        (path,) = uploaded.json()
        file_data = {"path": path, "orig_name": "batch.csv", "meta": {"_type": "gradio.FileData"}}
        scored = httpx.post(
            f"{cluster.url}/ui/gradio_api/run/score_csv",
            json={"data": [file_data], "session_hash": f"s{round_}"},
            headers=auth,
            timeout=60,
        )
        assert scored.status_code == 200, scored.text[:500]
        status, download = scored.json()["data"][:2]
        assert "Scored 5 of 5 rows" in status, status
        fetched = httpx.get(download["url"], headers=auth)
        assert fetched.status_code == 200, fetched.text[:300]
        labels = [r["label"] for r in csv.DictReader(io.StringIO(fetched.text))]
        assert labels == [str(a["label"]) for a in answers]
        time.sleep(0.2)
        steps = ACCESS.findall(cluster.log.read_text()[log_start:])
        rounds = [steps[i : i + 3] for i in range(0, len(steps) - 2, 3)]
        if any(len({worker for worker, _ in r}) > 1 for r in rounds):
            return
    raise AssertionError(f"in {round_} rounds no step changed worker: {steps}")
