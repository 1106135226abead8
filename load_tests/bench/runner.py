"""Measurement: Locust runs against a started contender, server CPU per request, batch sizes."""

from __future__ import annotations

import contextlib
import csv
import subprocess
import threading
import time
from pathlib import Path

from load_tests.bench.common import BIN, LOCUSTFILE, REPO, Contender, RunResult


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and all its descendants."""
    import psutil

    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


class CpuSampler:
    """Samples a server's CPU time while Locust runs (to charge only the measured window)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), cpu_seconds(self.pid)))
            self._stop.wait(self.interval)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), cpu_seconds(self.pid)))

    def used_since(self, moment: float) -> float:
        """CPU seconds used from ``moment`` (nearest sample) to the end of the run."""
        start = min(self.samples, key=lambda s: abs(s[0] - moment))[1]
        return self.samples[-1][1] - start


def read_stats(path: Path, result: RunResult) -> None:
    """Fill ``result`` from Locust's ``*_stats.csv`` (the Aggregated row for percentiles)."""
    with path.open() as handle:
        for row in csv.DictReader(handle):
            name, count = row["Name"], int(row["Request Count"])
            failures = int(row["Failure Count"])
            if name == "Aggregated":
                result.failures = failures
                result.p50 = float(row["50%"] or 0)
                result.p95 = float(row["95%"] or 0)
                result.p99 = float(row["99%"] or 0)
                continue
            if name == "login":
                continue
            result.requests += count
            result.rps += float(row["Requests/s"] or 0)
            result.rps_by_name[name] = float(row["Requests/s"] or 0)


def run_locust(
    contender: Contender,
    url: str,
    users: int,
    seconds: int,
    warmup: int,
    out: Path,
    env: dict[str, str],
    prefix: list[str],
) -> subprocess.CompletedProcess[str]:
    """One headless Locust run; CSV and HTML written under ``out``."""
    login_allowance = 3 + users // 16
    command = [
        *prefix,
        str(BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{login_allowance + warmup + seconds}s",
        "--stop-timeout",
        "5",
        "--csv",
        str(out),
        "--html",
        f"{out}.html",
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    locust_env = {
        **env,
        "TABSERVE_LOAD_TARGET": contender.target,
        "TABSERVE_LOAD_WARMUP_S": str(warmup),
    }
    return subprocess.run(
        command,
        cwd=REPO,
        env=locust_env,
        capture_output=True,
        text=True,
        timeout=login_allowance + warmup + seconds + 120,
    )
