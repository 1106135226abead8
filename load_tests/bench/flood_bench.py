"""The login-flood scenario of the benchmark (``load_tests/flood.py`` in its own process)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from load_tests.bench.common import (
    BENCH_USER,
    BIN,
    CHEAP_ARGON2,
    FLOOD_P99_TARGET_MS,
    OUTPUT,
    REPO,
    Contender,
)
from load_tests.bench.profiling import profiled
from load_tests.processes import running


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
    runs = OUTPUT.results / "runs"
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
# one, walk every tree's nodes once per call: see docs/benchmark.md).
