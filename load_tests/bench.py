"""``make bench``: the same Locust load against every contender, on every model profile.

Profiles (``load_tests/profiles.py``): ``default`` (the pipeline's champion, 30 numeric
features), ``categorical`` (20 features, 6 of them text, missing values) and ``heavy``
(1,500 trees of depth 8, 10 classes); the last two are built by the benchmark itself from
data that ships with scikit-learn, and cached.

Contenders (each started here, one process serving, then stopped), on every profile:

1. ``batched``   - this service (``bentoml serve service:Tabserve``), adaptive batching;
2. ``unbatched`` - the same service, batching off (``baselines/unbatched_service.py``);
3. ``fastapi``   - a plain FastAPI + PyJWT + Pydantic app written independently of tabserve,
   pandas frame into the booster (``load_tests/baselines/fastapi_app.py``);
4. ``fastapi-tabserve`` - FastAPI + uvicorn doing tabserve's own per-request work (its
   validator, JWT check and code-matrix encoding) without BentoML
   (``load_tests/baselines/fastapi_tabserve_app.py``): what BentoML costs or buys;
5. ``mlflow``    - ``mlflow models serve`` of the same model logged as the pipeline's pyfunc
   (no auth: it has none);
6. ``constant``  - a trivial ASGI app answering a constant: the ceiling of this load
   generator on this machine;
7. ``drift-off`` - (1) with ``TABSERVE_DRIFT_ENABLED=false``, on the default profile only:
   what the live drift window costs.

Two more run only when named in ``--only``, on the default profile: ``access-log-all``
(``TABSERVE_ACCESS_LOG=all``) and ``tracing-on`` (``OTEL_SDK_DISABLED=false``, no
exporter): what the production defaults save. ``shared-batcher`` runs only when named,
on every profile: tabserve whose HTTP workers send the model call to one batching model
process (``baselines/shared_batcher_service.py``), so that the batches of two workers
are as large as one's; its rows per model call are the model process's. ``--against REV`` adds
``batched@REV``, the batched service as of git revision REV (served from a temporary
worktree with this environment), on every profile: what a change costs or saves,
measured side by side.

Each contender runs every level of concurrent users; ``batched`` and ``unbatched`` then
run one user right after the heaviest level ("after burst": does adaptive batching keep
waiting once the load is gone?). On the ``heavy`` profile they also run the first level
with single-row requests only (``SINGLE_ROWS``): a batch request of 10 to 100 rows
already amortises its model call, so the mixed load bounds what batching can buy there.
``--repeat N`` runs the whole round N times, contenders
interleaved (every other round in reverse order, so that no contender always runs before
another), so that every ratio is measured side by side N times; the report gives medians
and the spread.

Then a **login flood** scenario (``flood``; ``load_tests/flood.py``) on the default
profile: the batched service, with the production argon2 parameters, takes 400 wrong
logins with random user names, 80 at a time, while four clients send authenticated
single-row predictions; the p99 of those predictions is reported beside the p99 of the
same prediction load alone. The flood comes once from one client, then from 400
(``X-Forwarded-For`` through a trusted proxy), so that every login reaches argon2.

Every contender runs one worker process, the server pinned to CPU 0 and Locust to CPU 1
(``taskset``) when the machine has two cores or more. ``--workers 2``: two worker
processes each, nothing pinned (Locust shares the cores). ``--workers 1,2``: both, side
by side in every round (the worker counts alternate like the contenders), and the report
sets each ratio with two workers beside the same ratio with one. For each number of
concurrent users, Locust runs headless with zero think time (a closed loop at full
speed); statistics are reset once every user has logged in and warmed up, so logins
(argon2) are not measured. Results:
``load_tests/results/report.md``, Plotly charts ``throughput.html`` and ``latency.html``,
and per run Locust's CSV and HTML report.

This script is plain Python: Locust (gevent) only ever runs as a subprocess. ::

    python -m load_tests.bench            # 3 profiles × 6 contenders, 32 and 64 users, 3 rounds
    python -m load_tests.bench --quick    # 1 round, 32 users, 8 s per level
    python -m load_tests.bench --profiles heavy --only batched,unbatched --users 32
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import httpx

from load_tests.payloads import bundle_dir, load_rows, write_rows
from load_tests.processes import free_port, running
from load_tests.profiles import BUILT_PROFILES, PROFILE_NAMES, BuiltProfile, build_profile
from load_tests.profiles import default_profile as pipeline_profile
from load_tests.scrape import SHARED_MODEL_ENDPOINT, Batches, batches
from tabserve.core.bundle import REFERENCE_FILE

T = TypeVar("T")
NONE = "none"
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = REPO / "load_tests" / "results"
LOCUSTFILE = REPO / "load_tests" / "locustfile.py"
# Built profiles are cached here whatever --out says: building the heavy model takes a while.
PROFILE_CACHE = REPO / "load_tests" / "results" / "profiles"
BENCH_USER = "bench"
CONTENDERS = (
    "batched",
    "unbatched",
    "fastapi",
    "fastapi-tabserve",
    "mlflow",
    "constant",
    "drift-off",
)
# Only when named in --only (on the default profile): what the production defaults save,
# BentoML's access line for every request and its (unexported) tracing spans.
PRODUCTION_DEFAULTS = ("access-log-all", "tracing-on")
# Only when named in --only, on every profile: one batching model process behind the
# HTTP workers (what keeping one worker's batches at any number of workers would take).
SHARED_BATCHER = "shared-batcher"
EXTRA_CONTENDERS = (*PRODUCTION_DEFAULTS, SHARED_BATCHER)
# Run on these profiles only: the drift window's cost (issue 15: at most 5 % of
# throughput) is measured once, on the default model, where it is the largest share.
DEFAULT_PROFILE_ONLY = ("drift-off", *PRODUCTION_DEFAULTS)
# The one-user run right after the heaviest level: the two the target compares.
AFTER_BURST_CONTENDERS = ("batched", "unbatched")
# Predictions only: two contenders (mlflow, constant) have no explanations, and the
# same load must run against every contender.
BENCH_MIX = "predict_one=4,predict_batch=1"
TARGET_USERS = (32, 64)
AFTER_BURST = "after burst"
# On these profiles, batched and unbatched also run the first level with single-row
# requests only: batching merges requests, and a batch request of 10 to 100 rows already
# amortises its model call, so the mixed load bounds what batching can buy on a costly
# model (see the README); single rows show what it buys where it should.
SINGLE_ROWS = "single rows"
SINGLE_ROW_MIX = "predict_one=1"
SINGLE_ROW_PROFILES = ("heavy",)
AFTER_BURST_SECONDS = 10
FLOOD_P99_TARGET_MS = 250
LOW_LOAD_P50_SLACK_MS = 5
# Issue 16's targets per profile: batched at least this many times each contender's
# throughput (at the levels given), and the default profile's p99 at 32 users.
RATIO_TARGETS: dict[str, list[tuple[str, float, tuple[int, ...]]]] = {
    "default": [
        ("fastapi", 1.3, (32,)),
        ("unbatched", 1.5, (32, 64)),
        ("drift-off", 0.95, (32,)),
    ],
    "categorical": [("fastapi", 2.0, (32, 64))],
    "heavy": [("fastapi", 2.0, (32, 64)), ("unbatched", 3.0, (32, 64))],
}
P99_TARGETS_MS = {"default": (32, 50.0)}
# The bench user's hash is made with this cheap profile, and the servers are told to use
# it (else their first login would re-hash it): logins are not what is measured. The
# login flood drops it, to meet the production parameters.
CHEAP_ARGON2 = {
    "TABSERVE_ARGON2_TIME_COST": "1",
    "TABSERVE_ARGON2_MEMORY_KIB": "8192",
    "TABSERVE_ARGON2_PARALLELISM": "1",
}


@dataclass(frozen=True)
class Contender:
    """A server to benchmark: how to start it and how to talk to it."""

    name: str
    title: str
    command: list[str]
    target: str = "tabserve"  # locustfile payload adapter
    ready_path: str = "/readyz"
    env: dict[str, str] = field(default_factory=dict)
    has_metrics: bool = False
    # the ``tabserve_batch_rows`` endpoint label that counts the rows of each model call
    batch_endpoint: str = "predict"


@dataclass
class RunResult:
    """One Locust run: a contender at a number of concurrent users, on one profile."""

    contender: str
    users: int
    profile: str = "default"
    round: int = 1
    # or AFTER_BURST: one user right after the heaviest level; or SINGLE_ROWS
    phase: str = "load"
    requests: int = 0
    failures: int = 0
    rps: float = 0.0
    rps_by_name: dict[str, float] = field(default_factory=dict)
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    cpu_ms_per_request: float | None = None
    mean_batch_rows: float | None = None
    error: str = ""
    workers: int = 1


def scraped(url: str, endpoint: str = "predict") -> Batches | None:
    """The service's batch totals so far, or None when ``/metrics`` does not answer."""
    try:
        return batches(url, endpoint)
    except httpx.HTTPError:
        return None


