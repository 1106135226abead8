"""Faults: SIGTERM under load, a corrupt or swapped model file, MLflow down, production
start-up without a proper secret, file modes of generated secrets and users."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from load_tests.processes import free_port
from tests.hardening.conftest import (
    Target,
    assert_envelope,
    assert_healthy,
    login,
    server_env,
)
from tests.support import (
    REPO,
    TestModel,
    assert_stopped_gracefully,
    serving,
    steady_load,
)

pytestmark = pytest.mark.slow

GRACEFUL_S = 10
JSON = "application/json"
BENTOML = str(Path(sys.executable).with_name("bentoml"))
TABSERVE = str(Path(sys.executable).with_name("tabserve"))


def test_sigterm_under_load_finishes_in_flight_requests_then_exits(
    penguins_root: tuple[Path, TestModel], tmp_path: Path
) -> None:
    root, model = penguins_root
    env = server_env(
        root, model.tag, TABSERVE_JWT_SECRET=os.urandom(32).hex(), TABSERVE_LOCAL_DIR=str(tmp_path)
    )
    # Requests of 300 explained rows take long enough to be caught in flight.
    body = json.dumps({"rows": model.rows[:300]}).encode()
    with serving(
        env, tmp_path / "serve.log", args=("--timeout-graceful-shutdown", str(GRACEFUL_S))
    ) as served:
        token = login(served.url).json()["access_token"]
        with steady_load(served.url, token, body) as calls:
            time.sleep(3)
            terminated = time.monotonic()
            served.process.send_signal(signal.SIGTERM)  # as `docker stop` / Kubernetes do
            try:
                served.process.wait(timeout=GRACEFUL_S + 10)
            finally:
                exited = time.monotonic()

    log = (tmp_path / "serve.log").read_text()
    assert exited - terminated < GRACEFUL_S + 5, log[-3000:]
    assert_stopped_gracefully(calls, terminated)


def _corrupt_home(penguins_root: tuple[Path, TestModel], tmp_path: Path, how: str) -> Path:
    """A copy of the BentoML home whose model file was altered (``how``)."""
    root, _ = penguins_root
    home = tmp_path / "bentoml"
    shutil.copytree(root / "bentoml" / "models", home / "models")
    bundle = home / "models" / "tabserve" / "v1"
    model_file = next(bundle.glob("*.ubj"))
    data = bytearray(model_file.read_bytes())
    if how == "swapped":  # one flipped byte: the sha256 no longer matches the lineage
        data[len(data) // 2] ^= 0xFF
        model_file.write_bytes(bytes(data))
    else:  # "corrupt": truncated, and its lineage rewritten to match (so only loading fails)
        from tabserve.core.bundle import sha256_file

        model_file.write_bytes(bytes(data[: len(data) // 3]))
        lineage_file = bundle / "lineage.json"
        lineage = json.loads(lineage_file.read_text())
        lineage["model_sha256"] = sha256_file(model_file)
        lineage_file.write_text(json.dumps(lineage))
    return home


@pytest.mark.parametrize(
    ("how", "reason"), [("swapped", "sha256"), ("corrupt", "cannot be loaded")]
)
def test_a_bad_model_file_keeps_the_service_unready_and_the_log_says_why(
    penguins_root: tuple[Path, TestModel], tmp_path: Path, how: str, reason: str
) -> None:
    root, model = penguins_root
    home = _corrupt_home(penguins_root, tmp_path, how)
    env = server_env(
        root,
        model.tag,
        BENTOML_HOME=str(home),
        TABSERVE_JWT_SECRET=os.urandom(32).hex(),
        TABSERVE_LOCAL_DIR=str(tmp_path / "local"),
    )
    log = tmp_path / "serve.log"
    with serving(env, log, wait_for="/livez") as served:
        time.sleep(1)
        assert_envelope(httpx.get(f"{served.url}/readyz"), 503, "not_ready")
        token = {"Authorization": "Bearer x.y.z"}
        body = {"rows": model.rows[:1]}
        assert_envelope(httpx.post(f"{served.url}/predict", json=body, headers=token), 503)
        assert_envelope(httpx.get(f"{served.url}/model", headers=token), 503)
        assert served.process.poll() is None  # up, answering, never ready
        text = log.read_text()
    assert "refused, the service will not become ready" in text, text[-3000:]
    assert reason in text, text[-3000:]
    assert text.count("refused, the service will not become ready") == 1  # no restart loop


def test_serving_does_not_need_the_mlflow_tracking_server(target: Target) -> None:
    tracking = httpx.URL(target.env["MLFLOW_TRACKING_URI"])
    with pytest.raises(ConnectionRefusedError):  # nothing listens there: MLflow is down
        socket.create_connection((tracking.host, tracking.port), 2).close()
    assert_healthy(target)
    card = httpx.get(f"{target.url}/model", headers=target.auth())
    assert card.status_code == 200 and card.json()["lineage"]["mlflow_run_id"]


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("changeme-changeme-changeme-changeme-0", "placeholder"),
        ("short", "at least 32 bytes"),
        (None, "needs TABSERVE_JWT_SECRET"),
    ],
    ids=["placeholder", "short", "missing"],
)
def test_production_start_up_stops_without_a_proper_secret(
    penguins_root: tuple[Path, TestModel], tmp_path: Path, secret: str | None, message: str
) -> None:
    root, model = penguins_root
    env = server_env(
        root, model.tag, TABSERVE_ENV="production", TABSERVE_LOCAL_DIR=str(tmp_path / "local")
    )
    env.pop("TABSERVE_JWT_SECRET", None)
    if secret is not None:
        env["TABSERVE_JWT_SECRET"] = secret
    started = time.monotonic()
    result = subprocess.run(
        [BENTOML, "serve", "service:Tabserve", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stdout + result.stderr, (result.stdout + result.stderr)[-2000:]
    assert time.monotonic() - started < 60  # stopped, not restarted in a loop
    assert not (tmp_path / "local").exists()  # nothing generated in production


@pytest.mark.parametrize(
    ("users", "message"),
    [("missing", "does not exist"), ("invalid", "is not a valid users file")],
)
def test_production_start_up_stops_on_an_unusable_users_file(
    penguins_root: tuple[Path, TestModel], tmp_path: Path, users: str, message: str
) -> None:
    root, model = penguins_root
    users_file = tmp_path / "users.json"
    if users == "invalid":
        users_file.write_text('{"users": {"alice": "not a record"}}')
    env = server_env(
        root,
        model.tag,
        TABSERVE_ENV="production",
        TABSERVE_JWT_SECRET=os.urandom(32).hex(),
        TABSERVE_USERS_FILE=str(users_file),
    )
    started = time.monotonic()
    result = subprocess.run(
        [BENTOML, "serve", "service:Tabserve", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"TABSERVE_USERS_FILE: {users_file}" in output and message in output, output[-2000:]
    assert "tabserve users add" in output  # the fix
    assert "Traceback" not in output
    assert time.monotonic() - started < 60


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_secret_and_users_file_are_private(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TABSERVE_ENV": "development",
        "TABSERVE_LOCAL_DIR": str(tmp_path / "local"),
        "TABSERVE_USERS_FILE": str(tmp_path / "users" / "users.json"),
    }
    env.pop("TABSERVE_JWT_SECRET", None)
    os.umask(0o022)  # a typical permissive umask: the modes below must not depend on it
    subprocess.run([TABSERVE, "init-local"], env=env, check=True, capture_output=True)
    assert _mode(tmp_path / "local") == 0o700
    assert _mode(tmp_path / "local" / "jwt_secret") == 0o600
    users = tmp_path / "users" / "users.json"
    assert _mode(users) == 0o640
    subprocess.run(
        [TABSERVE, "users", "add", "bob", "--scopes", "predict", "--password-stdin"],
        env=env,
        input="another long password",
        text=True,
        check=True,
        capture_output=True,
    )
    assert _mode(users) == 0o640  # rewritten atomically, still owner and group only
    assert "bob" in users.read_text() and "another long password" not in users.read_text()
