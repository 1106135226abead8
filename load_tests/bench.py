"""``make bench``: the same Locust load against every contender, side by side, in one run.

Contenders (each started here, one process serving, then stopped):

1. ``batched``   - this service (``bentoml serve service:Tabserve``), adaptive batching;
2. ``unbatched`` - the same service, batching off (``baselines/unbatched_service.py``);
3. ``fastapi``   - a plain FastAPI + uvicorn app with the same booster, JWT check and
   validation (``load_tests/baselines/fastapi_app.py``);
4. ``mlflow``    - ``mlflow models serve`` of the registered model (``models:/tabserve@champion``;
   no auth: it has none);
5. ``constant``  - a trivial ASGI app answering a constant: the ceiling of this load
   generator on this machine.

Then a **login flood** scenario (``flood``; ``load_tests/flood.py``): the batched service,
with the production argon2 parameters, takes 400 wrong logins with random user names,
80 at a time, while four clients send authenticated single-row predictions; the p99 of
those predictions is reported beside the p99 of the same prediction load alone. The
flood comes once from one client, then from 400 (``X-Forwarded-For`` through a trusted
proxy), so that every login reaches argon2.

Every contender runs one worker process; the server is pinned to CPU 0 and Locust to
CPU 1 (``taskset``) when the machine has two cores or more. For each number of
concurrent users, Locust runs headless with zero think time (a closed loop at full
speed); statistics are reset once every user has logged in and warmed up, so logins
(argon2) are not measured. Results: ``load_tests/results/report.md``, Plotly charts
``throughput.html`` and ``latency.html``, and per run Locust's CSV and HTML report.

This script is plain Python: Locust (gevent) only ever runs as a subprocess. ::

    python -m load_tests.bench            # 16, 32, 64 users, 20 s each (about 8 min)
    python -m load_tests.bench --quick    # 32 and 64 users, 8 s each
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from load_tests.payloads import bundle_dir, load_rows, write_rows
from load_tests.processes import free_port, running
from load_tests.scrape import Batches, batches

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = REPO / "load_tests" / "results"
LOCUSTFILE = REPO / "load_tests" / "locustfile.py"
BENCH_USER = "bench"
# Predictions only: two contenders (mlflow, constant) have no explanations, and the
# same load must run against every contender.
BENCH_MIX = "predict_one=4,predict_batch=1"
TARGET_USERS = (32, 64)
FLOOD_P99_TARGET_MS = 250
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


@dataclass
class RunResult:
    """One Locust run: a contender at a number of concurrent users."""

    contender: str
    users: int
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


def scraped(url: str) -> Batches | None:
    """The service's batch totals so far, or None when ``/metrics`` does not answer."""
    try:
        return batches(url)
    except httpx.HTTPError:
        return None


def pinning() -> tuple[list[str], list[str], str]:
    """``taskset`` prefixes for the server and for Locust, and a sentence saying which."""
    taskset = shutil.which("taskset")
    cores = os.cpu_count() or 1
    if taskset is None:
        return [], [], "not pinned: `taskset` is not installed"
    if cores < 2:
        return [], [], "not pinned: one CPU only"
    return (
        [taskset, "-c", "0"],
        [taskset, "-c", "1"],
        f"server on CPU 0, Locust on CPU 1 (`taskset`; {cores} CPUs)",
    )


def contenders(port_of: dict[str, int], model_tag: str, mlflow_model: str) -> list[Contender]:
    """The five contenders, in report order."""
    bentoml, uvicorn, mlflow = str(BIN / "bentoml"), str(BIN / "uvicorn"), str(BIN / "mlflow")

    def serve(module: str, name: str) -> list[str]:
        return [bentoml, "serve", module, "--host", "127.0.0.1", "--port", str(port_of[name])]

    def uvi(app: str, name: str) -> list[str]:
        return [uvicorn, app, "--host", "127.0.0.1", "--port", str(port_of[name])]

    return [
        Contender(
            "batched",
            "tabserve, adaptive batching",
            serve("service:Tabserve", "batched"),
            has_metrics=True,
        ),
        Contender(
            "unbatched",
            "tabserve, batching off",
            serve("load_tests.baselines.unbatched_service:Tabserve", "unbatched"),
            has_metrics=True,
        ),
        Contender(
            "fastapi",
            "plain FastAPI + uvicorn",
            [*uvi("load_tests.baselines.fastapi_app:app", "fastapi"), "--workers", "1"],
        ),
        Contender(
            "mlflow",
            "mlflow models serve (no auth)",
            [
                mlflow,
                "models",
                "serve",
                "-m",
                mlflow_model,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "-p",
                str(port_of["mlflow"]),
                "-w",
                "1",
            ],
            target="mlflow",
            ready_path="/ping",
        ),
        Contender(
            "constant",
            "constant ASGI app (load-generator ceiling)",
            [*uvi("load_tests.baselines.constant_app:app", "constant"), "--workers", "1"],
        ),
    ]