def workers_text(workers: int) -> str:
    """``1 worker``, ``2 workers``."""
    return f"{workers} worker{'s' if workers > 1 else ''}"


def workers_suffix(workers: int) -> str:
    """What the file names of a run with ``workers`` worker processes carry: ``_w2``, or
    nothing for one worker."""
    return f"_w{workers}" if workers > 1 else ""


def pinning(workers: int) -> tuple[list[str], list[str], str]:
    """``taskset`` prefixes for the server and for Locust, and a sentence saying which."""
    taskset = shutil.which("taskset")
    cores = os.cpu_count() or 1
    if workers > 1:
        return [], [], f"not pinned: {workers} workers per server and Locust share {cores} CPUs"
    if taskset is None:
        return [], [], "not pinned: `taskset` is not installed"
    if cores < 2:
        return [], [], "not pinned: one CPU only"
    return (
        [taskset, "-c", "0"],
        [taskset, "-c", "1"],
        f"server on CPU 0, Locust on CPU 1 (`taskset`; {cores} CPUs)",
    )


def contenders(
    port_of: dict[str, int],
    mlflow_model: str,
    workers: int = 1,
    against: tuple[str, Path] | None = None,
) -> list[Contender]:
    """The contenders, in report order, each with ``workers`` worker processes; with
    ``against`` (a git revision and its checkout), also ``batched@<revision>``."""
    bentoml, uvicorn, mlflow = str(BIN / "bentoml"), str(BIN / "uvicorn"), str(BIN / "mlflow")

    def serve(module: str, name: str) -> list[str]:
        return [bentoml, "serve", module, "--host", "127.0.0.1", "--port", str(port_of[name])]

    def uvi(app: str, name: str) -> list[str]:
        return [uvicorn, app, "--host", "127.0.0.1", "--port", str(port_of[name])]

    def tabserve_variant(name: str, what: str, *args: str, **env: str) -> Contender:
        """(1), the batched service, with some settings (or ``bentoml serve`` arguments)
        changed."""
        return Contender(
            name,
            f"tabserve, adaptive batching, {what}",
            [*serve("service:Tabserve", name), *args],
            env={"TABSERVE_WORKERS": str(workers), **env},
            has_metrics=True,
        )

    return [
        Contender(
            "batched",
            "tabserve, adaptive batching",
            serve("service:Tabserve", "batched"),
            env={"TABSERVE_WORKERS": str(workers)},
            has_metrics=True,
        ),
        Contender(
            "unbatched",
            "tabserve, batching off",
            serve("load_tests.baselines.unbatched_service:Tabserve", "unbatched"),
            env={"TABSERVE_WORKERS": str(workers)},
            has_metrics=True,
        ),
        Contender(
            "fastapi",
            "plain FastAPI + PyJWT + Pydantic, pandas frame",
            [
                *uvi("load_tests.baselines.fastapi_app:create_app", "fastapi"),
                *("--factory", "--workers", str(workers)),
            ],
        ),
        Contender(
            "fastapi-tabserve",
            "FastAPI + uvicorn with tabserve's validation, JWT check and encoding",
            [
                *uvi("load_tests.baselines.fastapi_tabserve_app:app", "fastapi-tabserve"),
                *("--workers", str(workers)),
            ],
        ),
        Contender(
            "mlflow",
            "mlflow models serve (no auth)",
            [
                *(mlflow, "models", "serve", "-m", mlflow_model, "--env-manager", "local"),
                *("--host", "127.0.0.1", "-p", str(port_of["mlflow"]), "-w", str(workers)),
            ],
            target="mlflow",
            ready_path="/ping",
        ),
        Contender(
            "constant",
            "constant ASGI app (load-generator ceiling)",
            [*uvi("load_tests.baselines.constant_app:app", "constant"), "--workers", str(workers)],
        ),
        tabserve_variant(
            "drift-off",
            "drift window off (what drift costs)",
            TABSERVE_DRIFT_ENABLED="false",
        ),
        tabserve_variant(
            "access-log-all",
            "BentoML's access line for every request",
            TABSERVE_ACCESS_LOG="all",
        ),
        tabserve_variant(
            "tracing-on",
            "OpenTelemetry on without an exporter (BentoML's default)",
            OTEL_SDK_DISABLED="false",
        ),
        Contender(
            SHARED_BATCHER,
            "tabserve, one batching model process behind the workers (bentoml.depends)",
            serve("load_tests.baselines.shared_batcher_service:SharedBatcher", SHARED_BATCHER),
            env={"TABSERVE_WORKERS": str(workers)},
            has_metrics=True,
            batch_endpoint=SHARED_MODEL_ENDPOINT,
        ),
        *(
            [
                tabserve_variant(
                    against_name(against[0]),
                    f"as of {against[0]}",
                    *("--working-dir", str(against[1])),
                    PYTHONPATH=str(against[1]),
                )
            ]
            if against
            else []
        ),
    ]


