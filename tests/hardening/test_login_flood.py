"""Logins under attack against a real ``bentoml serve`` (one worker, ``memory://`` state,
the production argon2 parameters): a login flood, concurrent guesses, spoofed and
trusted ``X-Forwarded-For``, and a token of a rotated-out key.

The server trusts 127.0.0.1 as its proxy, so each request chooses its client address
with ``X-Forwarded-For``: the flood comes from 400 different clients (the throttle cannot
help; the concurrency bound must), and each test uses clients of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import psutil
import pytest
from pydantic import SecretStr

from tabserve.security.passwords import ARGON2_MEMORY_KIB
from tabserve.serving.settings import Settings
from tests.hardening.conftest import (
    PASSWORD,
    Target,
    add_user,
    assert_envelope,
    assert_healthy,
    server_env,
)
from tests.support import TestModel, serving

pytestmark = pytest.mark.slow

FLOOD_REQUESTS = 400
FLOOD_CONCURRENCY = 80
MEMORY_BUDGET = 512 * 1024 * 1024
WINDOW_S = 3
MAX_FAILURES = 5  # the default TABSERVE_LOGIN_MAX_FAILURES


_PIDS: dict[str, int] = {}  # server URL -> pid of its `bentoml serve`


@pytest.fixture(scope="module")
def flooded(
    penguins_root: tuple[Path, TestModel],
    rotation: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Target]:
    """One worker, production argon2 parameters (no CHEAP_ARGON2), 127.0.0.1 a proxy."""
    root, model = penguins_root
    work = tmp_path_factory.mktemp("flood")
    users = work / "users.json"
    for name in ("alice", "bob", "carol"):
        add_user(users, name)
    _, current = rotation
    env = server_env(root, model.tag, TABSERVE_USERS_FILE=str(users))
    for key in [k for k in env if k.startswith("TABSERVE_ARGON2_")]:
        del env[key]  # the defaults: what a flood against `make serve` meets
    env.update(
        TABSERVE_JWT_SECRET=current,
        TABSERVE_LOCAL_DIR=str(work / "local"),
        TABSERVE_TRUSTED_PROXIES="127.0.0.1/32",
        TABSERVE_LOGIN_WINDOW_S=str(WINDOW_S),
    )
    settings = Settings(jwt_secret=SecretStr(current))
    with serving(env, work / "serve.log") as served:
        _PIDS[served.url] = served.process.pid
        yield Target(served.url, served.log, env, model, b"", b"", settings)


def _rss(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (the workers), in bytes."""
    total = 0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
    return total


