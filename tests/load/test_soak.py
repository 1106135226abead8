"""The soak, short (``make soak`` runs it for 20 minutes): a real ``bentoml serve`` under
mixed traffic at half its measured capacity for 60 s, held to the same criteria (memory,
open files and threads flat after warm-up, no 5xx, p99 stable), and its report written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer

from tests.support import REPO, child_env, import_test_model

pytestmark = pytest.mark.slow


def test_a_short_soak_holds_its_criteria(tmp_path: Path) -> None:
    home = tmp_path / "bentoml"
    model = import_test_model(
        home, load_breast_cancer(as_frame=True).frame, "target", {"objective": "binary:logistic"}
    )
    out = tmp_path / "soak"
    command = [sys.executable, "-m", "load_tests.soak", "--seconds", "60", "--probe-seconds", "8"]
    done = subprocess.run(
        [*command, "--model-tag", model.tag, "--out", str(out)],
        env={**child_env(), "BENTOML_HOME": str(home)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads((out / "soak.json").read_text())
    assert done.returncode == 0, (report["failures"], done.stdout[-3000:], done.stderr[-3000:])
    assert report["held"] and report["requests"] > 500
    names = set(report["by_name"])
    assert {"predict: 1 row", "explain", "ui: form", "login"} <= names
    assert any(name.startswith("bad:") for name in names)
    assert report["server_errors"] == report["lost_connections"] == report["unexpected"] == 0
    assert "Soak of 1 minutes" in (out / "soak.md").read_text()
    assert os.path.getsize(out / "samples.csv") > 0