def against_name(revision: str) -> str:
    """The contender name of the batched service as of ``revision`` (``--against``)."""
    return f"batched@{revision}"


def checkout(revision: str, out: Path) -> Path:
    """A detached git worktree of ``revision`` under ``out`` (replaced if there), for
    ``--against``; :func:`remove_checkout` removes it."""
    directory = out / f"against-{revision.replace('/', '_')}"
    remove_checkout(directory)
    added = subprocess.run(
        ["git", "worktree", "add", "--detach", str(directory), revision],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
    )
    if added.returncode != 0:
        raise ValueError(f"--against {revision}: {added.stderr.strip() or 'git worktree failed'}")
    atexit.register(remove_checkout, directory)  # whatever way the benchmark ends
    return directory


def remove_checkout(directory: Path) -> None:
    """Remove a worktree made by :func:`checkout` (nothing if absent)."""
    if directory.exists():
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(directory)],
            cwd=REPO,
            check=False,
            capture_output=True,
        )
        shutil.rmtree(directory, ignore_errors=True)


def prepare_auth(workdir: Path) -> dict[str, str]:
    """A JWT secret and a users file with the benchmark user, as server environment.

    The user's argon2 hash uses a cheap profile: logins are not what is measured,
    and 64 users logging in with the default profile would cost the server ~10 s of
    CPU (argon2 verification reads its cost from the stored hash).
    """
    from tabserve.security.passwords import password_hasher
    from tabserve.security.users import UserStore

    password = secrets.token_urlsafe(16)
    users = workdir / "users.json"
    cheap = password_hasher(
        int(CHEAP_ARGON2["TABSERVE_ARGON2_TIME_COST"]),
        int(CHEAP_ARGON2["TABSERVE_ARGON2_MEMORY_KIB"]),
        int(CHEAP_ARGON2["TABSERVE_ARGON2_PARALLELISM"]),
    )
    UserStore(users, hasher=cheap).add(BENCH_USER, password, "predict,explain")
    return {
        "TABSERVE_JWT_SECRET": secrets.token_urlsafe(48),
        "TABSERVE_USERS_FILE": str(users),
        "TABSERVE_LOCAL_DIR": str(workdir / "local"),
        "TABSERVE_LOAD_PASSWORD": password,
    }


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


