"""Helpers shared by test packages that need a real model store and a real server.

- :func:`import_test_model` trains a tiny XGBoost model on a frame and imports it
  into a given BentoML home exactly as the pipeline's ``import`` stage does, without
  touching the BentoML home of the test process itself;
- :func:`serving` / :func:`running_server` start ``bentoml serve service:Tabserve``
  on a free port and stop it (its whole process group) afterwards, with
  ``load_tests.processes`` (the benchmark starts its servers the same way);
- :func:`redis_server` starts a real ``redis-server`` (Debian's, installed by
  ``make system-deps``) on a free port, with no persistence, and stops it;
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from load_tests.processes import free_port, running, stop_group
from load_tests.profile_models import import_booster, train_booster
from tabserve.core.bundle import Lineage
from tabserve.core.schema import FeatureSchema
from tabserve.core.schema_inference import infer_schema

REPO = Path(__file__).resolve().parents[1]
JSON_TYPE = "application/json"
BENTOML = str(Path(sys.executable).with_name("bentoml"))
# A cheap argon2 profile for tests whose logins are not about argon2's cost: the users are
# hashed with it, and servers are told to use it (else the first login re-hashes them).
CHEAP_ARGON2 = {
    "TABSERVE_ARGON2_TIME_COST": "1",
    "TABSERVE_ARGON2_MEMORY_KIB": "8192",
    "TABSERVE_ARGON2_PARALLELISM": "1",
}


# Tracing on, as a user switches it on (BentoML 1.4 reads it per service), with BentoML's
# in-memory test exporter: tabserve switches tracing off when no exporter is configured.
TRACING_ON = (
    "services.tabserve.tracing.exporter_type=in_memory services.tabserve.tracing.sample_rate=1.0"
)


# Set in the test process itself by what it imports in process (prometheus_client's
# directory, tabserve.serving.tracing's default), never to be inherited by a server it starts.
PROCESS_ONLY = ("PROMETHEUS_MULTIPROC_DIR", "OTEL_SDK_DISABLED")


def wait_until(check: Any, what: str, timeout_s: float = 30, interval_s: float = 0.3) -> Any:
    """``check()``'s first true value, asked every ``interval_s``; fails, naming ``what``
    and the last value, after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s ({value!r})"
        time.sleep(interval_s)


def child_env() -> dict[str, str]:
    """The test process's environment without what only applies to the process itself."""
    return {k: v for k, v in os.environ.items() if k not in PROCESS_ONLY}


