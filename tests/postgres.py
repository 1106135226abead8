"""A throw-away PostgreSQL server for the tests (Debian's ``postgresql`` package, installed
by ``make system-deps``): started, stopped and started again on the same data."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from load_tests.processes import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, "PostgreSQL is installed by `make system-deps` (Debian package postgresql)"
    return found[-1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the Debian `postgres` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PostgresServer:
    """A PostgreSQL server on a free loopback port, its data in a temporary folder.

    Attributes:
        url: ``postgresql://postgres@127.0.0.1:<port>`` (append ``/<database>``).
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tabserve-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "run"
        self.sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        subprocess.run(
            _as_postgres(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> None:
        """Start the server (again) and wait until it accepts connections."""
        self.process = subprocess.Popen(
            _as_postgres(
                [
                    _pg_bin("postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.sockets),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while (
            subprocess.run(
                ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            ).returncode
            != 0
        ):
            assert self.process.poll() is None, "postgres exited"
            assert time.monotonic() < deadline, f"postgres not ready in {timeout_s} s"
            time.sleep(0.3)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are cut)."""
        if self.process is not None:
            subprocess.run(
                _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "stop", "-m", "fast"]),
                capture_output=True,
                timeout=60,
            )
            self.process.wait(timeout=30)
            self.process = None

    def create_database(self, name: str) -> str:
        """Create database ``name``; its URL."""
        subprocess.run(
            ["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
            check=True,
            capture_output=True,
        )
        return f"{self.url}/{name}"


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A started :class:`PostgresServer`, stopped and removed afterwards."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
