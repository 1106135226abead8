"""The log format switch: BentoML's logging set up as ``bentoml serve`` does, then JSON.

Each case runs in a fresh interpreter (logging is process-wide state): BentoML's
``configure_server_logging()``, then :func:`tabserve.serving.logs.configure_logging`, then a
log line with an extra field, a BentoML line, a Python warning, an exception in a
thread and an uncaught one. With ``json`` every line the process writes must parse.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest

from tabserve.core.config import SettingsError
from tabserve.serving.logs import configure_logging, trace_ids
from tabserve.serving.settings import Settings, load_settings
from tests.support import REPO

SCRIPT = """
import logging, sys, threading, warnings
from bentoml._internal.log import configure_server_logging

configure_server_logging()
from tabserve.serving.logs import configure_logging

print(configure_logging(sys.argv[1]))
logging.getLogger("tabserve.check").warning("hello %s", "world", extra={"rows": 3})
logging.getLogger("bentoml.check").info("from bentoml")
warnings.warn("an old API", DeprecationWarning, stacklevel=1)
thread = threading.Thread(target=lambda: 1 / 0, name="worker-thread")
thread.start()
thread.join()
raise RuntimeError("boom")
"""


def run(log_format: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-u", "-W", "always", "-c", SCRIPT, log_format],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in order, as a container's log has it
        text=True,
        timeout=120,
        check=False,
    )


def parse(lines: list[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        record = json.loads(line)  # every line, or the test fails here
        assert isinstance(record, dict), line
        records.append(record)
    return records


def test_json_format_turns_every_line_into_an_object() -> None:
    result = run("json")
    assert result.returncode == 1, result.stdout  # the uncaught RuntimeError
    lines = result.stdout.splitlines()
    assert lines[0] == "1"  # configure_logging's count: BentoML's one console handler
    records = parse(lines[1:])
    by_message = {r["message"]: r for r in records}
    hello = by_message["hello world"]
    assert hello["level"] == "WARNING"
    assert hello["logger"] == "tabserve.check"
    assert hello["rows"] == 3  # extra fields are kept
    assert hello["request_id"] is None  # outside a request
    assert hello["trace_id"] is None
    assert datetime.fromisoformat(hello["time"]).utcoffset() is not None
    assert by_message["from bentoml"]["logger"] == "bentoml.check"
    (warning,) = [r for r in records if r["logger"] == "py.warnings"]
    assert "DeprecationWarning: an old API" in warning["message"]
    threaded = by_message["uncaught exception in thread worker-thread"]
    assert "ZeroDivisionError" in threaded["exc_info"]
    uncaught = by_message["uncaught exception"]
    assert uncaught["level"] == "CRITICAL"
    assert uncaught["exc_info"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: boom" in uncaught["exc_info"]
    for record in records:  # BentoML's text-only attributes stay out of the object
        assert not {"levelname_bracketed", "trace_msg", "color_message"} & set(record)


def test_text_format_keeps_bentoml_lines() -> None:
    result = run("text")
    assert result.returncode == 1
    out = result.stdout
    assert out.splitlines()[0] == "0"
    (hello,) = [line for line in out.splitlines() if "hello world" in line]
    assert "[WARNING]" in hello
    with pytest.raises(json.JSONDecodeError):
        json.loads(hello)
    assert "Traceback (most recent call last):" in out  # Python's own excepthook


def test_text_is_a_no_op_in_process() -> None:
    assert configure_logging("text") == 0


def test_no_ids_outside_a_request() -> None:
    assert trace_ids() == (None, None)


def test_log_format_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TABSERVE_LOG_FORMAT", raising=False)
    assert Settings().log_format == "text"
    monkeypatch.setenv("TABSERVE_LOG_FORMAT", "json")
    assert load_settings().log_format == "json"
    monkeypatch.setenv("TABSERVE_LOG_FORMAT", "yaml")
    with pytest.raises(SettingsError, match="TABSERVE_LOG_FORMAT"):
        load_settings()
