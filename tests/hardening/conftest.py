"""One real ``bentoml serve`` for the attack suite: RS256 keys, MLflow unreachable.

The server serves the palmerpenguins model (multiclass, categoricals, missing values:
the widest input surface) from a private BentoML home, signs tokens with RS256 (so
algorithm confusion with the public key can be tried for real), and has
``MLFLOW_TRACKING_URI`` pointing at a port where nothing listens: serving must not
need the tracking server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from load_tests.processes import free_port
from tests.support import (
    TestModel,
    cheap_hasher,
    import_test_model,
    rsa_keys,
    running_server,
    server_env,
)

PASSWORD = "hardening suite password"


@dataclass(frozen=True)
class Target:
    """The server under attack and what the tests need to know about it."""

    url: str
    log: Path
    env: dict[str, str]
    model: TestModel
    public_pem: bytes
    private_pem: bytes
    settings: Any  # tabserve Settings matching the server's

    def token(self, scopes: str = "predict,explain") -> str:
        from tabserve.security.tokens import issue_token

        return issue_token(self.settings, "alice", scopes.split(","))[0]

    def auth(self, scopes: str = "predict,explain") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scopes)}"}


def add_user(users_file: Path, name: str = "alice", scopes: str = "predict,explain") -> None:
    """A user (alice with predict and explain by default), with a cheap argon2 profile."""
    from tabserve.security.users import UserStore

    UserStore(users_file, hasher=cheap_hasher()).add(name, PASSWORD, scopes)


@pytest.fixture(scope="package")
def penguins_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TestModel]:
    """A private BentoML home with the penguins model as ``tabserve:v1``, and a user."""
    import palmerpenguins

    root = tmp_path_factory.mktemp("hardening")
    model = import_test_model(
        root / "bentoml",
        palmerpenguins.load_penguins(),
        "species",
        {"objective": "multi:softprob", "num_class": 3},
    )
    add_user(root / "users.json")
    return root, model


@pytest.fixture(scope="package")
def rotation() -> tuple[str, str]:
    """Two HS256 secrets: (previous, current), as during a key rotation."""
    import secrets

    return secrets.token_urlsafe(48), secrets.token_urlsafe(48)


@pytest.fixture(scope="package")
def target(penguins_root: tuple[Path, TestModel]) -> Iterator[Target]:
    """The running server (RS256, MLflow unreachable)."""
    from tabserve.serving.settings import Settings

    root, model = penguins_root
    private, public = rsa_keys(root)
    env = server_env(
        root,
        model.tag,
        TABSERVE_JWT_ALGORITHM="RS256",
        TABSERVE_JWT_PRIVATE_KEY_FILE=str(private),
        TABSERVE_JWT_PUBLIC_KEY_FILE=str(public),
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        # The fuzzer's failed logins trip the throttle (as they should); keep it short.
        TABSERVE_LOGIN_WINDOW_S="5",
        # Slow header senders are cut off sooner than the 10 s default, for the edge tests.
        TABSERVE_HEADER_TIMEOUT_S="2",
        # The record on: the fuzzer reaches POST /feedback's every outcome.
        TABSERVE_RECORD_URL=f"sqlite:///{root / 'record.db'}",
    )
    settings = Settings(
        jwt_algorithm="RS256", jwt_private_key_file=private, jwt_public_key_file=public
    )
    with running_server(env, root / "serve.log") as url:
        yield Target(
            url, root / "serve.log", env, model, public.read_bytes(), private.read_bytes(), settings
        )


def login(url: str, password: str = PASSWORD) -> httpx.Response:
    """``POST /auth/token`` as alice, waiting out the failed-login throttle if tripped."""
    deadline = time.monotonic() + 30
    while True:
        response = httpx.post(
            f"{url}/auth/token", data={"username": "alice", "password": password}, timeout=30
        )
        if response.status_code != 429 or time.monotonic() > deadline:
            return response
        time.sleep(float(response.headers.get("retry-after", "1")))


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The one JSON error envelope, with the request id of the response header."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code, error
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return dict(error)


def assert_healthy(target: Target) -> None:
    """``/readyz`` is 200 and a normal prediction equals the model's own output."""
    import numpy as np
    import xgboost as xgb

    assert httpx.get(f"{target.url}/readyz", timeout=10).status_code == 200
    rows = target.model.rows[:3]
    response = httpx.post(
        f"{target.url}/predict", json={"rows": rows}, headers=target.auth(), timeout=30
    )
    assert response.status_code == 200, response.text
    from tabserve.core.bundle import MODEL_FILE, read_schema  # the files the server loaded

    bundle = Path(target.env["BENTOML_HOME"]) / "models" / "tabserve" / "v1"
    schema = read_schema(bundle)
    booster = xgb.Booster(model_file=str(bundle / MODEL_FILE))
    expected = booster.predict(xgb.DMatrix(schema.to_frame(rows), enable_categorical=True)).astype(
        np.float64
    )
    classes = list(schema.target.classes)
    got = [[answer["probabilities"][str(c)] for c in classes] for answer in response.json()]
    assert np.allclose(got, expected, rtol=0, atol=1e-6)