class PeakMemory:
    """Samples the RSS of a process tree every 20 ms; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _attempts(target: Target) -> Counter[str]:
    text = httpx.get(f"{target.url}/metrics", timeout=10).text
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("tabserve_login_attempts_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def _login(url: str, user: str, password: str, client: str) -> httpx.Response:
    return httpx.post(
        f"{url}/auth/token",
        data={"username": user, "password": password},
        headers={"X-Forwarded-For": client},
        timeout=60,
    )


def test_a_login_flood_stays_within_memory_and_leaves_the_service_working(
    flooded: Target,
) -> None:
    pid = _PIDS[flooded.url]
    idle = _rss(pid)
    before = _attempts(flooded)

    async def flood() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=FLOOD_CONCURRENCY)
        async with httpx.AsyncClient(base_url=flooded.url, timeout=60, limits=limits) as client:
            gate = asyncio.Semaphore(FLOOD_CONCURRENCY)

            async def one(i: int) -> httpx.Response:
                async with gate:
                    return await client.post(
                        "/auth/token",
                        data={"username": secrets.token_hex(6), "password": "guess-123"},
                        # 400 different clients: the throttle never applies.
                        headers={"X-Forwarded-For": f"10.{i // 250}.{i % 250}.1"},
                    )

            return list(await asyncio.gather(*(one(i) for i in range(FLOOD_REQUESTS))))

    started = time.monotonic()
    with PeakMemory(pid) as memory:
        answers = asyncio.run(flood())
    took = time.monotonic() - started
    statuses = Counter(r.status_code for r in answers)
    codes = Counter(r.json()["error"]["code"] for r in answers)
    grew = memory.peak - idle
    print(
        f"\nflood: {FLOOD_REQUESTS} logins at {FLOOD_CONCURRENCY} in {took:.1f} s; "
        f"statuses {dict(statuses)}, codes {dict(codes)}; RSS idle {idle / 2**20:.0f} MiB, "
        f"peak {memory.peak / 2**20:.0f} MiB (+{grew / 2**20:.0f} MiB)"
    )
    assert not [r for r in answers if r.status_code >= 500], statuses
    assert set(statuses) <= {401, 429}, statuses
    assert set(codes) <= {"invalid_credentials", "busy"}, codes
    busy = [r for r in answers if r.status_code == 429]
    assert all(r.headers.get("retry-after") for r in busy)
    assert grew <= MEMORY_BUDGET, f"RSS grew by {grew / 2**20:.0f} MiB"
    after = _attempts(flooded)
    assert after["failure"] - before["failure"] == codes["invalid_credentials"]
    assert after["busy"] - before["busy"] == codes["busy"]
    assert_healthy(flooded)


def test_concurrent_wrong_passwords_reach_the_hash_at_most_max_failures_times(
    flooded: Target,
) -> None:
    client = "203.0.113.20"
    before = _attempts(flooded)

    async def guesses() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=flooded.url, timeout=60) as http:
            return list(
                await asyncio.gather(
                    *(
                        http.post(
                            "/auth/token",
                            data={"username": "alice", "password": f"guess-{i}"},
                            headers={"X-Forwarded-For": client},
                        )
                        for i in range(20)
                    )
                )
            )

    answers = asyncio.run(guesses())
    last_failure = time.monotonic()
    statuses = Counter(r.status_code for r in answers)
    after = _attempts(flooded)
    assert after["failure"] - before["failure"] <= MAX_FAILURES, (before, after)
    assert statuses[401] <= MAX_FAILURES and statuses[401] + statuses[429] == 20, statuses
    for response in answers:
        if response.status_code == 429:
            assert_envelope(response, 429, "too_many_requests")
    # The right password is refused until the window has passed, then accepted.
    refused = _login(flooded.url, "alice", PASSWORD, client)
    assert_envelope(refused, 429, "too_many_requests")
    assert 1 <= int(refused.headers["retry-after"]) <= WINDOW_S
    while (answer := _login(flooded.url, "alice", PASSWORD, client)).status_code == 429:
        assert time.monotonic() - last_failure < WINDOW_S + 2, "still throttled"
        time.sleep(0.2)
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - last_failure >= WINDOW_S - 1


def test_a_successful_login_rehashes_with_the_current_argon2_parameters(
    flooded: Target,
) -> None:
    users = Path(flooded.env["TABSERVE_USERS_FILE"])
    assert "m=8192" in users.read_text()  # added with the cheap profile
    assert _login(flooded.url, "carol", PASSWORD, "203.0.113.30").status_code == 200
    carol = users.read_text().split('"carol"', 1)[1]
    assert f"m={ARGON2_MEMORY_KIB},t=2,p=1" in carol.split("scopes", 1)[0]
    assert _login(flooded.url, "carol", PASSWORD, "203.0.113.30").status_code == 200


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(flooded: Target) -> None:
    for _ in range(MAX_FAILURES):
        assert _login(flooded.url, "bob", "wrong-guess", "198.51.100.7").status_code == 401
    assert _login(flooded.url, "bob", PASSWORD, "198.51.100.7").status_code == 429
    # Another client behind the same proxy is not locked out by the first one.
    assert _login(flooded.url, "bob", PASSWORD, "198.51.100.8").status_code == 200
    time.sleep(0.3)
    assert "failed login for user 'bob' from 198.51.100.7" in flooded.log.read_text()


def test_a_token_of_a_rotated_out_key_is_refused_once_its_key_is_no_longer_listed(
    flooded: Target, rotation: tuple[str, str]
) -> None:
    previous, _ = rotation
    old = Settings(jwt_secret=SecretStr(previous))
    from tabserve.security.tokens import issue_token

    token = issue_token(old, "alice", ["predict"])[0]
    assert jwt.get_unverified_header(token)["kid"] == old.keys.key_id
    response = httpx.post(
        f"{flooded.url}/predict",
        json={"rows": flooded.model.rows[:1]},
        headers={"Authorization": f"Bearer {token}"},
    )
    error = assert_envelope(response, 401, "unauthenticated")
    assert "key id" in error["message"]


def test_the_benchmark_flood_tool_times_predictions_beside_each_flood(
    flooded: Target, tmp_path: Path
) -> None:
    """``load_tests.flood`` (what ``make bench`` runs), small: each flood from a process
    of its own, every login answered, predictions timed alone and during each flood."""
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(flooded.model.rows[:20]))
    out = tmp_path / "flood.json"
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "load_tests.flood", "--url", flooded.url, "--rows", str(rows)),
            *("--user", "alice", "--password", PASSWORD, "--out", str(out)),
            *("--requests", "24", "--concurrency", "8", "--baseline-s", "1", "--spread"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["predict_alone"]["requests"] > 0
    assert result["predict_alone"]["failures"] == 0
    assert [f["clients"] for f in result["floods"]] == [1, 24]
    for flood in result["floods"]:
        # Fewer than the client's failure limit: every wrong login reaches the hash.
        assert flood["outcomes"] == {"401 invalid_credentials": 24}, flood
        assert flood["seconds"] > 0
        assert flood["predict"]["requests"] > 0 and flood["predict"]["failures"] == 0, flood
        assert 0 < flood["predict"]["p50_ms"] <= flood["predict"]["p99_ms"]
