"""``load_tests.processes``: how the benchmark and the tests start and stop their servers."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from load_tests.processes import free_port, running

# A server that starts a child in its process group (as BentoML starts its workers);
# both write their pid to the file named by argv[2].
SERVER = """
import http.server, os, subprocess, sys
pids = open(sys.argv[2], "w")
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
pids.write(f"{os.getpid()} {child.pid}"); pids.close()
http.server.ThreadingHTTPServer(
    ("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler
).serve_forever()
"""
SLEEPER = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"


def _gone(pid: int, within_s: float = 10) -> bool:
    """Whether ``pid`` has ended (exited, or a zombie nobody has reaped yet)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_yields_once_ready_and_stops_the_whole_group(tmp_path: Path) -> None:
    port, pids = free_port(), tmp_path / "pids"
    with running(
        [sys.executable, "-c", SERVER, str(port), str(pids)],
        ready_url=f"http://127.0.0.1:{port}/",
        log=tmp_path / "server.log",
        env=dict(os.environ),
        cwd=tmp_path,
    ) as process:
        assert process.poll() is None
        leader, child = (int(p) for p in pids.read_text().split())
        assert leader == process.pid
    assert process.poll() is not None
    assert _gone(child)  # the worker went with its leader


def test_a_process_that_exits_is_an_error_with_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "print('no model here'); raise SystemExit(3)"]
    with (
        pytest.raises(RuntimeError, match="server exited:\nno model here"),
        running(
            command,
            ready_url=f"http://127.0.0.1:{free_port()}/",
            log=tmp_path / "server.log",
            env=dict(os.environ),
            name="server",
        ),
    ):
        pytest.fail("never ready")


def test_no_answer_in_time_is_an_error_and_the_process_is_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with (
        pytest.raises(RuntimeError, match=r"sleeper: no 200 on .* in 2 s"),
        running(
            [sys.executable, "-c", SLEEPER, str(pid_file)],
            ready_url=f"http://127.0.0.1:{free_port()}/",
            log=tmp_path / "server.log",
            env=dict(os.environ),
            name="sleeper",
            timeout_s=2,
        ),
    ):
        pytest.fail("never ready")
    assert _gone(int(pid_file.read_text()))