def prepare_auth(workdir: Path) -> dict[str, str]:
    """A JWT secret and a users file with the benchmark user, as server environment.

    The user's argon2 hash uses a cheap profile: logins are not what is measured,
    and 64 users logging in with the default profile would cost the server ~10 s of
    CPU (argon2 verification reads its cost from the stored hash).
    """
    from tabserve.users import UserStore, password_hasher

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
def profiled(pid: int, out: Path, enabled: bool, start_marker: Path) -> Iterator[None]:
    """Sample ``pid`` and its children with py-spy during the measured window.

    Sampling starts when Locust writes ``start_marker`` (statistics reset: every user
    logged in and warmed up), so logins are not in the profile either. Writes py-spy's
    collapsed stacks to ``out`` (for flame-graph tools) and a per-function summary to
    ``out`` with suffix ``.top.txt``.
    """
    if not enabled:
        yield
        return
    spies: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()

    def start_when_measured() -> None:
        while not stop.is_set() and not start_marker.exists():
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


def bench_contender(
    contender: Contender,
    users_levels: list[int],
    seconds: int,
    warmup: int,
    server_env: dict[str, str],
    locust_env: dict[str, str],
    pins: tuple[list[str], list[str]],
    port: int,
    profile: bool = False,
) -> list[RunResult]:
    """Start one contender, run every user level against it, stop it."""
    url = f"http://127.0.0.1:{port}"
    runs = RESULTS / "runs"
    results: list[RunResult] = []
    print(f">> {contender.name}: {contender.title}", flush=True)
    try:
        with running(
            [*pins[0], *contender.command],
            ready_url=url + contender.ready_path,
            log=runs / f"{contender.name}.server.log",
            env={**server_env, **contender.env},
            cwd=REPO,
            name=contender.name,
            timeout_s=180,
            stop_timeout_s=20,
        ) as process:
            for users in users_levels:
                result = RunResult(contender.name, users)
                before = scraped(url) if contender.has_metrics else None
                out = runs / f"{contender.name}_u{users}"
                marker = out.with_suffix(".reset")
                marker.unlink(missing_ok=True)
                profile_out = out.with_suffix(".collapsed")
                with (
                    CpuSampler(process.pid) as cpu,
                    profiled(process.pid, profile_out, profile, marker),
                ):
                    done = run_locust(
                        contender,
                        url,
                        users,
                        seconds,
                        warmup,
                        out,
                        {**locust_env, "TABSERVE_LOAD_RESET_FILE": str(marker)},
                        pins[1],
                    )
                stats = Path(f"{out}_stats.csv")
                if not stats.exists():
                    result.error = f"locust exited {done.returncode}: {done.stderr[-500:]}"
                else:
                    read_stats(stats, result)
                    if marker.exists() and result.requests:
                        used = cpu.used_since(float(marker.read_text()))
                        result.cpu_ms_per_request = 1000 * used / result.requests
                after = scraped(url) if before is not None else None
                if before is not None and after is not None:
                    formed = after - before
                    if formed.calls > 0:
                        result.mean_batch_rows = formed.rows / formed.calls
                print(
                    f"   {users:>3} users: {result.rps:7.1f} req/s  p50 {result.p50:5.0f} ms  "
                    f"p95 {result.p95:5.0f} ms  p99 {result.p99:5.0f} ms  "
                    f"failures {result.failures}{'  ' + result.error if result.error else ''}",
                    flush=True,
                )
                results.append(result)
    except RuntimeError as exc:
        print(f"   {contender.name} failed: {exc}", flush=True)
        results.extend(RunResult(contender.name, u, error=str(exc)[:300]) for u in users_levels)
    return results


