"""The soak's mixed traffic (run by ``load_tests/soak.py`` through Locust, never imported).

Each user logs in once, then loops over single-row and batch predictions, explanations,
the browser UI's form call, fresh logins and bad requests (each answered with the 4xx it
deserves: an unknown field, malformed JSON, no token, an unknown path). A bad request's
expected 4xx counts as a success; any 5xx or a lost connection is a failure. Every
request is written to ``TABSERVE_SOAK_LOG`` (time, name, milliseconds, status), from
which the soak computes its percentiles per window.

Environment: ``TABSERVE_LOAD_ROWS`` (rows, JSON), ``TABSERVE_LOAD_USER`` and
``TABSERVE_LOAD_PASSWORD``, ``TABSERVE_SOAK_RATE`` (tasks per second per user; ``0``: a
closed loop at full speed, to measure capacity), ``TABSERVE_SOAK_LOG``.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from locust import constant, constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser

ROWS: list[dict[str, Any]] = json.loads(Path(os.environ["TABSERVE_LOAD_ROWS"]).read_text())
USER = os.environ.get("TABSERVE_LOAD_USER", "bench")
PASSWORD = os.environ["TABSERVE_LOAD_PASSWORD"]
RATE = float(os.environ.get("TABSERVE_SOAK_RATE", "0"))
_log_file = open(os.environ["TABSERVE_SOAK_LOG"], "a", newline="")  # noqa: SIM115 (whole run)
_log = csv.writer(_log_file)


@events.request.add_listener
def _record(name: str, response_time: float, response: Any, exception: Any, **_: Any) -> None:
    status = getattr(response, "status_code", 0) or 0
    _log.writerow([f"{time.time():.3f}", name, f"{response_time:.2f}", status])


@events.quitting.add_listener
def _close(**_: Any) -> None:
    _log_file.flush()
    _log_file.close()


def _body(rows: list[dict[str, Any]]) -> str:
    return json.dumps({"rows": rows})


BAD_REQUESTS = (
    ("bad: wrong value", "/predict", '{"rows": [{"no such feature": 1}]}', True, 422),
    ("bad: malformed JSON", "/predict", '{"rows": [', True, 400),
    ("bad: no token", "/predict", None, False, 401),
    ("bad: unknown path", "/no-such-route", "{}", True, 404),
)


class SoakUser(FastHttpUser):
    wait_time = constant_throughput(RATE) if RATE > 0 else constant(0)

    def on_start(self) -> None:
        self.auth_headers = {"Authorization": f"Bearer {self._login()}"}
        self.json_headers = {**self.auth_headers, "Content-Type": "application/json"}
        config = self.client.get("/ui/config", headers=self.auth_headers, name="ui: config").json()
        elem = {c["id"]: c.get("props", {}).get("elem_id") or "" for c in config["components"]}
        form = next(d for d in config["dependencies"] if d.get("api_name") == "predict_form")
        self.form_features = [str(elem[i]).removeprefix("feature-") for i in form["inputs"]]

    def _login(self) -> str:
        response = self.client.post(
            "/auth/token", data={"username": USER, "password": PASSWORD}, name="login"
        )
        return str(response.json()["access_token"])

    @task(8)
    def predict_one(self) -> None:
        self.client.post(
            "/predict",
            data=_body([random.choice(ROWS)]),
            headers=self.json_headers,
            name="predict: 1 row",
        )

    @task(2)
    def predict_batch(self) -> None:
        rows = random.choices(ROWS, k=random.randint(10, 50))
        self.client.post(
            "/predict", data=_body(rows), headers=self.json_headers, name="predict: batch"
        )

    @task(2)
    def explain(self) -> None:
        self.client.post(
            "/explain", data=_body([random.choice(ROWS)]), headers=self.json_headers, name="explain"
        )

    @task(1)
    def ui_form(self) -> None:
        row = random.choice(ROWS)
        self.client.post(
            "/ui/gradio_api/run/predict_form",
            data=json.dumps({"data": [row.get(name) for name in self.form_features]}),
            headers=self.json_headers,
            name="ui: form",
        )

    @task(1)
    def login(self) -> None:
        self.auth_headers = {"Authorization": f"Bearer {self._login()}"}
        self.json_headers = {**self.auth_headers, "Content-Type": "application/json"}

    @task(1)
    def bad_request(self) -> None:
        name, path, body, authorised, expected = random.choice(BAD_REQUESTS)
        headers = self.json_headers if authorised else {"Content-Type": "application/json"}
        with self.client.post(
            path, data=body or "{}", headers=headers, name=name, catch_response=True
        ) as response:
            if response.status_code == expected:
                response.success()
            else:
                response.failure(f"expected {expected}, got {response.status_code}")
