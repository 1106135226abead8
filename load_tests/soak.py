"""``make soak``: a long run of mixed traffic at half the measured capacity, watching
whether the service leaks or slows down.

1. Starts ``bentoml serve service:Tabserve`` (one worker) on the model of
   ``--model-tag`` in ``BENTOML_HOME``, with a throw-away secret and users file.
2. Measures its capacity on the soak's own mix (``load_tests/soak_locustfile.py``:
   predictions, batches, explanations, the UI's form, logins and bad requests) with a
   closed loop of ``--users`` users for ``--probe-seconds``.
3. Runs the same mix at half that rate for ``--minutes`` (20 by default), sampling the
   worker's resident memory, open files and threads every few seconds.
4. Holds the run to the criteria of :mod:`load_tests.soak_report` and writes
   ``soak.json`` and ``soak.md`` (with the date and the machine) under ``--out``; exits 1
   when a criterion did not hold. ::

    python -m load_tests.soak                  # 20 minutes
    python -m load_tests.soak --seconds 60     # the short version ``make test`` runs
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from load_tests.bench.machine import machine_text
from load_tests.payloads import bundle_dir, load_rows, write_rows
from load_tests.processes import free_port, running
from load_tests.soak_report import Sample, judge, markdown, read_requests

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCUSTFILE = REPO / "load_tests" / "soak_locustfile.py"
SAMPLE_EVERY_S = 2.0
USER = "soak"


def prepare(workdir: Path, home: Path, model_tag: str) -> dict[str, str]:
    """The server's and Locust's environment: a secret, a users file, the rows to send."""
    from tabserve.security.users import UserStore

    password = secrets.token_urlsafe(16)
    users = workdir / "users.json"
    UserStore(users).add(USER, password, "predict,explain")  # production argon2
    rows = write_rows(load_rows(bundle_dir(home, model_tag), limit=500), workdir / "rows.json")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return {
        **env,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(workdir / "gradio"),
        "TABSERVE_ENV": "development",
        "TABSERVE_MODEL_TAG": model_tag,
        "TABSERVE_JWT_SECRET": secrets.token_urlsafe(48),
        "TABSERVE_USERS_FILE": str(users),
        "TABSERVE_LOCAL_DIR": str(workdir / "local"),
        # Many logins from one address: the throttle counts failures, and these succeed.
        "TABSERVE_LOAD_USER": USER,
        "TABSERVE_LOAD_PASSWORD": password,
        "TABSERVE_LOAD_ROWS": str(rows),
    }


def locust(
    url: str, env: dict[str, str], users: int, seconds: float, rate: float, log: Path, out: Path
) -> subprocess.CompletedProcess[str]:
    """A headless Locust run of the soak mix."""
    command = [str(BIN / "locust"), "-f", str(LOCUSTFILE), "--headless", "--host", url]
    command += ["-u", str(users), "-r", str(users), "-t", f"{int(seconds)}s"]
    command += ["--stop-timeout", "5", "--csv", str(out), "--only-summary", "--loglevel", "WARNING"]
    run_env = {**env, "TABSERVE_SOAK_RATE": f"{rate:.4f}", "TABSERVE_SOAK_LOG": str(log)}
    return subprocess.run(
        command, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=seconds + 120
    )


def worker_of(pid: int) -> psutil.Process:
    """The worker process of the ``bentoml serve`` with ``pid``."""
    for child in psutil.Process(pid).children(recursive=True):
        if "_bentoml_impl.worker.service" in " ".join(child.cmdline()):
            return child
    raise RuntimeError("no BentoML worker process found")


def sample_until(
    worker: psutil.Process, stop: threading.Event, start: float, out: list[Sample]
) -> None:
    """Append the worker's resources to ``out`` every few seconds until ``stop``."""
    while not stop.wait(SAMPLE_EVERY_S):
        with worker.oneshot():
            out.append(
                Sample(
                    time.monotonic() - start,
                    worker.memory_info().rss,
                    worker.num_fds(),
                    worker.num_threads(),
                )
            )


def capacity(url: str, env: dict[str, str], users: int, seconds: float, work: Path) -> float:
    """Requests per second of the soak mix in a closed loop (the service's capacity)."""
    log = work / "probe.csv"
    done = locust(url, env, users, seconds, 0.0, log, work / "probe")
    if done.returncode not in (0, 1):  # 1: failures, counted by the soak itself
        raise RuntimeError(f"the capacity probe failed:\n{done.stderr[-3000:]}")
    requests = read_requests(log, 0.0)
    span = max(r.t for r in requests) - min(r.t for r in requests) if requests else 0.0
    return len(requests) / span if span else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=20.0, help="length (default 20)")
    length.add_argument("--seconds", type=float, help="length in seconds instead")
    parser.add_argument("--users", type=int, default=16, help="Locust users (default 16)")
    parser.add_argument("--probe-seconds", type=float, default=15.0, help="capacity probe")
    parser.add_argument("--share", type=float, default=0.5, help="of capacity (default 0.5)")
    parser.add_argument(
        "--model-tag", default=os.environ.get("TABSERVE_MODEL_TAG", "tabserve:latest")
    )
    parser.add_argument("--out", type=Path, default=REPO / "load_tests" / "results" / "soak")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    home = Path(os.environ.get("BENTOML_HOME", REPO / ".bentoml")).resolve()
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("soak.csv", "probe.csv"):
        (work / stale).unlink(missing_ok=True)
    env = prepare(work, home, args.model_tag)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "bentoml"), "serve", "service:Tabserve", "--port", str(port)]
    command += ["--host", "127.0.0.1"]
    with running(
        command, ready_url=f"{url}/readyz", log=work / "serve.log", env=env, cwd=REPO
    ) as server:
        rps = capacity(url, env, args.users, args.probe_seconds, work)
        rate = args.share * rps / args.users
        print(f"capacity {rps:.0f} requests/s; soaking at {args.share:.0%}: {rate:.2f}/s per user")
        samples: list[Sample] = []
        stop = threading.Event()
        started = time.monotonic()
        epoch = time.time()
        sampler = threading.Thread(
            target=sample_until, args=(worker_of(server.pid), stop, started, samples)
        )
        sampler.start()
        try:
            locust(url, env, args.users, seconds, rate, work / "soak.csv", work / "soak")
        finally:
            stop.set()
            sampler.join()
    verdict = judge(samples, read_requests(work / "soak.csv", epoch), seconds)
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report: dict[str, Any] = {
        **verdict.as_dict(),
        "date": today,
        "machine": machine_text(),
        "capacity_rps": rps,
        "rate_per_user": rate,
        "users": args.users,
    }
    (work / "soak.json").write_text(json.dumps(report, indent=2))
    with (work / "samples.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([(s.t, s.rss, s.fds, s.threads) for s in samples])
    page = markdown(verdict, machine_text(), today, seconds / 60)
    (work / "soak.md").write_text(page)
    print(page)
    return 0 if verdict.held else 1


if __name__ == "__main__":
    sys.exit(main())