def bench_login_flood(
    contender: Contender,
    server_env: dict[str, str],
    locust_env: dict[str, str],
    pins: tuple[list[str], list[str]],
    port: int,
) -> dict[str, Any]:
    """The login flood scenario against ``contender`` (the batched service)."""
    url = f"http://127.0.0.1:{port}"
    runs = RESULTS / "runs"
    env = {k: v for k, v in server_env.items() if k not in CHEAP_ARGON2}
    env["TABSERVE_TRUSTED_PROXIES"] = "127.0.0.1/32"  # the flood tool plays the proxy
    out = runs / "flood.json"
    print(">> flood: 400 wrong logins at 80 concurrency, predictions alongside", flush=True)
    try:
        with running(contender, env, pins[0], runs / "flood.server.log", url):
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


def model_identity(model_tag: str, bentoml_home: Path) -> dict[str, str]:
    """The BentoML model served and the registry version behind ``@champion``."""
    identity = {"bentoml_tag": model_tag}
    with contextlib.suppress(Exception):
        directory = bundle_dir(bentoml_home, model_tag)
        lineage = json.loads((directory / "lineage.json").read_text())
        identity["bentoml_tag"] = f"{model_tag.split(':')[0]}:{directory.name}"
        identity["bentoml_registry_version"] = str(lineage.get("registry_version"))
    with contextlib.suppress(Exception):
        from mlflow import MlflowClient

        version = MlflowClient().get_model_version_by_alias("tabserve", "champion")
        identity["mlflow_champion_version"] = str(version.version)
    return identity


# ---- report --------------------------------------------------------------------
def ratio(a: float, b: float) -> str:
    """``a / b`` as ``1.23×``, or n/a."""
    return f"{a / b:.2f}×" if b > 0 and a > 0 else "n/a"


def targets(results: list[RunResult]) -> list[tuple[str, bool | None, str]]:
    """The issue's targets at 32 and 64 users: (description, met?, measured)."""
    by = {(r.contender, r.users): r for r in results}
    checks: list[tuple[str, bool | None, str]] = []
    for users in TARGET_USERS:
        batched, unbatched, plain = (
            by.get((c, users)) for c in ("batched", "unbatched", "fastapi")
        )
        if batched is None:
            continue
        failed = {c: r.failures for (c, u), r in by.items() if u == users and c != "constant"}
        checks.append(
            (
                f"{users} users: zero failed requests (tabserve and baselines)",
                all(v == 0 for v in failed.values()) and not batched.error,
                ", ".join(f"{c} {v}" for c, v in failed.items()),
            )
        )
        if unbatched is not None:
            checks.append(
                (
                    f"{users} users: batched ≥ 1.5× unbatched throughput",
                    batched.rps >= 1.5 * unbatched.rps if unbatched.rps else None,
                    ratio(batched.rps, unbatched.rps),
                )
            )
        if plain is not None:
            checks.append(
                (
                    f"{users} users: batched ≥ plain FastAPI throughput (1 process each)",
                    batched.rps >= plain.rps if plain.rps else None,
                    ratio(batched.rps, plain.rps),
                )
            )
        if users == 32:
            checks.append(
                ("32 users: batched p99 < 100 ms", batched.p99 < 100, f"{batched.p99:.0f} ms")
            )
    return checks


