"""Property-based fuzzing of the whole API from its own OpenAPI document (schemathesis).

Schemathesis reads ``/docs.json`` of the real server and generates valid and invalid
requests for every operation (with a valid bearer token, so the validation behind auth
is reached). Checks: no 5xx ever; data that breaks the documented schema is refused
with a 4xx. Bounded: a fixed seed, a number of examples per operation and a time budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hardening.conftest import Target, assert_healthy

pytestmark = pytest.mark.slow

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MAX_EXAMPLES = 40
MAX_SECONDS = 60

CONFIG = """
[checks.negative_data_rejection]
# every 4xx the service answers: the error classes of tabserve/core/errors.py (README, "Errors")
expected-statuses = ["400", "401", "403", "404", "405", "413", "415", "422", "429"]
"""


def test_fuzzing_the_openapi_document_finds_no_5xx(target: Target, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(config),
            "run",
            f"{target.url}/docs.json",
            "--url",
            target.url,
            "--header",
            f"Authorization: Bearer {target.token('admin')}",
            "--checks",
            "not_a_server_error,negative_data_rejection",
            "--mode",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--max-time",
            str(MAX_SECONDS),
            "--seed",
            "20261122",
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        cwd=tmp_path,  # schemathesis writes its state folder into the working directory
        capture_output=True,
        text=True,
        timeout=MAX_SECONDS + 120,
    )
    output = result.stdout + result.stderr
    failures = output.find("FAILURES")
    assert result.returncode == 0, output[failures : failures + 8000] if failures >= 0 else output
    # It really exercised the whole API, with thousands of generated requests.
    summary = json.loads(report.read_text())
    assert summary["operations"]["tested"] == summary["operations"]["total"] >= 7, summary
    assert {"POST /predict", "POST /explain", "GET /model"} <= set(summary["valid_rates"])
    assert summary["test_cases"]["generated"] > 1_000, summary["test_cases"]
    assert not summary["failures"] and not summary["errors"]
    assert_healthy(target)
