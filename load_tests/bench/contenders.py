"""The contenders: how each server is started, pinned and logged into; ``--against`` worktrees."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx

from load_tests.bench.common import BENCH_USER, BIN, CHEAP_ARGON2, REPO, SHARED_BATCHER, Contender
from load_tests.scrape import SHARED_MODEL_ENDPOINT, Batches, batches

# The recording contender's record: this run's own file, removed when the bench ends.
BENCH_RECORD = Path(tempfile.gettempdir()) / f"tabserve-bench-record-{os.getpid()}.db"


@atexit.register
def _remove_bench_record() -> None:
    for name in ("", "-shadow"):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{BENCH_RECORD}{name}{suffix}").unlink(missing_ok=True)


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
            "recording",
            "the served-rows record on (embedded SQLite, as `make serve` runs it)",
            TABSERVE_RECORD_URL=f"sqlite:///{BENCH_RECORD}",
        ),
        tabserve_variant(
            "shadow",
            "the record on and a shadow model (the same model again: the same cost as a "
            "challenger of its size)",
            TABSERVE_RECORD_URL=f"sqlite:///{BENCH_RECORD}-shadow",
            TABSERVE_SHADOW_MODEL="{TABSERVE_MODEL_TAG}",
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
