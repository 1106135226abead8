"""One contender at every level of concurrent users (and after the burst, and single rows)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from load_tests.bench.common import (
    AFTER_BURST,
    AFTER_BURST_CONTENDERS,
    AFTER_BURST_SECONDS,
    OUTPUT,
    REPO,
    SINGLE_ROW_MIX,
    SINGLE_ROW_PROFILES,
    SINGLE_ROWS,
    Contender,
    RunResult,
)
from load_tests.bench.contenders import scraped, workers_suffix, workers_text
from load_tests.bench.profiling import profiled
from load_tests.bench.runner import CpuSampler, read_stats, run_locust
from load_tests.processes import running
from load_tests.profiles import BuiltProfile


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
        OUTPUT.results
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
    runs = OUTPUT.results / "runs"
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
            # A contender's setting may name the profile's: "{TABSERVE_MODEL_TAG}".
            env={**server_env, **{k: v.format(**server_env) for k, v in contender.env.items()}},
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
