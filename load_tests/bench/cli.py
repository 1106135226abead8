"""``python -m load_tests.bench``: the command line that runs everything."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from load_tests.bench.common import (
    BENCH_MIX,
    BENCH_USER,
    BIN,
    CHEAP_ARGON2,
    CONTENDERS,
    DEFAULT_PROFILE_ONLY,
    EXTRA_CONTENDERS,
    NONE,
    OUTPUT,
    PROFILE_CACHE,
    REPO,
    RunResult,
)
from load_tests.bench.contenders import (
    against_name,
    checkout,
    contenders,
    pinning,
    prepare_auth,
    workers_text,
)
from load_tests.bench.flood_bench import bench_login_flood
from load_tests.bench.levels import Load, bench_contender
from load_tests.bench.machine import machine_text, model_identity, round_order
from load_tests.bench.report import labelled, write_charts, write_report
from load_tests.bench.stats import good
from load_tests.payloads import bundle_dir, load_rows, write_rows
from load_tests.processes import free_port
from load_tests.profiles import BUILT_PROFILES, PROFILE_NAMES, BuiltProfile, build_profile
from load_tests.profiles import default_profile as pipeline_profile
from tabserve.core.bundle import REFERENCE_FILE


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

    if args.out is not None:
        OUTPUT.results = args.out.resolve()
    bentoml_home = Path(os.environ.get("BENTOML_HOME", REPO / ".bentoml")).resolve()
    tracking = os.environ.setdefault(
        "MLFLOW_TRACKING_URI", f"sqlite:///{REPO / 'mlruns' / 'mlflow.db'}"
    )
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    (OUTPUT.results / "runs").mkdir(parents=True, exist_ok=True)
    workdir = OUTPUT.results / "work"
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
    (OUTPUT.results / "results.json").write_text(
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
