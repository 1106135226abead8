"""The real image: built by ``make containerize`` from a test model, run by the real engine.

The engine is the one ``make containerize`` picks (``deploy/image/engine.sh``): Docker
where its daemon answers, else podman (installed from Debian's packages if missing).
Where the base image cannot be pulled, ``make containerize`` builds its stand-in (see
``deploy/image/base-image.sh``). The image keeps one tag, ``tabserve-test:latest``, so
that later runs reuse the engine's layer cache: only the bento's own layers are rebuilt.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from load_tests.processes import free_port
from tests.support import REPO, TestModel, import_test_model

IMAGE = "tabserve-test:latest"
PASSWORD = "image test password"
README_RUN = re.compile(r"^docker run --rm -p 3000:3000 .*?tabserve:latest$", re.M | re.S)
CONTAINERS_CONF = REPO / "deploy" / "image" / "containers.conf"


@dataclass(frozen=True)
class Built:
    """The image and what the tests need to run it."""

    engine: str
    image: str
    build_log: str
    model: TestModel
    home: Path  # the BentoML home the image's model came from
    env: dict[str, str]  # environment for the engine's commands

    def run(self, *args: str, check: bool = False, timeout: float = 120) -> Any:
        """``<engine> <args>``, captured."""
        return subprocess.run(
            [self.engine, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )


def engine_env() -> dict[str, str]:
    """The environment the Makefile gives container engines (podman reads CONTAINERS_CONF)."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


@pytest.fixture(scope="package")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """``make containerize`` of the penguins model (categoricals, missing values)."""
    import palmerpenguins

    root = tmp_path_factory.mktemp("image")
    home = root / "bentoml"
    model = import_test_model(
        home,
        palmerpenguins.load_penguins(),
        "species",
        {"objective": "multi:softprob", "num_class": 3},
    )
    env = {**engine_env(), "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    env["TABSERVE_MODEL_TAG"] = model.tag
    engine = subprocess.run(
        [str(REPO / "deploy" / "image" / "engine.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout.strip()
    started = time.monotonic()
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "containerize",
            f"IMAGE={IMAGE}",
            f"MODEL_TAG={model.tag}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    print(f"make containerize: {time.monotonic() - started:.0f} s")
    print("\n".join(line for line in log.splitlines() if line.startswith(("   ", ">> image"))))
    return Built(engine, IMAGE, log, model, home, env)


def users_file(directory: Path, mode: int) -> Path:
    """``.tabserve/users.json`` with user alice, as ``tabserve users add`` writes it."""
    from argon2 import PasswordHasher

    from tabserve.security.users import UserStore

    path = directory / ".tabserve" / "users.json"
    cheap = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)  # not timed here
    UserStore(path, hasher=cheap).add("alice", PASSWORD, "predict,explain,feedback")
    path.chmod(mode)
    return path


def documented_run(built: Built, name: str, port: int, *extra: str) -> str:
    """The README's `docker run` command, for this engine, port, image and container name.

    Only what cannot be verbatim is changed: the engine, detached with a name instead of
    ``--rm`` (the test removes it), the published port, the image tag; ``extra`` options
    go before the image.
    """
    readme = (REPO / "README.md").read_text()
    found = README_RUN.search(readme)
    assert found, "README.md has no `docker run --rm -p 3000:3000 … tabserve:latest` command"
    command = found.group(0).replace("\\\n", " ")
    command = command.replace(
        "docker run --rm -p 3000:3000",
        f"{built.engine} run -d --name {name} -p 127.0.0.1:{port}:3000",
        1,
    )
    options = " ".join(shlex.quote(e) for e in extra)
    return command.removesuffix("tabserve:latest") + f"{options} {built.image}"


@dataclass(frozen=True)
class Container:
    """A started container."""

    name: str
    url: str


@contextmanager
def container(built: Built, workdir: Path, *extra: str) -> Iterator[Container]:
    """The documented command, run from ``workdir`` (which holds ``.tabserve/``)."""
    name = f"tabserve-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    command = documented_run(built, name, port, *extra)
    started = subprocess.run(
        ["bash", "-c", command], cwd=workdir, env=built.env, capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr
    try:
        yield Container(name, f"http://127.0.0.1:{port}")
    finally:
        built.run("rm", "-f", "-t", "0", name)


def wait_ready(built: Built, box: Container, timeout_s: float = 60) -> float:
    """Seconds until ``/readyz`` answers 200; fails with the container's log otherwise."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if httpx.get(f"{box.url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            running = built.run("inspect", "--format", "{{.State.Running}}", box.name)
            if running.stdout.strip() != "true":
                break  # it exited: no point waiting
        time.sleep(0.5)
    logs = built.run("logs", box.name)
    pytest.fail(f"not ready in {timeout_s} s:\n{(logs.stdout + logs.stderr)[-4000:]}")