@contextlib.contextmanager
def profiled(
    pid: int, out: Path, enabled: bool, start_marker: Path | None = None
) -> Iterator[None]:
    """Sample ``pid`` and its children with py-spy during the measured window.

    Sampling starts when Locust writes ``start_marker`` (statistics reset: every user
    logged in and warmed up), so logins are not in the profile either; without a marker,
    at once. Writes py-spy's collapsed stacks to ``out`` (for flame-graph tools) and a
    per-function summary to ``out`` with suffix ``.top.txt``.
    """
    if not enabled:
        yield
        return
    spies: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()

    def start_when_measured() -> None:
        while not stop.is_set() and start_marker is not None and not start_marker.exists():
            stop.wait(0.1)
        if not stop.is_set():
            spies.append(
                subprocess.Popen(
                    [
                        *(str(BIN / "py-spy"), "record", "--pid", str(pid), "--subprocesses"),
                        *("--rate", "250", "--format", "raw", "--output", str(out)),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    waiter = threading.Thread(target=start_when_measured, daemon=True)
    waiter.start()
    try:
        yield
    finally:
        stop.set()
        waiter.join()
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
        if out.exists():
            out.with_suffix(".top.txt").write_text(profile_summary(out))


def profile_summary(collapsed: Path, top: int = 40) -> str:
    """Where the sampled time went: the share of samples per frame, inclusive and self.

    py-spy samples running threads only (no ``--idle``); frames that still wait (a
    select, a lock) are reported apart, so the shares of busy time say what the CPU did.
    """
    idle_leaves = ("select", "poll", "epoll", "wait", "sleep", "acquire", "accept", "_worker")
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    busy = idle = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        leaf = frames[-1].split(" ")[0] if frames else ""
        if any(word in leaf for word in idle_leaves):
            idle += count
            continue
        busy += count
        for frame in dict.fromkeys(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
    lines = [f"busy samples {busy}, idle samples {idle}", "", "inclusive (share of busy):"]
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / max(busy, 1):6.1f}%  {frame}")
    lines += ["", "self (share of busy):"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / max(busy, 1):6.1f}%  {frame}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Load:
    """How each contender is driven: levels, timings, pinning, py-spy."""

    users_levels: list[int]
    seconds: int
    warmup: int
    pins: tuple[list[str], list[str]]
    after_burst: bool = True
    py_spy: bool = False
    workers: int = 1  # worker processes per contender (the contenders' commands carry it)


def run_level(
    contender: Contender,
    process: subprocess.Popen[bytes],
    url: str,
    result: RunResult,
    seconds: int,
    warmup: int,
    locust_env: dict[str, str],
    load: Load,
) -> RunResult:
    """One Locust run against a started contender; fills ``result``."""
    before = scraped(url, contender.batch_endpoint) if contender.has_metrics else None
    suffix = {AFTER_BURST: "_burst", SINGLE_ROWS: "_single"}.get(result.phase, "")
    out = (
        RESULTS
        / "runs"
        / (
            f"{result.profile}_{contender.name}{workers_suffix(result.workers)}"
            f"_u{result.users}{suffix}_r{result.round}"
        )
    )
    marker = out.with_suffix(".reset")
    marker.unlink(missing_ok=True)
    with (
        CpuSampler(process.pid) as cpu,
        profiled(process.pid, out.with_suffix(".collapsed"), load.py_spy, marker),
    ):
        done = run_locust(
            contender,
            url,
            result.users,
            seconds,
            warmup,
            out,
            {
                **locust_env,
                "TABSERVE_LOAD_RESET_FILE": str(marker),
                **({"TABSERVE_LOAD_MIX": SINGLE_ROW_MIX} if result.phase == SINGLE_ROWS else {}),
            },
            load.pins[1],
        )
    stats = Path(f"{out}_stats.csv")
    if not stats.exists():
        result.error = f"locust exited {done.returncode}: {done.stderr[-500:]}"
    else:
        read_stats(stats, result)
        if marker.exists() and result.requests:
            used = cpu.used_since(float(marker.read_text()))
            result.cpu_ms_per_request = 1000 * used / result.requests
    after = scraped(url, contender.batch_endpoint) if before is not None else None
    if before is not None and after is not None:
        formed = after - before
        if formed.calls > 0:
            result.mean_batch_rows = formed.rows / formed.calls
    label = f"{result.users:>3} users{'' if result.phase == 'load' else ', ' + result.phase}"
    print(
        f"   {label}: {result.rps:7.1f} req/s  p50 {result.p50:5.0f} ms  "
        f"p95 {result.p95:5.0f} ms  p99 {result.p99:5.0f} ms  "
        f"failures {result.failures}{'  ' + result.error if result.error else ''}",
        flush=True,
    )
    return result


def bench_contender(
    contender: Contender,
    profile: BuiltProfile,
    round_: int,
    load: Load,
    server_env: dict[str, str],
    locust_env: dict[str, str],
    port: int,
) -> list[RunResult]:
    """Start one contender (``load.workers`` worker processes), run every user level (and
    one user after the burst), stop it."""
    workers = load.workers
    url = f"http://127.0.0.1:{port}"
    runs = RESULTS / "runs"
    results: list[RunResult] = []
    levels = [(u, "load") for u in load.users_levels]
    if profile.name in SINGLE_ROW_PROFILES and contender.name in AFTER_BURST_CONTENDERS:
        levels.append((load.users_levels[0], SINGLE_ROWS))
    if load.after_burst and contender.name in AFTER_BURST_CONTENDERS:
        levels.append((1, AFTER_BURST))
    several = f", {workers_text(workers)}" if workers > 1 else ""
    print(
        f">> {profile.name} / {contender.name}: {contender.title} (round {round_}{several})",
        flush=True,
    )
    try:
        with running(
            [*load.pins[0], *contender.command],
            ready_url=url + contender.ready_path,
            log=runs
            / f"{profile.name}_{contender.name}{workers_suffix(workers)}_r{round_}.server.log",
            env={**server_env, **contender.env},
            cwd=REPO,
            name=contender.name,
            timeout_s=180,
            stop_timeout_s=20,
        ) as process:
            for users, phase in levels:
                burst = phase == AFTER_BURST
                result = RunResult(
                    contender.name, users, profile.name, round_, phase, workers=workers
                )
                results.append(
                    run_level(
                        contender,
                        process,
                        url,
                        result,
                        min(load.seconds, AFTER_BURST_SECONDS) if burst else load.seconds,
                        # right after the burst: the first second is what is asked about
                        0 if burst else load.warmup,
                        locust_env,
                        load,
                    )
                )
    except RuntimeError as exc:
        print(f"   {contender.name} failed: {exc}", flush=True)
        done = {(r.users, r.phase) for r in results}
        results.extend(
            RunResult(
                contender.name,
                u,
                profile.name,
                round_,
                phase,
                error=str(exc)[:300],
                workers=workers,
            )
            for u, phase in levels
            if (u, phase) not in done
        )
    return results


def bench_login_flood(
    contender: Contender,
    server_env: dict[str, str],
    locust_env: dict[str, str],
    pins: tuple[list[str], list[str]],
    port: int,
    py_spy: bool = False,
) -> dict[str, Any]:
    """The login flood scenario against ``contender`` (the batched service); with
    ``py_spy``, the server sampled over the whole scenario (``runs/flood.collapsed``)."""
    url = f"http://127.0.0.1:{port}"
    runs = RESULTS / "runs"
    env = {k: v for k, v in server_env.items() if k not in CHEAP_ARGON2}
    env["TABSERVE_TRUSTED_PROXIES"] = "127.0.0.1/32"  # the flood tool plays the proxy
    out = runs / "flood.json"
    print(">> flood: 400 wrong logins at 80 concurrency, predictions alongside", flush=True)
    try:
        # py-spy samples from the start: the scenario is its own warm-up.
        with (
            running(
                [*pins[0], *contender.command],
                ready_url=url + contender.ready_path,
                log=runs / "flood.server.log",
                env={**env, **contender.env},
                cwd=REPO,
                name=contender.name,
                timeout_s=180,
                stop_timeout_s=20,
            ) as server,
            profiled(server.pid, runs / "flood.collapsed", py_spy),
        ):
            done = subprocess.run(
                [
                    *pins[1],
                    str(BIN / "python"),
                    *("-m", "load_tests.flood", "--url", url),
                    *("--rows", locust_env["TABSERVE_LOAD_ROWS"]),
                    *("--user", BENCH_USER, "--password", locust_env["TABSERVE_LOAD_PASSWORD"]),
                    *("--out", str(out), "--spread"),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        if done.returncode != 0 or not out.exists():
            return {"error": f"flood exited {done.returncode}: {done.stderr[-500:]}"}
    except RuntimeError as exc:
        return {"error": str(exc)[:300]}
    result: dict[str, Any] = json.loads(out.read_text())
    print(f"   predict p99 alone {result['predict_alone']['p99_ms']:.0f} ms", flush=True)
    for flood in result["floods"]:
        print(
            f"   flood from {flood['clients']} client(s): predict p99 "
            f"{flood['predict']['p99_ms']:.0f} ms; logins {flood['outcomes']}",
            flush=True,
        )
    return result


def flood_lines(result: dict[str, Any]) -> list[str]:
    """The report's section on the login flood."""
    lines = ["## Login flood", ""]
    if "error" in result:
        return [*lines, f"error: {result['error']}", ""]
    first = result["floods"][0]
    lines += [
        f"{first['requests']} wrong logins with random user names, {first['concurrency']} at "
        "a time, against the batched service with the production argon2 parameters, from "
        "one client and then from one address per login (`X-Forwarded-For`, trusted "
        "proxy: the throttle never applies, every login reaches the hash). Four clients "
        "sent authenticated single-row `POST /predict` requests throughout, and alone "
        "before the floods.",
        "",
        "| /predict | logins (status code: count) | flood s | requests | failures "
        "| p50 ms | p95 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    alone = result["predict_alone"]
    lines.append(
        f"| alone | | | {alone['requests']} | {alone['failures']} | {alone['p50_ms']:.0f} | "
        f"{alone['p95_ms']:.0f} | {alone['p99_ms']:.0f} |"
    )
    for flood in result["floods"]:
        r = flood["predict"]
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(flood["outcomes"].items()))
        lines.append(
            f"| flood from {flood['clients']} client(s) | {outcomes} | {flood['seconds']:.1f} | "
            f"{r['requests']} | {r['failures']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
            f"{r['p99_ms']:.0f} |"
        )
    return [*lines, ""]


def flood_targets(result: dict[str, Any] | None) -> list[tuple[str, bool | None, str]]:
    """The login flood's targets: predictions fast and none failed, logins never a 5xx."""
    if result is None:
        return []
    if "error" in result:
        return [("login flood ran", False, result["error"][:80])]
    checks: list[tuple[str, bool | None, str]] = []
    for flood in result["floods"]:
        during = flood["predict"]
        errors = sum(v for k, v in flood["outcomes"].items() if k.startswith("5"))
        who = f"login flood from {flood['clients']} client(s)"
        checks += [
            (
                f"{who}: /predict p99 ≤ {FLOOD_P99_TARGET_MS} ms",
                during["p99_ms"] <= FLOOD_P99_TARGET_MS,
                f"{during['p99_ms']:.0f} ms (alone {result['predict_alone']['p99_ms']:.0f} ms)",
            ),
            (
                f"{who}: no 5xx, no failed prediction",
                errors == 0 and during["failures"] == 0,
                f"{errors} login 5xx, {during['failures']} failed predictions",
            ),
        ]
    return checks


# The libraries whose versions change what the bench measures (XGBoost 3.1 and 3.2, for
# one, walk every tree's nodes once per call: see the README).
MEASURED_LIBRARIES = ("xgboost-cpu", "bentoml", "numpy", "pydantic")


def cpu_text(
    cpuinfo: Path = Path("/proc/cpuinfo"),
    caches: Path = Path("/sys/devices/system/cpu/cpu0/cache"),
) -> str:
    """The CPU model and its L2 and L3 sizes, as Linux reports them ('' elsewhere).

    The heavy profile's results depend on them: its 3.5 MB of trees fit in no L2, so
    how far batching is ahead differs between machines (README, issue 16)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            if not line.strip():
                break  # the first CPU's block is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    text = fields.get("model name", "")
    if fields.get("cpu family") and fields.get("model"):
        text += f" (family {fields['cpu family']}, model {fields['model']})"
    sizes = []
    with contextlib.suppress(OSError):
        for index in sorted(caches.glob("index*")):
            level = (index / "level").read_text().strip()
            if level in ("2", "3"):
                size = (index / "size").read_text().strip()
                shared = (index / "shared_cpu_list").read_text().strip()
                sizes.append(f"L{level} {size} (CPUs {shared})")
    return ", ".join(part for part in (text.strip(), *sizes) if part)


def machine_text() -> str:
    """The machine and the versions of the libraries the servers run on, for the report."""
    libraries = []
    for name in MEASURED_LIBRARIES:
        try:
            libraries.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            libraries.append(f"{name} not installed")
    parts = [platform.machine(), cpu_text(), f"{os.cpu_count()} CPUs"]
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(part for part in [*parts, *libraries] if part)


def model_identity(model_tag: str, bentoml_home: Path) -> dict[str, str]:
    """The BentoML model served, whether it has a drift reference, and the registry
    version behind ``@champion``."""
    identity = {"bentoml_tag": model_tag}
    with contextlib.suppress(Exception):
        directory = bundle_dir(bentoml_home, model_tag)
        identity["drift_reference"] = "yes" if (directory / REFERENCE_FILE).is_file() else NONE
        lineage = json.loads((directory / "lineage.json").read_text())
        identity["bentoml_tag"] = f"{model_tag.split(':')[0]}:{directory.name}"
        identity["bentoml_registry_version"] = str(lineage.get("registry_version"))
    with contextlib.suppress(Exception):
        from mlflow import MlflowClient

        version = MlflowClient().get_model_version_by_alias("tabserve", "champion")
        identity["mlflow_champion_version"] = str(version.version)
    return identity


def round_order(contenders: Sequence[T], round_: int) -> list[T]:
    """The order contenders run in, in round ``round_`` (from 1): every other round reversed.

    Each pair of contenders swaps places from one round to the next, so no ratio carries
    the bias of one contender always running first, or always just after the other.
    """
    return list(contenders) if round_ % 2 else list(reversed(contenders))


# ---- aggregation over rounds ---------------------------------------------------------
def ratio(a: float, b: float) -> str:
    """``a / b`` as ``1.23×``, or n/a."""
    return f"{a / b:.2f}×" if b > 0 and a > 0 else "n/a"


@dataclass(frozen=True)
class Spread:
    """The median and range of one number over the rounds."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        """None when there is no value."""
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), len(values))

    def text(self, unit: str = "", digits: int = 0) -> str:
        """``1.23× (1.10-1.31)``: the median, and the range when there are several rounds."""
        middle = f"{self.median:,.{digits}f}{unit}"
        if self.n < 2:
            return middle
        return f"{middle} ({self.low:,.{digits}f}–{self.high:,.{digits}f})"


def good(results: list[RunResult]) -> list[RunResult]:
    """Runs that produced numbers."""
    return [r for r in results if not r.error and r.requests > 0]


def runs_of(
    results: list[RunResult], profile: str, contender: str, users: int, phase: str = "load"
) -> list[RunResult]:
    """The runs of one cell of the report, over every round."""
    return [
        r
        for r in results
        if (r.profile, r.contender, r.users, r.phase) == (profile, contender, users, phase)
    ]


def ratio_spread(
    results: list[RunResult],
    profile: str,
    users: int,
    other: str,
    mine: str = "batched",
    phase: str = "load",
    attr: str = "rps",
) -> Spread | None:
    """``mine ÷ other`` throughput (or another number of the runs, ``attr``) per round
    (side by side), over the rounds."""
    values = []
    for round_ in sorted({r.round for r in results}):
        a, b = (
            [
                getattr(r, attr)
                for r in good(runs_of(results, profile, name, users, phase))
                if r.round == round_ and getattr(r, attr)
            ]
            for name in (mine, other)
        )
        if a and b:
            values.append(a[0] / b[0])
    return Spread.of(values)


def metric(results: list[RunResult], attr: str) -> Spread | None:
    """The spread of one attribute of some runs."""
    return Spread.of([float(getattr(r, attr)) for r in good(results)])


# ---- targets -------------------------------------------------------------------------
Check = tuple[str, bool | None, str]


def targets(results: list[RunResult], profile: str) -> list[Check]:
    """Issue 16's targets on one profile: (description, met?, measured)."""
    checks: list[Check] = []
    levels = sorted({r.users for r in results if r.profile == profile and r.phase == "load"})
    for users in (u for u in TARGET_USERS if u in levels):
        cells = [r for r in results if (r.profile, r.users, r.phase) == (profile, users, "load")]
        failed: dict[str, int] = {}
        for r in cells:
            if r.contender != "constant":
                failed[r.contender] = failed.get(r.contender, 0) + r.failures
        errors = sorted({r.contender for r in cells if r.error})
        checks.append(
            (
                f"{users} users: zero failed requests (every contender, every round)",
                not errors and all(v == 0 for v in failed.values()),
                ", ".join(f"{c} {v}" for c, v in failed.items())
                + (f"; errors: {', '.join(errors)}" if errors else ""),
            )
        )
    for other, wanted, at in RATIO_TARGETS.get(profile, []):
        for users in (u for u in at if u in levels):
            spread = ratio_spread(results, profile, users, other)
            checks.append(
                (
                    f"{users} users: batched ≥ {wanted}× {other} throughput",
                    None if spread is None else spread.median >= wanted,
                    "n/a" if spread is None else spread.text("×", 2),
                )
            )
    if profile in P99_TARGETS_MS:
        users, limit = P99_TARGETS_MS[profile]
        p99 = metric(runs_of(results, profile, "batched", users), "p99")
        if p99 is not None:
            checks.append(
                (
                    f"{users} users: batched p99 ≤ {limit:.0f} ms",
                    p99.median <= limit,
                    p99.text(" ms"),
                )
            )
    for users in sorted(
        {r.users for r in results if (r.profile, r.phase) == (profile, SINGLE_ROWS)}
    ):
        spread = ratio_spread(results, profile, users, "unbatched", phase=SINGLE_ROWS)
        wanted = max(
            (w for o, w, _ in RATIO_TARGETS.get(profile, []) if o == "unbatched"), default=0
        )
        checks.append(
            (
                f"{users} users, single-row requests only: batched ≥ {wanted}× unbatched "
                "throughput",
                None if spread is None else spread.median >= wanted,
                "n/a" if spread is None else spread.text("×", 2),
            )
        )
    batched = metric(runs_of(results, profile, "batched", 1, AFTER_BURST), "p50")
    unbatched = metric(runs_of(results, profile, "unbatched", 1, AFTER_BURST), "p50")
    if batched is not None and unbatched is not None:
        checks.append(
            (
                f"1 user right after the burst: batched p50 ≤ unbatched p50 + "
                f"{LOW_LOAD_P50_SLACK_MS} ms",
                batched.median <= unbatched.median + LOW_LOAD_P50_SLACK_MS,
                f"batched {batched.text(' ms', 1)}, unbatched {unbatched.text(' ms', 1)}",
            )
        )
    return checks


# ---- report --------------------------------------------------------------------------
def profile_lines(
    results: list[RunResult], profile: BuiltProfile, cont: list[Contender], heading: str = ""
) -> list[str]:
    """The report's section on one profile: a table per level, then its targets."""
    mine = [r for r in results if r.profile == profile.name]
    rounds = len({r.round for r in mine})
    lines = [f"## Profile {profile.describe()}{heading}", ""]
    if rounds > 1:
        lines += [
            f"Medians over {rounds} rounds, the range in parentheses; each ratio is taken "
            "within a round (contenders side by side), then over the rounds.",
            "",
        ]
    order = {"load": 0, SINGLE_ROWS: 1, AFTER_BURST: 2}
    cells = sorted({(r.users, r.phase) for r in mine}, key=lambda c: (order[c[1]], c[0]))
    for users, phase in cells:
        title = {
            "load": f"{users} concurrent users",
            SINGLE_ROWS: f"{users} concurrent users, single-row requests only",
            AFTER_BURST: "1 user, right after the burst",
        }[phase]
        lines += [
            f"### {title}",
            "",
            "| contender | req/s | p50 ms | p95 ms | p99 ms | failures | server CPU ms/req "
            "| rows per model call | batched ÷ this |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in cont:
            runs = runs_of(results, profile.name, c.name, users, phase)
            if not runs:
                continue
            if not good(runs):
                lines.append(f"| {c.name} | error: {runs[0].error[:80]} | | | | | | | |")
                continue
            rps, p50, p95, p99 = (metric(runs, a) for a in ("rps", "p50", "p95", "p99"))
            cpu = metric([r for r in runs if r.cpu_ms_per_request], "cpu_ms_per_request")
            rows = metric([r for r in runs if r.mean_batch_rows], "mean_batch_rows")
            rel = (
                ratio_spread(results, profile.name, users, c.name, phase=phase)
                if phase != AFTER_BURST
                else None
            )
            cells_text = [
                c.name,
                rps.text() if rps else "",
                p50.text(digits=1 if p50 and p50.median < 10 else 0) if p50 else "",
                p95.text() if p95 else "",
                p99.text() if p99 else "",
                str(sum(r.failures for r in runs)),
                cpu.text(digits=2) if cpu else "",
                rows.text(digits=1) if rows else "",
                rel.text("×", 2) if rel and c.name != "batched" else "",
            ]
            lines.append("| " + " | ".join(cells_text) + " |")
        lines.append("")
    checks = targets(results, profile.name)
    if checks:
        lines += [f"Targets ({profile.name}):", "", "| target | met | measured |", "|---|---|---|"]
        for text, met, measured in checks:
            mark = "yes" if met else ("n/a" if met is None else "**no**")
            lines.append(f"| {text} | {mark} | {measured} |")
        lines.append("")
    return lines


def with_workers(results: list[RunResult], workers: int) -> list[RunResult]:
    """The runs made with ``workers`` worker processes per contender."""
    return [r for r in results if r.workers == workers]


def within_noise(a: Spread, b: Spread) -> bool | None:
    """Whether two spreads of one ratio agree: the median of each lies within the other's
    range (None with a single round: no range to compare with)."""
    if a.n < 2 or b.n < 2:
        return None
    return a.low <= b.median <= a.high or b.low <= a.median <= b.high


def workers_lines(results: list[RunResult], profiles: list[BuiltProfile]) -> list[str]:
    """With several worker counts: each ratio of (1) with more workers beside the same
    ratio with the fewest, measured in the same rounds."""
    counts = sorted({r.workers for r in results})
    if len(counts) < 2:
        return []
    base = counts[0]
    lines = [
        f"## {' and '.join(map(str, counts[1:]))} workers against {base}",
        "",
        "Each ratio taken within a round, with each number of worker processes per contender "
        "(the worker counts ran side by side in every round); within noise: the median of "
        "each lies within the other's range over the rounds. Server CPU: unbatched ÷ batched "
        "server CPU per request (Locust's own CPU left out).",
        "",
        "| profile | users | ratio | "
        + " | ".join(map(workers_text, counts))
        + " | within noise |",
        "|---|---|---|" + "---:|" * len(counts) + "---|",
    ]
    for profile in profiles:
        mine = [r for r in results if r.profile == profile.name]
        cells = sorted({(r.users, r.phase) for r in mine if r.phase != AFTER_BURST})
        others = list(dict.fromkeys(r.contender for r in mine if r.contender != "batched"))
        for users, phase in cells:
            where = f"{users}" + (", single rows" if phase == SINGLE_ROWS else "")
            rows: list[tuple[str, list[Spread | None]]] = [
                (
                    f"batched ÷ {other}",
                    [
                        ratio_spread(with_workers(mine, w), profile.name, users, other, phase=phase)
                        for w in counts
                    ],
                )
                for other in others
            ]
            rows.append(
                (
                    "server CPU",
                    [
                        ratio_spread(
                            with_workers(mine, w),
                            *(profile.name, users, "batched", "unbatched", phase),
                            attr="cpu_ms_per_request",
                        )
                        for w in counts
                    ],
                )
            )
            for name, spreads in rows:
                first = spreads[0]
                if first is None or all(s is None for s in spreads[1:]):
                    continue
                agree = [within_noise(first, s) for s in spreads[1:] if s is not None]
                verdict = (
                    "n/a (one round)"
                    if any(a is None for a in agree)
                    else ("yes" if all(agree) else "**no**")
                )
                lines.append(
                    f"| {profile.name} | {where} | {name} | "
                    + " | ".join(s.text("×", 2) if s else "" for s in spreads)
                    + f" | {verdict} |"
                )
    return [*lines, ""]


def labelled(
    results: list[RunResult], cont: list[Contender]
) -> tuple[list[RunResult], dict[str, str]]:
    """The runs and contender titles for the charts: with several worker counts, each
    contender with more workers than the fewest is a line of its own."""
    counts = sorted({r.workers for r in results})
    titles = {c.name: c.title for c in cont}
    if len(counts) < 2:
        return results, titles
    out = []
    for r in results:
        if r.workers != counts[0]:
            name = f"{r.contender} ×{r.workers}"
            titles[name] = f"{titles[r.contender]}, {r.workers} workers"
            r = replace(r, contender=name)
        out.append(r)
    return out, titles


def write_charts(
    results: list[RunResult], titles: dict[str, str], profiles: list[str]
) -> list[Path]:
    """Plotly charts per profile: throughput and p50/p95/p99 latency against users
    (medians over the rounds)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(dict.fromkeys(r.contender for r in results))
    throughput = make_subplots(rows=1, cols=len(profiles), subplot_titles=profiles)
    latency = make_subplots(
        rows=len(profiles),
        cols=3,
        subplot_titles=[f"{p}: {q}" for p in profiles for q in ("p50", "p95", "p99")],
    )
    for row, profile in enumerate(profiles, start=1):
        for name in names:
            levels = sorted(
                {
                    r.users
                    for r in results
                    if (r.profile, r.contender, r.phase) == (profile, name, "load")
                }
            )
            points = [(u, runs_of(results, profile, name, u)) for u in levels]
            points = [(u, runs) for u, runs in points if good(runs)]
            x = [u for u, _ in points]

            def median(
                attr: str, points: list[tuple[int, list[RunResult]]] = points
            ) -> list[float]:
                return [
                    statistics.median(getattr(r, attr) for r in good(runs)) for _, runs in points
                ]

            throughput.add_trace(
                go.Scatter(
                    x=x,
                    y=median("rps"),
                    mode="lines+markers",
                    name=titles[name],
                    legendgroup=name,
                    showlegend=row == 1,
                ),
                row=1,
                col=row,
            )
            for col, attr in enumerate(("p50", "p95", "p99"), start=1):
                latency.add_trace(
                    go.Scatter(
                        x=x,
                        y=median(attr),
                        mode="lines+markers",
                        name=titles[name],
                        legendgroup=name,
                        showlegend=row == 1 and col == 1,
                    ),
                    row=row,
                    col=col,
                )
    throughput.update_layout(
        title="Throughput (requests/s) against concurrent users, per profile (zero think time)"
    )
    throughput.update_xaxes(title_text="concurrent users")
    latency.update_layout(
        title="Latency (ms) against concurrent users, per profile", height=320 * len(profiles)
    )
    latency.update_xaxes(title_text="concurrent users")
    paths = [RESULTS / "throughput.html", RESULTS / "latency.html"]
    # One shared plotly.min.js next to the charts: they open offline.
    throughput.write_html(paths[0], include_plotlyjs="directory")
    latency.write_html(paths[1], include_plotlyjs="directory")
    return paths


def write_report(
    results: list[RunResult],
    cont: list[Contender],
    profiles: list[BuiltProfile],
    meta: dict[str, Any],
    flood: dict[str, Any] | None = None,
) -> Path:
    """``report.md``: per profile the numbers, the ratios of (1) to each contender and the
    targets; then the login flood."""
    lines = [
        "# tabserve benchmark",
        "",
        f"Run {meta['started']} → {meta['finished']} on {meta['machine']}, "
        f"{meta['rounds']} round(s).",
        f"Pinning: {meta['pinning']}. Load before the run (1-min load average): {meta['load']}.",
        f"Workers per contender: {meta['workers']}. Load: {meta['mix']}, batches of "
        f"{meta['batch']} rows, zero think time, {meta['seconds']} s measured per level after "
        f"{meta['warmup']} s of warm-up (logins excluded); then 1 user for "
        f"{min(meta['seconds'], AFTER_BURST_SECONDS)} s right after the last level, with no "
        f"warm-up. Server settings: {meta['server_env']}. Default model: {meta['model']}.",
        "",
        "Contenders: "
        + "; ".join(f"({i}) `{c.name}`: {c.title}" for i, c in enumerate(cont, 1))
        + ".",
        "`mlflow` has no authentication (and no explanations); `constant` does no work.",
        "",
    ]
    counts = sorted({r.workers for r in results})
    for workers in counts:
        heading = f", {workers_text(workers)} per contender" if len(counts) > 1 else ""
        for profile in profiles:
            lines += profile_lines(with_workers(results, workers), profile, cont, heading)
    lines += workers_lines(results, profiles)
    if flood is not None:
        lines += flood_lines(flood)
        lines += ["| target | met | measured |", "|---|---|---|"]
        for text, met, measured in flood_targets(flood):
            mark = "yes" if met else ("n/a" if met is None else "**no**")
            lines.append(f"| {text} | {mark} | {measured} |")
        lines.append("")
    lines += [
        "Charts: [throughput](throughput.html), [latency](latency.html). Per run: Locust's "
        "HTML report and CSV stats in `runs/` (`<profile>_<contender>_u<users>_r<round>.html`, "
        "`_stats.csv`; `<contender>_w2` with two workers), server logs "
        "`runs/<profile>_<contender>_r<round>.server.log`. Raw numbers: `results.json`.",
        "",
    ]
    path = RESULTS / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report."""
    parser = argparse.ArgumentParser(description="Benchmark tabserve against its baselines.")
    parser.add_argument("--quick", action="store_true", help="one round, 32 users, 8 s per level")
    parser.add_argument("--users", default=None, help="comma-separated levels (default 32,64)")
    parser.add_argument("--seconds", type=int, default=None, help="measured seconds per level")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per level")
    parser.add_argument(
        "--repeat", type=int, default=None, help="rounds of every contender (default 3)"
    )
    parser.add_argument(
        "--profiles",
        default=",".join(PROFILE_NAMES),
        help=f"comma-separated model profiles ({', '.join(PROFILE_NAMES)})",
    )
    parser.add_argument(
        "--only", default=None, help="comma-separated contender names (and/or flood)"
    )
    parser.add_argument(
        "--workers",
        default="1",
        help="worker processes per contender (2: not pinned); several, e.g. 1,2: each, side "
        "by side in every round, and the ratios compared",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        default=None,
        help="also run the batched service as of git revision REV (a worktree), "
        "side by side: what a change costs or saves",
    )
    parser.add_argument(
        "--no-after-burst",
        action="store_true",
        help="skip the one-user run after the last level",
    )
    parser.add_argument(
        "--model-tag", default=os.environ.get("TABSERVE_MODEL_TAG", "tabserve:latest")
    )
    parser.add_argument("--mlflow-model", default="models:/tabserve@champion")
    parser.add_argument("--batch", default="10-100", help="rows per batch request")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the servers, e.g. TABSERVE_BATCH_MAX_SIZE=64 (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="sample each server with py-spy during its runs (runs/*.collapsed, *.top.txt)",
    )
    args = parser.parse_args(argv)
    try:
        worker_counts = sorted({int(w) for w in args.workers.split(",") if w})
    except ValueError:
        parser.error(f"--workers: comma-separated numbers, not {args.workers!r}")
    if not worker_counts or worker_counts[0] < 1:
        parser.error(f"--workers: at least one worker, not {args.workers!r}")
    users_levels = [int(u) for u in (args.users or ("32" if args.quick else "32,64")).split(",")]
    seconds = args.seconds or (8 if args.quick else 15)
    rounds = args.repeat or (1 if args.quick else 3)
    wanted_profiles = [p for p in args.profiles.split(",") if p]
    unknown = sorted(set(wanted_profiles) - set(PROFILE_NAMES))
    if unknown:
        parser.error(f"unknown profile(s) {unknown}; known: {list(PROFILE_NAMES)}")

    global RESULTS
    if args.out is not None:
        RESULTS = args.out.resolve()
    bentoml_home = Path(os.environ.get("BENTOML_HOME", REPO / ".bentoml")).resolve()
    tracking = os.environ.setdefault(
        "MLFLOW_TRACKING_URI", f"sqlite:///{REPO / 'mlruns' / 'mlflow.db'}"
    )
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    (RESULTS / "runs").mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / "work"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    profiles: list[BuiltProfile] = []
    for name in wanted_profiles:
        if name == "default":
            try:
                bundle = bundle_dir(bentoml_home, args.model_tag)
            except FileNotFoundError as exc:
                parser.error(
                    f"the default profile: {exc} (`make bench` trains one first), "
                    "or leave it out: --profiles categorical,heavy"
                )
            rows_file = write_rows(
                load_rows(bundle, REPO / "data/prepared/test.parquet"),
                workdir / "rows.json",
            )
            profiles.append(
                pipeline_profile(
                    bentoml_home, args.model_tag, rows_file, args.mlflow_model, tracking
                )
            )
        elif name in BUILT_PROFILES:
            profiles.append(build_profile(name, PROFILE_CACHE))
    auth = prepare_auth(workdir)
    base = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    common_env = {
        **base,
        # `mlflow models serve` runs `uvicorn` from PATH.
        "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
        "BENTOML_DO_NOT_TRACK": "True",
        "TABSERVE_ENV": "development",
        "TABSERVE_JWT_SECRET": auth["TABSERVE_JWT_SECRET"],
        "TABSERVE_USERS_FILE": auth["TABSERVE_USERS_FILE"],
        "TABSERVE_LOCAL_DIR": auth["TABSERVE_LOCAL_DIR"],
        "TABSERVE_LOG_LEVEL": "WARNING",
        **CHEAP_ARGON2,
        **dict(item.split("=", 1) for item in args.server_env),
    }

    def server_env(profile: BuiltProfile) -> dict[str, str]:
        return {
            **common_env,
            "BENTOML_HOME": profile.bentoml_home,
            "TABSERVE_MODEL_TAG": profile.model_tag,
            "MLFLOW_TRACKING_URI": profile.mlflow_tracking_uri,
        }

    def locust_env(profile: BuiltProfile) -> dict[str, str]:
        return {
            **base,
            "TABSERVE_LOAD_ROWS": profile.rows_file,
            "TABSERVE_LOAD_USER": BENCH_USER,
            "TABSERVE_LOAD_PASSWORD": auth["TABSERVE_LOAD_PASSWORD"],
            "TABSERVE_LOAD_MIX": BENCH_MIX,
            "TABSERVE_LOAD_BATCH": args.batch,
        }

    pin_texts = {}
    loads = {}
    for workers in worker_counts:
        server_pin, locust_pin, pin_texts[workers] = pinning(workers)
        loads[workers] = Load(
            users_levels,
            seconds,
            args.warmup,
            (server_pin, locust_pin),
            after_burst=not args.no_after_burst,
            py_spy=args.py_spy,
            workers=workers,
        )
    try:
        against = (args.against, checkout(args.against, workdir)) if args.against else None
    except ValueError as exc:
        parser.error(str(exc))
    extra = (against_name(args.against),) if args.against else ()
    ports = {name: free_port() for name in (*CONTENDERS, *EXTRA_CONTENDERS, *extra)}
    wanted = set(args.only.split(",")) if args.only else {*CONTENDERS, "flood"}
    wanted |= set(extra)
    run_flood = "flood" in wanted and "default" in wanted_profiles
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_average = f"{os.getloadavg()[0]:.2f}"
    identity = model_identity(args.model_tag, bentoml_home)
    if identity.get("drift_reference") == NONE and "drift-off" in wanted:
        print(
            f"!! {identity['bentoml_tag']} has no drift reference ({REFERENCE_FILE}: trained "
            "before drift gauges?), so batched serves no drift gauges either and drift-off "
            "measures nothing; `make train` retrains it",
            file=sys.stderr,
            flush=True,
        )
    results: list[RunResult] = []
    for round_ in range(1, rounds + 1):
        for profile in profiles:
            for workers in round_order(worker_counts, round_):
                racing = [
                    c
                    for c in contenders(ports, profile.mlflow_model, workers, against)
                    if c.name in wanted
                    and (c.name not in DEFAULT_PROFILE_ONLY or profile.name == "default")
                ]
                for contender in round_order(racing, round_):
                    results += bench_contender(
                        contender,
                        profile,
                        round_,
                        loads[workers],
                        server_env(profile),
                        locust_env(profile),
                        ports[contender.name],
                    )
    # Every contender run, in report order (drift-off ran on one profile only).
    cont = [c for c in contenders(ports, "", worker_counts[0], against) if c.name in wanted]
    flood = None
    if run_flood:
        default = next(p for p in profiles if p.name == "default")
        batched = contenders(ports, default.mlflow_model, worker_counts[0])[0]
        flood = bench_login_flood(
            batched,
            server_env(default),
            locust_env(default),
            loads[worker_counts[0]].pins,
            ports["batched"],
            py_spy=args.py_spy,
        )
    meta = {
        "started": started,
        "finished": dt.datetime.now(dt.UTC).strftime("%H:%M UTC"),
        "machine": machine_text(),
        "pinning": "; ".join(f"{workers_text(w)}: {pin_texts[w]}" for w in worker_counts)
        if len(worker_counts) > 1
        else pin_texts[worker_counts[0]],
        "load": load_average,
        "model": ", ".join(f"{k} {v}" for k, v in identity.items()),
        "mix": BENCH_MIX,
        "batch": args.batch,
        "seconds": seconds,
        "warmup": args.warmup,
        "rounds": rounds,
        "workers": ", ".join(map(str, worker_counts)),
        "server_env": " ".join(args.server_env) or "defaults",
    }
    (RESULTS / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "profiles": [asdict(p) for p in profiles],
                "results": [asdict(r) for r in results],
                "login_flood": flood,
            },
            indent=2,
        )
    )
    if good(results):
        write_charts(*labelled(results, cont), [p.name for p in profiles])
    report = write_report(results, cont, profiles, meta, flood)
    print(f"\n{report.read_text()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
