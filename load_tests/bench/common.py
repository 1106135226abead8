"""What every part of the benchmark shares: targets, contenders' and runs' records, paths."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
NONE = "none"
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class Output:
    """Where the results go (``--out`` moves them); read at use, not at import."""

    results: Path = REPO / "load_tests" / "results"


OUTPUT = Output()
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
    "recording",
    "shadow",
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
DEFAULT_PROFILE_ONLY = ("drift-off", "recording", "shadow", *PRODUCTION_DEFAULTS)
# The one-user run right after the heaviest level: the two the target compares.
AFTER_BURST_CONTENDERS = ("batched", "unbatched", "shadow")
# Predictions only: two contenders (mlflow, constant) have no explanations, and the
# same load must run against every contender.
BENCH_MIX = "predict_one=4,predict_batch=1"
TARGET_USERS = (32, 64)
AFTER_BURST = "after burst"
# On these profiles, batched and unbatched also run the first level with single-row
# requests only: batching merges requests, and a batch request of 10 to 100 rows already
# amortises its model call, so the mixed load bounds what batching can buy on a costly
# model (docs/benchmark.md); single rows show what it buys where it should.
SINGLE_ROWS = "single rows"
SINGLE_ROW_MIX = "predict_one=1"
SINGLE_ROW_PROFILES = ("heavy",)
AFTER_BURST_SECONDS = 10
FLOOD_P99_TARGET_MS = 250
LOW_LOAD_P50_SLACK_MS = 5
SHADOW_P50_SLACK_MS = 2  # issue 34: a shadow adds at most this to the p50 at one user
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
# Issue 34's: a contender with a feature on keeps at least this share of batched's
# throughput (the served-rows record, embedded SQLite, as `make serve` runs it).
KEEP_TARGETS: dict[str, list[tuple[str, float, tuple[int, ...]]]] = {
    "default": [("recording", 0.85, (32,)), ("shadow", 0.80, (32,))],
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
