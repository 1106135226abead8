"""Short Locust runs against a real ``bentoml serve``: no failures, and batches form.

Locust monkey-patches the stdlib with gevent, so it runs as a subprocess (the same
``load_tests/locustfile.py`` that ``make loadtest`` and ``make bench`` use): 16 users
log in through ``/auth/token`` and send single rows, batches and explanations built
from the model's schema and rows. Twice: on a small all-numeric model, and on the
benchmark's categorical profile (6 text features and missing values, 200 trees), whose
requests go through the category encoding and the nullable fields.
"""

from __future__ import annotations

import csv
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from load_tests.payloads import bundle_dir, load_rows, write_rows
from load_tests.profiles import import_profile
from load_tests.scrape import batches
from tests.support import CHEAP_ARGON2, REPO, cheap_hasher, import_test_model, running_server

pytestmark = pytest.mark.slow

LOCUST = str(Path(sys.executable).with_name("locust"))
USERS = 16
SECONDS = 12


def _numeric_model(home: Path) -> tuple[str, list[dict[str, Any]]]:
    from sklearn.datasets import load_breast_cancer

    model = import_test_model(
        home, load_breast_cancer(as_frame=True).frame, "target", {"objective": "binary:logistic"}
    )
    return model.tag, load_rows(bundle_dir(home, model.tag))


def _categorical_model(home: Path) -> tuple[str, list[dict[str, Any]]]:
    tag, fitted = import_profile("categorical", home)
    return tag, fitted.rows


@pytest.mark.parametrize(
    "build", [_numeric_model, _categorical_model], ids=["numeric", "categorical"]
)
def test_short_locust_run_has_no_failures_and_forms_batches(
    tmp_path: Path, build: Callable[[Path], tuple[str, list[dict[str, Any]]]]
) -> None:
    from tabserve.security.users import UserStore

    home = tmp_path / "bentoml"
    tag, rows = build(home)
    password = secrets.token_urlsafe(12)
    users_file = tmp_path / "users.json"
    # A cheap argon2 profile: 16 logins at once are not what this test is about.
    UserStore(users_file, hasher=cheap_hasher()).add("loadtest", password, "predict,explain")
    rows_file = write_rows(rows, tmp_path / "rows.json")

    base = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env = {
        **base,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "TABSERVE_ENV": "development",
        "TABSERVE_JWT_SECRET": secrets.token_urlsafe(48),
        "TABSERVE_USERS_FILE": str(users_file),
        "TABSERVE_LOCAL_DIR": str(tmp_path / "local"),
        "TABSERVE_MODEL_TAG": tag,
        **CHEAP_ARGON2,
    }
    with running_server(env, tmp_path / "serve.log") as url:
        before = batches(url)
        result = subprocess.run(
            [
                LOCUST,
                "-f",
                str(REPO / "load_tests" / "locustfile.py"),
                "--headless",
                "--host",
                url,
                "-u",
                str(USERS),
                "-r",
                str(USERS),
                "-t",
                f"{SECONDS}s",
                "--stop-timeout",
                "5",
                "--csv",
                str(tmp_path / "smoke"),
                "--only-summary",
            ],
            cwd=REPO,
            env={
                **base,
                "TABSERVE_LOAD_ROWS": str(rows_file),
                "TABSERVE_LOAD_USER": "loadtest",
                "TABSERVE_LOAD_PASSWORD": password,
            },
            capture_output=True,
            text=True,
            timeout=SECONDS + 60,
        )
        formed = batches(url) - before

    stats = {row["Name"]: row for row in csv.DictReader((tmp_path / "smoke_stats.csv").open())}
    assert result.returncode == 0, result.stderr[-2000:]
    total = stats["Aggregated"]
    assert int(total["Failure Count"]) == 0, (tmp_path / "smoke_failures.csv").read_text()
    assert int(stats["login"]["Request Count"]) == USERS
    for name in ("predict 1 row", "predict batch", "explain 1 row"):
        assert int(stats[name]["Request Count"]) > 0, name
    predict_requests = int(stats["predict 1 row"]["Request Count"]) + int(
        stats["predict batch"]["Request Count"]
    )
    calls = formed.calls
    # Adaptive batching merged concurrent requests: fewer model calls than requests.
    assert 0 < calls < predict_requests, (calls, predict_requests)
