"""A login flood against a running service, with authenticated predictions alongside.

``make bench`` runs this (as a subprocess pinned next to the server's CPU) for its
"login flood" scenario: ``--requests`` wrong logins with random user names,
``--concurrency`` at a time, while ``--predictors`` clients each send single-row
``POST /predict`` requests in a closed loop. The same prediction load first runs alone
for a while, so the report can set the p99 under the flood beside the p99 without it.

Two floods follow each other: from one client (the throttle stops it after a while),
then, with ``--spread``, from as many client addresses as requests, through
``X-Forwarded-For`` (the server must trust this client as its proxy): every login then
reaches the password check, and only the concurrency bound stands between the flood
and the predictions.

Each flood runs in a process of its own (``--flood-only``), beside the one that sends
and times the predictions: a flood answered quickly (429s from the throttle) keeps its
client's event loop busy, and predictions timed in that same loop would wait for it
and charge the wait to the server. Each of the ``--concurrency`` flooding tasks has its
own connection: in one shared httpx pool, every request scans every connection, and the
flooder spent most of its time there.

Plain asyncio and httpx (no Locust: the question is what one flood does to the other
requests, not a user model)::

    python -m load_tests.flood --url http://127.0.0.1:3000 --rows rows.json \\
        --user bench --password "$PW" --out flood.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import ssl
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

FLOODING = "flooding"  # the flood process's first line: its first request is on its way


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` (nearest rank), 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def _predictions(
    client: httpx.AsyncClient, rows: list[dict[str, Any]], stop: asyncio.Event, out: list[Any]
) -> None:
    i = 0
    while not stop.is_set():
        started = time.perf_counter()
        response = await client.post("/predict", json={"rows": [rows[i % len(rows)]]})
        out.append((started, (time.perf_counter() - started) * 1000, response.status_code))
        i += 1


async def flood(url: str, requests: int, concurrency: int, spread: bool) -> dict[str, Any]:
    """``requests`` wrong logins, ``concurrency`` at a time, each task on its own
    connection; from one client, or (``spread``) from one address per request."""
    outcomes: Counter[str] = Counter()
    numbers = iter(range(requests))
    # One TLS context for every client: httpx would load the CA bundle for each one
    # (35 ms), and the flood would start seconds late.
    tls = ssl.create_default_context()

    async def worker() -> None:
        async with httpx.AsyncClient(
            base_url=url, timeout=120, limits=httpx.Limits(max_connections=1), verify=tls
        ) as client:
            for i in numbers:
                headers = {"X-Forwarded-For": f"10.{i // 250}.{i % 250}.1"} if spread else {}
                response = await client.post(
                    "/auth/token",
                    data={"username": secrets.token_hex(6), "password": "guess-123"},
                    headers=headers,
                )
                code = response.json().get("error", {}).get("code", "?")
                outcomes[f"{response.status_code} {code}"] += 1

    print(FLOODING, flush=True)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"outcomes": dict(outcomes), "seconds": time.perf_counter() - started}


async def _flood_in_process(args: argparse.Namespace, spread: bool) -> tuple[float, Any]:
    """Run one flood in a child process: when it began (``time.perf_counter`` here), and
    its outcomes."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "load_tests.flood", "--flood-only", "spread" if spread else "one"),
        *("--url", args.url, "--requests", str(args.requests)),
        *("--concurrency", str(args.concurrency)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    first = await process.stdout.readline()
    began = time.perf_counter()
    out, err = await process.communicate()
    if process.returncode != 0 or first.decode().strip() != FLOODING:
        raise RuntimeError(f"the flood process failed: {(first + err).decode()[-500:]}")
    return began, json.loads(out)


def _summary(samples: list[Any]) -> dict[str, Any]:
    latencies = [ms for _, ms, _ in samples]
    return {
        "requests": len(samples),
        "failures": sum(1 for _, _, status in samples if status != 200),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": statistics.fmean(latencies) if latencies else 0.0,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The baseline (predictions alone), then each flood with predictions alongside."""
    rows = json.loads(Path(args.rows).read_text())
    async with httpx.AsyncClient(base_url=args.url, timeout=60) as login:
        answer = await login.post(
            "/auth/token", data={"username": args.user, "password": args.password}
        )
        answer.raise_for_status()
        token = answer.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    floods = []
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=60) as client:

        async def predicting(during: Any) -> tuple[list[Any], Any]:
            stop = asyncio.Event()
            samples: list[Any] = []
            tasks = [
                asyncio.create_task(_predictions(client, rows, stop, samples))
                for _ in range(args.predictors)
            ]
            result = await during
            stop.set()
            await asyncio.gather(*tasks)
            return samples, result

        alone, _ = await predicting(asyncio.sleep(args.baseline_s))
        for spread in (False, True) if args.spread else (False,):
            samples, (began, result) = await predicting(_flood_in_process(args, spread))
            floods.append(
                {
                    "clients": args.requests if spread else 1,
                    "requests": args.requests,
                    "concurrency": args.concurrency,
                    "seconds": result["seconds"],
                    "outcomes": result["outcomes"],
                    # the predictions sent while the flood ran
                    "predict": _summary([s for s in samples if s[0] >= began]),
                }
            )
    return {"predict_alone": _summary(alone), "floods": floods}


def main(argv: list[str] | None = None) -> int:
    """Run the scenario and write its numbers as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rows", help="rows file (python -m load_tests.payloads)")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=80)
    parser.add_argument("--predictors", type=int, default=4, help="concurrent /predict clients")
    parser.add_argument("--baseline-s", type=float, default=8.0)
    parser.add_argument(
        "--spread",
        action="store_true",
        help="then flood again from one address per request (X-Forwarded-For)",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--flood-only",
        choices=("one", "spread"),
        help="only flood (from one client, or spread over addresses), print the outcomes "
        "as JSON: what the scenario runs in a process of its own",
    )
    args = parser.parse_args(argv)
    if args.flood_only:
        result = asyncio.run(
            flood(args.url, args.requests, args.concurrency, args.flood_only == "spread")
        )
        print(json.dumps(result), flush=True)
        return 0
    missing = [
        f"--{name}" for name in ("rows", "user", "password", "out") if not getattr(args, name)
    ]
    if missing:
        parser.error(f"the scenario needs {', '.join(missing)}")
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
