"""The image `make containerize` builds, run by the real container engine.

Started as the README documents it (read-only root, a tmpfs at /tmp, no capabilities,
no privilege escalation, the image's non-root user, the users file mounted read-only):
it becomes ready, logs in and predicts exactly what the booster says. Without a secret,
or with a users file it cannot read, it stops at start-up and says why. SIGTERM under
load lets requests in flight finish.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import xgboost as xgb

from tests.image.conftest import (
    PASSWORD,
    Built,
    container,
    users_file,
    wait_ready,
)
from tests.support import assert_stopped_gracefully, steady_load

pytestmark = pytest.mark.slow

GRACE_S = 10
IMAGE_UID = 1034  # the image's non-root user, bentoml
MB = 1_000_000


def _sizes(log: str) -> dict[str, float]:
    """The sizes `make containerize` printed (deploy/image/image-size.sh), in MB."""
    found = {
        key: float(re.search(rf"{pattern}: ([\d.]+) MB", log).group(1))  # type: ignore[union-attr]
        for key, pattern in (("image", r">> image \S+"), ("above_base", "layers above the base"))
    }
    return found


def test_make_containerize_reports_a_slim_image(built: Built) -> None:
    sizes = _sizes(built.build_log)
    # The budget for what the image adds to its base (the real python:3.11-slim
    # is about 130 MB, so the whole image stays under 700 MB there).
    assert sizes["above_base"] <= 550, sizes
    assert "largest layers:" in built.build_log


def test_runtime_image_has_no_build_tools(built: Built) -> None:
    probe = built.run(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        built.image,
        "-c",
        # pip belongs to the base image; nothing of the build stage reaches this one.
        "for tool in gcc cc make git uv; do command -v $tool; done; "
        "ls /root/.cache 2>/dev/null; echo done",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["done"], probe.stdout


def test_batch_scoring_stays_out_of_the_image(built: Built) -> None:
    """No Spark, MLflow or Arrow in the service's image; `tabserve score` there says what
    it needs instead of a traceback."""
    probe = built.run(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        built.image,
        "-c",
        "import importlib.util as u, subprocess, sys; "
        "print([m for m in ('pyspark', 'mlflow', 'pyarrow') if u.find_spec(m)]); "
        "r = subprocess.run([sys.executable, '-m', 'tabserve.cli', 'score', 'a.csv', "
        "'b.parquet'], capture_output=True, text=True); print(r.returncode, r.stderr)",
    )
    assert probe.returncode == 0, probe.stderr
    found, status = probe.stdout.splitlines()[0], probe.stdout.splitlines()[1]
    assert found == "[]"
    assert status.startswith("2 tabserve score: error: scoring needs the training dependencies")


def test_without_a_secret_the_container_stops_with_the_settings_message(built: Built) -> None:
    started = time.monotonic()
    result = built.run("run", "--rm", "--read-only", "--tmpfs", "/tmp", built.image, timeout=90)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "TABSERVE_ENV=production needs TABSERVE_JWT_SECRET" in output, output[-2000:]
    assert "Traceback" not in output
    assert time.monotonic() - started < 60


def test_documented_command_serves_right_answers_as_non_root(built: Built, tmp_path: Path) -> None:
    users_file(tmp_path, 0o640)
    with container(built, tmp_path) as box:
        ready_s = wait_ready(built, box)
        print(f"ready {ready_s:.1f} s after start")
        token = httpx.post(
            f"{box.url}/auth/token", data={"username": "alice", "password": PASSWORD}
        ).json()["access_token"]
        rows = built.model.rows[:5]
        response = httpx.post(
            f"{box.url}/predict", json={"rows": rows}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.text
        bundle = built.home / "models" / "tabserve" / "v1"
        booster = xgb.Booster(model_file=str(bundle / "model.ubj"))
        expected = booster.predict(
            xgb.DMatrix(built.model.schema.to_frame(rows), enable_categorical=True)
        ).astype(np.float64)
        classes = [str(c) for c in built.model.schema.target.classes]
        got = [[answer["probabilities"][c] for c in classes] for answer in response.json()]
        assert got == expected.tolist()  # exactly the booster's numbers

        # Prometheus' multiprocess directory lives on the tmpfs, like BentoML's home.
        metrics = httpx.get(f"{box.url}/metrics")
        assert metrics.status_code == 200 and "tabserve_model_info{" in metrics.text

        login_page = httpx.get(f"{box.url}/ui/login")
        assert login_page.status_code == 200 and 'name="password"' in login_page.text

        identity = built.run("exec", box.name, "id", "-u")
        assert identity.stdout.strip() not in ("", "0"), identity
        write = built.run("exec", box.name, "sh", "-c", "touch /home/bentoml/bento/x /app/x")
        assert write.returncode != 0 and "Read-only file system" in write.stderr
        config = json.loads(built.run("inspect", box.name, check=True).stdout)[0]["HostConfig"]
        assert config["ReadonlyRootfs"] is True
        assert any("no-new-privileges" in opt for opt in config["SecurityOpt"])


def test_the_record_on_a_mounted_volume_takes_feedback(built: Built, tmp_path: Path) -> None:
    """Recording in production is one setting and a volume (docs/image.md): the served
    rows and their ground truth land in a SQLite file on the host."""
    import os

    from tabserve.record.backends import open_store

    users_file(tmp_path, 0o640)
    volume = tmp_path / "record"
    volume.mkdir()
    os.chown(volume, IMAGE_UID, IMAGE_UID)  # the image's user owns what it writes
    record = ("-v", f"{volume}:/var/lib/tabserve")
    setting = ("-e", "TABSERVE_RECORD_URL=sqlite:////var/lib/tabserve/record.db")
    with container(built, tmp_path, *record, *setting) as box:
        wait_ready(built, box)
        token = httpx.post(
            f"{box.url}/auth/token", data={"username": "alice", "password": PASSWORD}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        rows = built.model.rows[:3]
        answers = httpx.post(f"{box.url}/predict", json={"rows": rows}, headers=headers).json()
        truth = {"rows": [{"id": answers[0]["id"], "actual": built.model.targets[0]}]}
        sent = httpx.post(f"{box.url}/feedback", json=truth, headers=headers)
        assert sent.status_code == 200, sent.text
        assert sent.json()["rows"][0]["outcome"] == "recorded"
    store = open_store(f"sqlite:///{volume / 'record.db'}")
    assert store.counts() == {"served_champion": 3, "feedback": 1}
    assert [row.features for row in store.labelled()] == [rows[0]]


def test_unreadable_users_file_stops_start_up_naming_the_file(built: Built, tmp_path: Path) -> None:
    users_file(tmp_path, 0o600)  # not readable by the container's user, even in the group
    with container(built, tmp_path) as box:
        waited = built.run("wait", box.name, timeout=90)
        assert waited.stdout.strip() not in ("", "0"), waited
        logs = built.run("logs", box.name)
        output = logs.stdout + logs.stderr
        assert "/secrets/users.json is not readable" in output, output[-2000:]
        assert "--group-add" in output  # the fix
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{box.url}/readyz", timeout=2)


def test_sigterm_under_load_lets_requests_in_flight_finish(built: Built, tmp_path: Path) -> None:
    users_file(tmp_path, 0o640)
    with container(built, tmp_path, "-e", f"TABSERVE_SHUTDOWN_GRACE_S={GRACE_S}") as box:
        wait_ready(built, box)
        token = httpx.post(
            f"{box.url}/auth/token", data={"username": "alice", "password": PASSWORD}
        ).json()["access_token"]
        body = json.dumps({"rows": built.model.rows[:300]}).encode()
        with steady_load(box.url, token, body) as calls:
            time.sleep(3)
            terminated = time.monotonic()
            # SIGTERM, then SIGKILL only after 60 s: the container must exit on its own.
            stopped = built.run("stop", "-t", "60", box.name, timeout=90)
            exited = time.monotonic()
        assert stopped.returncode == 0, stopped.stderr
        assert exited - terminated < GRACE_S + 5
        assert_stopped_gracefully(calls, terminated)
