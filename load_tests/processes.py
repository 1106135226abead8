"""Served processes for benchmarks and tests: a free port, start until ready, stop the group.

``load_tests.bench`` starts every contender this way and the test suite its real
``bentoml serve`` (``tests/support.py``), so both wait for readiness and clean up
(the whole process group: BentoML's workers too) alike.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(
    command: Sequence[str],
    *,
    ready_url: str,
    log: Path,
    env: dict[str, str],
    cwd: Path | None = None,
    name: str | None = None,
    timeout_s: float = 90,
    stop_timeout_s: float = 15,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in a new process group, its output in ``log``; stop the group after.

    Yields the process once ``ready_url`` answers 200.

    Raises:
        RuntimeError: the process exited, or ``ready_url`` gave no 200 within
            ``timeout_s``; the message ends with the last lines of ``log``.
    """
    name = name or Path(command[0]).name
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log.read_text()[-3000:]}")
            with suppress(httpx.TransportError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name}: no 200 on {ready_url} in {timeout_s:g} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield process
    finally:
        if process.poll() is None:
            stop_group(process, timeout=stop_timeout_s)
        else:  # the leader is gone; its workers may not be
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a process group, then SIGKILL it if its leader is not gone after ``timeout`` s."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