def server_env(root: Path, model_tag: str, **extra: str) -> dict[str, str]:
    """Environment of a ``bentoml serve`` whose state (BentoML home, users file, local
    folder) lives under ``root``, with cheap argon2 logins."""
    base = child_env()
    return {
        **base,
        "BENTOML_HOME": str(root / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "TABSERVE_ENV": "development",
        "TABSERVE_USERS_FILE": str(root / "users.json"),
        "TABSERVE_LOCAL_DIR": str(root / "local"),
        "TABSERVE_MODEL_TAG": model_tag,
        **CHEAP_ARGON2,  # logins here are not about argon2's cost (the flood test's are)
        **extra,
    }


def cheap_hasher() -> Any:
    """The argon2 hasher of :data:`CHEAP_ARGON2`."""
    from tabserve.security.passwords import password_hasher

    return password_hasher(1, 8192, 1)


@dataclass(frozen=True)
class TestModel:
    """A model imported into a test BentoML home."""

    __test__ = False  # not a test class, despite its name

    tag: str
    schema: FeatureSchema
    rows: list[dict[str, Any]]  # feature rows (no target), JSON-ready
    targets: list[Any]


def json_ready(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Records of ``frame`` with missing values as None."""
    return [
        {
            k: (None if (isinstance(v, float) and np.isnan(v)) or v is pd.NA else v)
            for k, v in record.items()
        }
        for record in frame.to_dict("records")
    ]


def import_test_model(
    home: Path,
    frame: pd.DataFrame,
    target: str,
    objective: dict[str, Any],
    tag: str = "tabserve:v1",
) -> TestModel:
    """Train a small model on ``frame`` and import it into the BentoML home ``home``
    (the benchmark's profiles are imported with the same functions), with its drift
    reference.

    A regression objective (``reg:...``) also gets its interval model, calibrated on the
    same rows (``training.modeling.fit_interval``): a test bundle, not a good model.
    """
    regression = str(objective.get("objective", "")).startswith("reg:")
    schema = infer_schema(frame, target, task="regression" if regression else "classification")
    params = {"max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 0, **objective}
    booster, schema = train_booster(frame, target, params, 20, schema)
    features = frame.drop(columns=[target])
    interval = None
    if regression:
        from training.modeling import dmatrix, fit_interval

        data = dmatrix(schema, frame)
        interval = fit_interval(params, data, data, 0.9, 20, 5)
    rows = json_ready(features)
    targets = frame[target].tolist()
    name, version = tag.split(":")
    lineage = Lineage(
        model_name=name,
        registry_version=version.lstrip("v"),
        mlflow_run_id=f"run-{version}",
        data_md5={"train": "0" * 32, "test": "1" * 32},
        git_commit="deadbeef",
        params=params,
        metrics={"rmse": 1.0} if regression else {"accuracy": 0.9},
        model_sha256="",  # filled in by import_booster
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC).isoformat(),
    )
    examples = [{**row, target: t} for row, t in zip(rows[:20], targets[:20], strict=True)]
    import_booster(
        home, tag, booster, schema, lineage, examples, features=features, interval=interval
    )
    return TestModel(tag, schema, rows, targets)


def rsa_keys(directory: Path) -> tuple[Path, Path]:
    """A fresh RSA key pair as PEM files: (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = directory / "jwt_private.pem", directory / "jwt_public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@dataclass(frozen=True)
class Served:
    """A ``bentoml serve`` process started by :func:`serving`."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def serving(
    env: dict[str, str],
    log: Path,
    *,
    args: tuple[str, ...] = (),
    wait_for: str = "/readyz",
    timeout_s: float = 90,
    target: str = "service:Tabserve",
) -> Iterator[Served]:
    """``bentoml serve service:Tabserve`` (or another ``target``) with ``env`` (and extra
    CLI ``args``).

    Yields once ``wait_for`` answers 200 (``/livez`` for a server that must come up
    without becoming ready); stops the whole process group afterwards.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    with running(
        [*command, *args],
        ready_url=f"{url}{wait_for}",
        log=log,
        env=env,
        cwd=REPO,
        name="bentoml serve",
        timeout_s=timeout_s,
    ) as process:
        yield Served(url, process, log)


@contextmanager
def running_server(env: dict[str, str], log: Path, timeout_s: float = 90) -> Iterator[str]:
    """``bentoml serve service:Tabserve`` with ``env``; yields its base URL once ready."""
    with serving(env, log, timeout_s=timeout_s) as served:
        yield served.url


@dataclass
class Call:
    """One request made by :func:`steady_load`."""

    started: float
    ended: float
    status: int | None  # None: refused at the transport level
    error: str = ""


def _hammer(
    url: str, path: str, token: str, body: bytes, stop: threading.Event, calls: list[Call]
) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = client.post(
                    path,
                    content=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "content-type": "application/json",
                    },
                )
                response.json()  # a whole JSON body, never a cut one
                calls.append(Call(started, time.monotonic(), response.status_code))
            except (httpx.TransportError, json.JSONDecodeError) as exc:
                calls.append(Call(started, time.monotonic(), None, type(exc).__name__))
                time.sleep(0.05)


@contextmanager
def steady_load(
    url: str, token: str, body: bytes, *, path: str = "/explain", clients: int = 8
) -> Iterator[list[Call]]:
    """``clients`` threads posting ``body`` to ``path`` in a loop until the block exits.

    Yields the list their finished requests are appended to.
    """
    calls: list[Call] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_hammer, args=(url, path, token, body, stop, calls))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        yield calls
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


def assert_stopped_gracefully(calls: list[Call], terminated: float) -> None:
    """What SIGTERM at ``terminated`` must leave: every request in flight answered 200,
    later ones refused cleanly (503 or a closed port, never a hang or a cut body)."""
    before = [c for c in calls if c.ended < terminated]
    in_flight = [c for c in calls if c.started < terminated <= c.ended]
    after = [c for c in calls if c.started >= terminated]
    assert len(before) > 20, "the load never got going"
    assert all(c.status == 200 for c in before)
    assert in_flight, "nothing was in flight at SIGTERM"
    assert all(c.status == 200 for c in in_flight), in_flight
    assert after, "no request was tried after SIGTERM"
    assert all(c.status in (None, 200, 503) for c in after), after
    assert all(c.ended - c.started < 30 for c in after)
    assert any(c.status is None for c in after)  # the port closed in the end


@contextmanager
def redis_server(directory: Path, timeout_s: float = 15) -> Iterator[str]:
    """A throw-away ``redis-server`` on a free loopback port; yields its ``redis://`` URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).is_file():
        raise RuntimeError("no redis-server: install Debian's redis-server (make system-deps)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = directory / "redis.log"
    process = subprocess.Popen(
        [
            binary,
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
            *("--save", "", "--appendonly", "no", "--logfile", str(log)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {log.read_text()[-2000:]}")
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_group(process, timeout=10)
