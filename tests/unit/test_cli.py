"""The ``tabserve`` console command."""

from __future__ import annotations

import io
import secrets
import stat
from pathlib import Path

import pytest

from tabserve.cli.main import main
from tabserve.security.tokens import verify_token
from tabserve.security.users import UserStore
from tabserve.serving.settings import load_settings


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in (
        "TABSERVE_JWT_SECRET",
        "TABSERVE_JWT_SECRET_FILE",
        "TABSERVE_ENV",
        "TABSERVE_USERS_FILE",
    ):
        monkeypatch.delenv(key, raising=False)
    local = tmp_path / ".tabserve"
    monkeypatch.setenv("TABSERVE_LOCAL_DIR", str(local))
    return local


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_local_creates_secret_and_demo_user_once(
    local_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init-local"]) == 0
    first = capsys.readouterr().out
    password = (local_env / "demo_password").read_text().strip()
    assert password in first and "/auth/token" in first
    for name in ("jwt_secret", "demo_password"):
        assert _mode(local_env / name) == 0o600
    assert _mode(local_env / "users.json") == 0o640  # group-readable (users.py)
    assert (local_env / ".gitignore").read_text().strip().endswith("*")
    assert UserStore(local_env / "users.json").authenticate("demo", password) is not None

    secret = (local_env / "jwt_secret").read_text()
    assert main(["init-local"]) == 0  # idempotent: same secret, same password, reprinted
    assert (local_env / "jwt_secret").read_text() == secret
    assert password in capsys.readouterr().out


def test_init_local_refuses_production(
    local_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TABSERVE_ENV", "production")
    assert main(["init-local"]) == 2
    assert "production" in capsys.readouterr().err
    assert not local_env.exists()


def test_users_add_from_stdin_remove_and_token(
    local_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TABSERVE_JWT_SECRET", secrets.token_urlsafe(48))
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["users", "add", "ci", "--scopes", "predict", "--password-stdin"]) == 0
    store = UserStore(local_env / "users.json")
    assert store.authenticate("ci", "a-long-password") is not None

    capsys.readouterr()
    assert main(["token", "--sub", "ci", "--scopes", "predict"]) == 0
    token = capsys.readouterr().out.strip()
    claims = verify_token(load_settings(), token)
    assert (claims.sub, claims.scopes) == ("ci", ("predict",))

    assert main(["users", "remove", "ci"]) == 0
    assert store.get("ci") is None
    assert main(["users", "remove", "ci"]) == 2
    assert main(["token", "--sub", "ci", "--scopes", "root"]) == 2


def test_token_names_its_jti_and_revoking_needs_a_shared_state_store(
    local_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TABSERVE_JWT_SECRET", secrets.token_urlsafe(48))
    monkeypatch.delenv("TABSERVE_STATE_URL", raising=False)
    assert main(["token", "--sub", "ci", "--scopes", "predict", "--ttl", "60"]) == 0
    out = capsys.readouterr()
    claims = verify_token(load_settings(), out.out.strip())
    assert f"jti {claims.jti}, expires in 60 s" in out.err  # stdout holds the token alone
    # With memory:// the workers' revocations are out of this command's reach: it says so.
    assert main(["token", "revoke", claims.jti]) == 2
    assert "redis://" in capsys.readouterr().err
    assert main(["token", "--sub", "ci", "--scopes", "predict", "--ttl", "999999"]) == 2
    assert main(["token"]) == 2  # neither --sub/--scopes nor `revoke`


def test_removing_a_user_with_memory_state_ends_their_tokens_through_the_users_file(
    local_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TABSERVE_STATE_URL", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["users", "add", "ci", "--scopes", "predict", "--password-stdin"]) == 0
    assert main(["users", "remove", "ci"]) == 0
    assert "refused from now on, within a second" in capsys.readouterr().out
    assert "ci" in UserStore(local_env / "users.json").load().removed