def write_charts(results: list[RunResult], titles: dict[str, str]) -> list[Path]:
    """Plotly charts: throughput and p50/p95/p99 latency against concurrent users."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(dict.fromkeys(r.contender for r in results))
    throughput = go.Figure()
    latency = make_subplots(rows=1, cols=3, subplot_titles=("p50", "p95", "p99"), shared_yaxes=True)
    for name in names:
        mine = sorted(
            (r for r in results if r.contender == name and not r.error), key=lambda r: r.users
        )
        x = [r.users for r in mine]
        throughput.add_trace(
            go.Scatter(x=x, y=[r.rps for r in mine], mode="lines+markers", name=titles[name])
        )
        for col, attr in enumerate(("p50", "p95", "p99"), start=1):
            latency.add_trace(
                go.Scatter(
                    x=x,
                    y=[getattr(r, attr) for r in mine],
                    mode="lines+markers",
                    name=titles[name],
                    legendgroup=name,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
    throughput.update_layout(
        title="Throughput against concurrent users (zero think time)",
        xaxis_title="concurrent users",
        yaxis_title="requests / s",
    )
    latency.update_layout(title="Latency against concurrent users (ms)", yaxis_title="ms")
    latency.update_xaxes(title_text="concurrent users")
    paths = [RESULTS / "throughput.html", RESULTS / "latency.html"]
    # One shared plotly.min.js next to the charts: they open offline.
    throughput.write_html(paths[0], include_plotlyjs="directory")
    latency.write_html(paths[1], include_plotlyjs="directory")
    return paths


def write_report(
    results: list[RunResult],
    cont: list[Contender],
    meta: dict[str, Any],
    flood: dict[str, Any] | None = None,
) -> Path:
    """``report.md``: the numbers, the ratios of (1) to each contender and the targets."""
    by = {(r.contender, r.users): r for r in results}
    levels = sorted({r.users for r in results})
    lines = [
        "# tabserve benchmark",
        "",
        f"Run {meta['started']} → {meta['finished']} on {meta['machine']}.",
        f"Pinning: {meta['pinning']}. Load before the run (1-min load average): {meta['load']}.",
        f"Model: {meta['model']}. Load: {meta['mix']}, batches of {meta['batch']} rows, "
        f"zero think time, {meta['seconds']} s measured per level after {meta['warmup']} s "
        "of warm-up (logins excluded). One worker process per contender. "
        f"Server settings: {meta['server_env']}.",
        "",
        "Contenders: "
        + "; ".join(f"({i}) `{c.name}`: {c.title}" for i, c in enumerate(cont, 1))
        + ".",
        "`mlflow` has no authentication (and no explanations); `constant` does no work.",
        "",
    ]
    for users in levels:
        lines += [
            f"## {users} concurrent users",
            "",
            "| contender | req/s | p50 ms | p95 ms | p99 ms | failures "
            "| server CPU ms/req | rows per model call | batched ÷ this |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        batched = by.get(("batched", users))
        for c in cont:
            r = by.get((c.name, users))
            if r is None:
                continue
            if r.error:
                lines.append(f"| {c.name} | error: {r.error[:80]} | | | | | | | |")
                continue
            cpu = f"{r.cpu_ms_per_request:.2f}" if r.cpu_ms_per_request is not None else ""
            rows = f"{r.mean_batch_rows:.1f}" if r.mean_batch_rows is not None else ""
            rel = ratio(batched.rps, r.rps) if batched and c.name != "batched" else ""
            lines.append(
                f"| {c.name} | {r.rps:.0f} | {r.p50:.0f} | {r.p95:.0f} | {r.p99:.0f} | "
                f"{r.failures} | {cpu} | {rows} | {rel} |"
            )
        lines.append("")
    if flood is not None:
        lines += flood_lines(flood)
    lines += ["## Targets", "", "| target | met | measured |", "|---|---|---|"]
    for text, met, measured in [*targets(results), *flood_targets(flood)]:
        mark = "yes" if met else ("n/a" if met is None else "**no**")
        lines.append(f"| {text} | {mark} | {measured} |")
    lines += [
        "",
        "Charts: [throughput](throughput.html), [latency](latency.html). Per run: Locust's "
        "HTML report and CSV stats in `runs/` (`<contender>_u<users>.html`, `_stats.csv`), "
        "server logs `runs/<contender>.server.log`. Raw numbers: `results.json`.",
        "",
    ]
    path = RESULTS / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the report."""
    parser = argparse.ArgumentParser(description="Benchmark tabserve against its baselines.")
    parser.add_argument("--quick", action="store_true", help="32 and 64 users, 8 s each")
    parser.add_argument("--users", default=None, help="comma-separated levels (16,32,64)")
    parser.add_argument("--seconds", type=int, default=None, help="measured seconds per level")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per level")
    parser.add_argument(
        "--only", default=None, help="comma-separated contender names (and/or flood)"
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
        "--profile",
        action="store_true",
        help="sample each server with py-spy during its runs (runs/*.collapsed, *.top.txt)",
    )
    args = parser.parse_args(argv)
    users_levels = [
        int(u) for u in (args.users or ("32,64" if args.quick else "16,32,64")).split(",")
    ]
    seconds = args.seconds or (8 if args.quick else 20)

    global RESULTS
    if args.out is not None:
        RESULTS = args.out.resolve()
    bentoml_home = Path(os.environ.get("BENTOML_HOME", REPO / ".bentoml")).resolve()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{REPO / 'mlruns' / 'mlflow.db'}")
    (RESULTS / "runs").mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / "work"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    rows_file = write_rows(
        load_rows(bundle_dir(bentoml_home, args.model_tag), REPO / "data/prepared/test.parquet"),
        workdir / "rows.json",
    )
    auth = prepare_auth(workdir)
    base = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    server_env = {
        **base,
        # `mlflow models serve` runs `uvicorn` from PATH.
        "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
        "BENTOML_HOME": str(bentoml_home),
        "BENTOML_DO_NOT_TRACK": "True",
        "TABSERVE_ENV": "development",
        "TABSERVE_MODEL_TAG": args.model_tag,
        "TABSERVE_JWT_SECRET": auth["TABSERVE_JWT_SECRET"],
        "TABSERVE_USERS_FILE": auth["TABSERVE_USERS_FILE"],
        "TABSERVE_LOCAL_DIR": auth["TABSERVE_LOCAL_DIR"],
        "TABSERVE_LOG_LEVEL": "WARNING",
        **CHEAP_ARGON2,
        **dict(item.split("=", 1) for item in args.server_env),
    }
    locust_env = {
        **base,
        "TABSERVE_LOAD_ROWS": str(rows_file),
        "TABSERVE_LOAD_USER": BENCH_USER,
        "TABSERVE_LOAD_PASSWORD": auth["TABSERVE_LOAD_PASSWORD"],
        "TABSERVE_LOAD_MIX": BENCH_MIX,
        "TABSERVE_LOAD_BATCH": args.batch,
    }
    server_pin, locust_pin, pin_text = pinning()
    names = ["batched", "unbatched", "fastapi", "mlflow", "constant"]
    ports = {name: free_port() for name in names}
    cont = contenders(ports, args.model_tag, args.mlflow_model)
    batched = cont[0]
    run_flood = True
    if args.only:
        wanted = set(args.only.split(","))
        cont = [c for c in cont if c.name in wanted]
        run_flood = "flood" in wanted
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = f"{os.getloadavg()[0]:.2f}"
    identity = model_identity(args.model_tag, bentoml_home)
    results: list[RunResult] = []
    for contender in cont:
        results += bench_contender(
            contender,
            users_levels,
            seconds,
            args.warmup,
            server_env,
            locust_env,
            (server_pin, locust_pin),
            ports[contender.name],
            profile=args.profile,
        )
    flood = (
        bench_login_flood(
            batched, server_env, locust_env, (server_pin, locust_pin), ports["batched"]
        )
        if run_flood
        else None
    )
    meta = {
        "started": started,
        "finished": dt.datetime.now(dt.UTC).strftime("%H:%M UTC"),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "pinning": pin_text,
        "load": load,
        "model": ", ".join(f"{k} {v}" for k, v in identity.items()),
        "mix": BENCH_MIX,
        "batch": args.batch,
        "seconds": seconds,
        "warmup": args.warmup,
        "server_env": " ".join(args.server_env) or "defaults",
    }
    (RESULTS / "results.json").write_text(
        json.dumps(
            {"meta": meta, "results": [asdict(r) for r in results], "login_flood": flood},
            indent=2,
        )
    )
    write_charts(results, {c.name: c.title for c in cont})
    report = write_report(results, cont, meta, flood)
    print(f"\n{report.read_text()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
