"""Locust scenarios for tabserve (run with ``.venv/bin/locust``, never imported elsewhere).

Each simulated user logs in once through ``POST /auth/token`` (OAuth2 password flow),
then loops over a configurable mix of single-row predictions, batches of 10 to 100
rows and explanations, using realistic rows written by :mod:`load_tests.payloads`
from the model's FeatureSchema. Request bodies are encoded once at start-up so that
the load generator spends its CPU on sending, not on JSON.

Configuration (environment):

``TABSERVE_LOAD_ROWS``           JSON list of rows (``python -m load_tests.payloads``);
                                 without it, the model card's example row is used
``TABSERVE_LOAD_TARGET``         ``tabserve`` (default: ``/predict``, ``/explain``, JWT) or
                                 ``mlflow`` (``/invocations``, ``dataframe_split``, no auth,
                                 no explanations)
``TABSERVE_LOAD_USER``           user name (default ``demo``)
``TABSERVE_LOAD_PASSWORD``       password, or ``TABSERVE_LOAD_PASSWORD_FILE`` (default
                                 ``.tabserve/demo_password``)
``TABSERVE_LOAD_MIX``            task weights, default ``predict_one=6,predict_batch=3,explain=1``
``TABSERVE_LOAD_BATCH``          rows per batch request, default ``10-100``
``TABSERVE_LOAD_WAIT``           think time in seconds between requests: ``0`` (default,
                                 closed loop at full speed) or a range such as ``0.1-0.5``
``TABSERVE_LOAD_WARMUP_S``       if set: reset the statistics this many seconds after the
                                 last user has logged in, so that logins and warm-up are
                                 not measured (the benchmark uses it)
``TABSERVE_LOAD_RESET_FILE``     if set: the time of that reset is written there

Load shapes live in ``load_tests/shapes/`` (add one with ``-f``); otherwise ``-u``/``-r``
set a constant number of users.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import gevent
from locust import between, constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment
from locust.exception import StopUser

logger = logging.getLogger("tabserve.locust")

TARGET = os.environ.get("TABSERVE_LOAD_TARGET", "tabserve")
POOL_SIZE = 256  # pre-encoded bodies per kind of request


def _parse_mix(text: str) -> dict[str, int]:
    weights = {"predict_one": 0, "predict_batch": 0, "explain": 0}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition("=")
        if name.strip() not in weights:
            raise ValueError(f"TABSERVE_LOAD_MIX: unknown task {name!r}; known: {list(weights)}")
        weights[name.strip()] = int(weight)
    if not any(weights.values()):
        raise ValueError("TABSERVE_LOAD_MIX gives every task a weight of 0")
    return weights


def _parse_range(text: str, cast: type) -> tuple[Any, Any]:
    low, _, high = text.partition("-")
    return cast(low), cast(high or low)


MIX = _parse_mix(os.environ.get("TABSERVE_LOAD_MIX", "predict_one=6,predict_batch=3,explain=1"))
BATCH_MIN, BATCH_MAX = _parse_range(os.environ.get("TABSERVE_LOAD_BATCH", "10-100"), int)
WAIT_MIN, WAIT_MAX = _parse_range(os.environ.get("TABSERVE_LOAD_WAIT", "0"), float)
if TARGET == "mlflow" and MIX["explain"]:
    logger.warning("mlflow models serve has no explanations: the explain task is skipped")
    MIX["explain"] = 0


def _password() -> str:
    if "TABSERVE_LOAD_PASSWORD" in os.environ:
        return os.environ["TABSERVE_LOAD_PASSWORD"]
    path = Path(os.environ.get("TABSERVE_LOAD_PASSWORD_FILE", ".tabserve/demo_password"))
    return path.read_text().strip() if path.exists() else ""


class Payloads:
    """Pre-encoded request bodies for one target (paths, bodies, auth)."""

    def __init__(self, rows: list[dict[str, Any]], target: str) -> None:
        if not rows:
            raise ValueError("no rows to send")
        self.target = target
        self.columns = list(rows[0])
        rng = random.Random(0)
        self.single = [self.encode([rng.choice(rows)]) for _ in range(POOL_SIZE)]
        self.batches = []
        for _ in range(POOL_SIZE // 4):
            size = rng.randint(BATCH_MIN, BATCH_MAX)
            picked = rng.sample(rows, size) if size <= len(rows) else rng.choices(rows, k=size)
            self.batches.append((size, self.encode(picked)))

    @property
    def predict_path(self) -> str:
        return "/invocations" if self.target == "mlflow" else "/predict"

    @property
    def needs_login(self) -> bool:
        return self.target != "mlflow"

    def encode(self, rows: list[dict[str, Any]]) -> bytes:
        if self.target == "mlflow":
            data = [[row.get(c) for c in self.columns] for row in rows]
            body: dict[str, Any] = {"dataframe_split": {"columns": self.columns, "data": data}}
        else:
            body = {"rows": rows}
        return json.dumps(body, allow_nan=False).encode("utf-8")


PAYLOADS: Payloads | None = None
LOGGED_IN = 0
STATS_RESET = False


def _payloads(user: FastHttpUser, headers: dict[str, str]) -> Payloads:
    """The process's payloads: from ``TABSERVE_LOAD_ROWS``, else the model card's example."""
    global PAYLOADS
    if PAYLOADS is None:
        source = os.environ.get("TABSERVE_LOAD_ROWS")
        if source:
            rows = json.loads(Path(source).read_text())
        else:
            with user.client.get("/model", headers=headers, catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"GET /model: {response.status_code}")
                    raise RuntimeError("set TABSERVE_LOAD_ROWS: no rows and no model card")
                rows = [response.json()["example_row"]]
        PAYLOADS = Payloads(rows, TARGET)
    return PAYLOADS


def _all_logged_in(environment: Environment) -> None:
    """Reset the statistics once every user has logged in and warmed up (if asked to)."""
    global STATS_RESET
    warmup = os.environ.get("TABSERVE_LOAD_WARMUP_S")
    runner = environment.runner
    if warmup is None or STATS_RESET or runner is None:
        return
    if runner.target_user_count > LOGGED_IN:
        return
    STATS_RESET = True

    def reset() -> None:
        environment.stats.reset_all()
        marker = os.environ.get("TABSERVE_LOAD_RESET_FILE")
        if marker:  # the benchmark measures server CPU from this moment on
            Path(marker).write_text(repr(time.time()))
        logger.info("statistics reset: %d users logged in, %s s warm-up", LOGGED_IN, warmup)

    gevent.spawn_later(float(warmup), reset)


class TabserveUser(FastHttpUser):
    """A client that logs in once, then predicts and explains in the configured mix."""

    wait_time = constant(0) if WAIT_MAX <= 0 else between(WAIT_MIN, WAIT_MAX)
    # Keep-alive connections, like any real client library.
    connection_timeout = 10.0
    network_timeout = 60.0

    def on_start(self) -> None:
        global LOGGED_IN
        self.headers = {"Content-Type": "application/json"}
        if self._login_needed():
            self.login()
        self.payloads = _payloads(self, self.headers)
        LOGGED_IN += 1
        _all_logged_in(self.environment)

    def _login_needed(self) -> bool:
        return TARGET != "mlflow"

    def login(self) -> None:
        """OAuth2 password flow: one token per user, renewed only on a 401."""
        form = {"username": os.environ.get("TABSERVE_LOAD_USER", "demo"), "password": _password()}
        with self.client.post(
            "/auth/token", data=form, name="login", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"login failed: {response.status_code} {response.text[:200]}")
                raise StopUser()  # the failure is in the stats
            token = response.json()["access_token"]
        self.headers["Authorization"] = f"Bearer {token}"

    def _post(self, path: str, body: bytes, name: str, retry: bool = True) -> None:
        with self.client.post(
            path,
            data=body,  # type: ignore[arg-type]  # bytes go through as is; the stub says str
            headers=self.headers,
            name=name,
            catch_response=True,
        ) as response:
            if response.status_code == 401 and self._login_needed() and retry:
                response.success()  # an expired token: log in again, then retry once
                self.login()
                self._post(path, body, name, retry=False)
                return
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")

    @task(MIX["predict_one"])
    def predict_one(self) -> None:
        """A single-row prediction."""
        assert self.payloads is not None
        self._post(self.payloads.predict_path, random.choice(self.payloads.single), "predict 1 row")

    @task(MIX["predict_batch"])
    def predict_batch(self) -> None:
        """A batch of BATCH_MIN to BATCH_MAX rows."""
        assert self.payloads is not None
        _, body = random.choice(self.payloads.batches)
        self._post(self.payloads.predict_path, body, "predict batch")

    @task(MIX["explain"])
    def explain(self) -> None:
        """Explanations of a single row."""
        assert self.payloads is not None
        self._post("/explain", random.choice(self.payloads.single), "explain 1 row")


@events.init_command_line_parser.add_listener
def _describe(parser: Any) -> None:
    parser.description = (parser.description or "") + " (tabserve: see load_tests/locustfile.py)"
