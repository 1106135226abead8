"""Faults under load, against one real ``bentoml serve`` with two workers and Redis, with
prediction traffic running through each fault:

- the inference log's disk full (a 32 KiB tmpfs): answers keep coming, the lost rows are
  counted and logged once per interval, not per row;
- Redis stopped for 30 s and started again: auth that needs it fails closed (503, the
  envelope) and nothing else breaks; once Redis is back the service recovers by itself;
- one worker killed with SIGKILL: requests after it succeed, the supervisor starts a new
  worker, and ``/metrics`` keeps no live gauge of the dead one.

(SIGTERM under load, in the image, is ``tests/image/``'s.)
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pydantic import SecretStr

from load_tests.processes import free_port
from tests.hardening.conftest import add_user
from tests.support import Call, TestModel, server_env, serving, steady_load

pytestmark = pytest.mark.slow

REDIS_DOWN_S = 30
TMPFS_BYTES = 32 * 1024


class Redis:
    """A ``redis-server`` on a fixed port that can be stopped and started again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.directory), "--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@dataclass(frozen=True)
class Faulty:
    url: str
    log: Path
    pid: int
    redis: Redis
    inference_dir: Path
    metrics_dir: Path
    model: TestModel
    settings: Any

    def token(self) -> str:
        from tabserve.security.tokens import issue_token

        return issue_token(self.settings, "alice", ["predict"])[0]


@pytest.fixture(scope="module")
def faulty(
    penguins_root: tuple[Path, TestModel], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Faulty]:
    import secrets

    from tabserve.serving.settings import Settings

    root, model = penguins_root
    work = tmp_path_factory.mktemp("faults")
    inference_dir = work / "inference"
    inference_dir.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(inference_dir)],
        capture_output=True,
        text=True,
    )
    assert mounted.returncode == 0, f"a small tmpfs is needed (run as root): {mounted.stderr}"
    redis = Redis(work / "redis")
    redis.start()
    users = work / "users.json"
    add_user(users, "alice", "predict")
    secret = secrets.token_urlsafe(48)
    # A BentoML home of its own (its Prometheus files apart from the other servers'),
    # with the package's model store in it.
    home = work / "bentoml"
    home.mkdir()
    (home / "models").symlink_to(root / "bentoml" / "models")
    env = server_env(root, model.tag, TABSERVE_USERS_FILE=str(users))
    env.update(
        BENTOML_HOME=str(home),
        TABSERVE_WORKERS="2",
        TABSERVE_STATE_URL=redis.url,
        TABSERVE_JWT_SECRET=secret,
        TABSERVE_INFERENCE_LOG_DIR=str(inference_dir),
        TABSERVE_INFERENCE_LOG_WARN_INTERVAL_S="2",
        TABSERVE_DRIFT_MIN_ROWS="10",
        TABSERVE_DRIFT_PUBLISH_INTERVAL_S="0.2",
        TABSERVE_UI_ENABLED="false",
    )
    try:
        with serving(env, work / "serve.log") as served:
            yield Faulty(
                served.url,
                work / "serve.log",
                served.process.pid,
                redis,
                inference_dir,
                home / "prometheus_multiproc_dir",
                model,
                Settings(jwt_secret=SecretStr(secret)),
            )
    finally:
        redis.stop()
        subprocess.run(["umount", str(inference_dir)], check=False)


def _body(faulty: Faulty) -> bytes:
    import json

    return json.dumps({"rows": faulty.model.rows[:5]}).encode()


def _workers(pid: int) -> list[psutil.Process]:
    """The live worker processes of the ``bentoml serve`` with ``pid``."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if "_bentoml_impl.worker.service" in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return sum(float(v) for v in found)


def test_a_full_inference_log_disk_loses_rows_counted_not_answers(faulty: Faulty) -> None:
    start = len(faulty.log.read_text())
    with steady_load(
        faulty.url, faulty.token(), _body(faulty), path="/predict", clients=4
    ) as calls:
        time.sleep(6)
    done: list[Call] = list(calls)
    assert len(done) > 50
    assert all(c.status == 200 for c in done), {c.status for c in done}
    lost = _metric(faulty.url, "tabserve_inference_log_lost_rows_total")
    assert lost > 0
    log = faulty.log.read_text()[start:]
    warnings = log.count("could not be written since the last warning")
    assert 1 <= warnings <= 2 * (6 / 2 + 2), warnings  # per worker, once per 2 s at most
    assert warnings < lost / 10  # not one line per row
    assert "--- Logging error ---" not in log and "Traceback" not in log


def test_redis_down_for_30_s_fails_closed_then_recovers_by_itself(faulty: Faulty) -> None:
    token = faulty.token()
    with steady_load(faulty.url, token, _body(faulty), path="/predict", clients=2) as calls:
        time.sleep(2)
        faulty.redis.stop()
        stopped = time.monotonic()
        time.sleep(REDIS_DOWN_S / 2)
        during = httpx.post(
            f"{faulty.url}/predict",
            content=_body(faulty),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        login = httpx.post(f"{faulty.url}/auth/token", data={"username": "alice", "password": "x"})
        health = [httpx.get(f"{faulty.url}{p}").status_code for p in ("/livez", "/readyz")]
        metrics = httpx.get(f"{faulty.url}/metrics").status_code
        time.sleep(max(0.0, REDIS_DOWN_S - (time.monotonic() - stopped)))
        restarting = time.monotonic()
        faulty.redis.start()
        restarted = time.monotonic()
        time.sleep(8)
    assert during.status_code == 503 and during.json()["error"]["code"] == "not_ready"
    assert login.status_code == 503 and login.json()["error"]["code"] == "not_ready"
    assert health == [200, 200] and metrics == 200
    down = [c for c in calls if stopped + 1 < c.started and c.ended < restarting]
    assert down and all(c.status == 503 for c in down), {c.status for c in down}
    recovered = [c for c in calls if c.started > restarted + 3]
    assert recovered and all(c.status == 200 for c in recovered), {c.status for c in recovered}
    assert all(c.ended - c.started < 10 for c in calls)  # failing closed is quick too


def test_a_killed_worker_is_replaced_and_leaves_no_live_gauge(faulty: Faulty) -> None:
    before = _workers(faulty.pid)
    assert len(before) == 2
    with steady_load(
        faulty.url, faulty.token(), _body(faulty), path="/predict", clients=4
    ) as calls:
        time.sleep(2)
        victim = before[0].pid
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        deadline = killed + 60
        while time.monotonic() < deadline:
            now = _workers(faulty.pid)
            if len(now) == 2 and victim not in {p.pid for p in now}:
                break
            time.sleep(0.5)
        replaced = time.monotonic()
        time.sleep(4)
    after = {p.pid for p in _workers(faulty.pid)}
    assert len(after) == 2 and victim not in after, "the supervisor did not start a new worker"
    later = [c for c in calls if c.started > replaced + 1]
    assert later and all(c.status == 200 for c in later), {c.status for c in later}
    assert not list(faulty.metrics_dir.glob(f"gauge_live*_{victim}.db"))
    assert _metric(faulty.url, "tabserve_ready") == 1.0
    assert httpx.get(f"{faulty.url}/readyz").status_code == 200
