"""Settings fail loudly: no production secret defaults, placeholders refused."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from tabserve.core.config import SettingsError
from tabserve.serving.settings import Settings, load_settings, model_tag_from_env


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in (
        "TABSERVE_JWT_SECRET",
        "TABSERVE_JWT_SECRET_FILE",
        "TABSERVE_ENV",
        "TABSERVE_MAX_ROWS",
        "TABSERVE_JWT_ALGORITHM",
        "TABSERVE_MODEL_TAG",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TABSERVE_LOCAL_DIR", str(tmp_path / ".tabserve"))


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secrets.token_urlsafe(48)
    monkeypatch.setenv("TABSERVE_JWT_SECRET", secret)
    settings = load_settings()
    assert settings.keys.signing_key == secret
    assert secret not in repr(settings)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("short", "at least 32 bytes"),
        ("changeme-changeme-changeme-changeme-1234", "placeholder"),
        ("a" * 64, "placeholder"),
    ],
)
def test_unusable_secrets_are_refused(
    monkeypatch: pytest.MonkeyPatch, secret: str, message: str
) -> None:
    monkeypatch.setenv("TABSERVE_JWT_SECRET", secret)
    with pytest.raises(SettingsError, match=message):
        _ = load_settings().keys.signing_key


def test_production_never_falls_back_to_a_local_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    local = tmp_path / ".tabserve"
    local.mkdir()
    (local / "jwt_secret").write_text(secrets.token_urlsafe(48))
    assert load_settings().keys.signing_key  # development uses the local file
    monkeypatch.setenv("TABSERVE_ENV", "production")
    with pytest.raises(SettingsError, match="production needs TABSERVE_JWT_SECRET"):
        _ = load_settings().keys.signing_key


def test_development_without_any_secret_says_how_to_make_one() -> None:
    with pytest.raises(SettingsError, match="tabserve init-local"):
        _ = load_settings().keys.signing_key


def test_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(secrets.token_urlsafe(48) + "\n")
    monkeypatch.setenv("TABSERVE_ENV", "production")
    monkeypatch.setenv("TABSERVE_JWT_SECRET_FILE", str(path))
    assert load_settings().keys.signing_key == path.read_text().strip()


def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABSERVE_MAX_ROWS", "0")
    with pytest.raises(SettingsError, match="TABSERVE_MAX_ROWS"):
        load_settings()


def test_rs256_needs_a_public_key() -> None:
    with pytest.raises(ValueError, match="PUBLIC_KEY_FILE"):
        Settings(jwt_algorithm="RS256")


# --- start-up checks: a file that cannot be used stops start-up, naming it and the fix ---


def _production(tmp_path: Path, users: Path) -> Settings:
    return Settings(env="production", jwt_secret=secrets.token_urlsafe(48), users_file=users)


def _user(path: Path) -> Path:
    from argon2 import PasswordHasher

    from tabserve.security.users import UserStore

    cheap = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    UserStore(path, hasher=cheap).add("alice", "long enough password", "predict")
    return path


def test_startup_accepts_a_usable_users_file(tmp_path: Path) -> None:
    from tabserve.serving.settings import check_startup

    assert check_startup(_production(tmp_path, _user(tmp_path / "users.json"))) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist; create it with `tabserve users add"),
        ("{not json", "is not a valid users file"),
        ('{"users": {"alice": {"password_hash": 1}}}', "first at users.alice.password_hash"),
        ('{"accounts": {}}', "is not a valid users file"),
    ],
)
def test_startup_refuses_an_unusable_users_file_in_production(
    tmp_path: Path, content: str | None, message: str
) -> None:
    from tabserve.serving.settings import check_startup

    users = tmp_path / "users.json"
    if content is not None:
        users.write_text(content)
    with pytest.raises(SettingsError, match="TABSERVE_USERS_FILE") as caught:
        check_startup(_production(tmp_path, users))
    assert str(users) in str(caught.value) and message in str(caught.value)


def test_startup_in_development_only_warns_about_a_missing_users_file(tmp_path: Path) -> None:
    from tabserve.serving.settings import check_startup

    settings = Settings(users_file=tmp_path / "users.json")
    (warning,) = check_startup(settings)
    assert "nobody can log in" in warning and "tabserve users add" in warning
    (tmp_path / "users.json").write_text("garbage")  # but an existing file must be usable
    with pytest.raises(SettingsError, match="not a valid users file"):
        check_startup(settings)


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_a_secret_file_that_cannot_be_read_names_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "jwt_secret"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe" * 40)
    settings = Settings(env="production", jwt_secret_file=path)
    with pytest.raises(SettingsError, match="TABSERVE_JWT_SECRET_FILE") as caught:
        _ = settings.keys.verification_key
    assert str(path) in str(caught.value)


def test_serve_runs_bentoml_with_the_graceful_shutdown_timeout() -> None:
    import sys

    from tabserve.cli.serving import serve_argv

    argv = serve_argv(Settings(shutdown_grace_s=7), "service:Tabserve", "127.0.0.1", 3001)
    assert argv[:5] == [sys.executable, "-m", "bentoml", "serve", "service:Tabserve"]
    assert argv[argv.index("--timeout-graceful-shutdown") + 1] == "7"
    assert argv[argv.index("--port") + 1] == "3001"


def test_workers_and_trusted_proxies_are_read_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tabserve.serving.settings import ServerSettings, load_server_settings

    monkeypatch.delenv("TABSERVE_WORKERS", raising=False)
    monkeypatch.delenv("TABSERVE_TRUSTED_PROXIES", raising=False)
    assert load_server_settings().workers == 1
    assert load_server_settings().trusted_proxies == []
    monkeypatch.setenv("TABSERVE_WORKERS", "cpu_count")
    assert load_server_settings().workers == "cpu_count"
    monkeypatch.setenv("TABSERVE_WORKERS", "3")
    assert load_server_settings().workers == 3
    for bad in ("0", "many", "-2"):
        monkeypatch.setenv("TABSERVE_WORKERS", bad)
        with pytest.raises(SettingsError, match="TABSERVE_WORKERS"):
            load_server_settings()
    monkeypatch.setenv("TABSERVE_WORKERS", "1")
    monkeypatch.setenv("TABSERVE_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7 ::1")
    assert load_server_settings().trusted_proxies == ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]
    for bad in ("*", "proxy.example", "10.0.0.0/33"):
        monkeypatch.setenv("TABSERVE_TRUSTED_PROXIES", bad)
        with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
            load_server_settings()
    # uvicorn is told exactly these, and its own default (127.0.0.1) is replaced.
    monkeypatch.delenv("TABSERVE_TRUSTED_PROXIES")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1")
    warning = ServerSettings(trusted_proxies="10.1.0.0/16").apply_trusted_proxies()
    assert warning is not None and "TABSERVE_TRUSTED_PROXIES" in warning
    assert os.environ["FORWARDED_ALLOW_IPS"] == "10.1.0.0/16"
    assert ServerSettings().apply_trusted_proxies() is not None
    assert os.environ["FORWARDED_ALLOW_IPS"] == ""  # nobody's headers are believed
    assert ServerSettings().apply_trusted_proxies() is None


def test_login_and_state_settings_are_checked() -> None:
    settings = Settings()
    assert (settings.argon2_time_cost, settings.argon2_memory_kib) == (2, 19_456)
    assert settings.state_url == "memory://" and settings.login_concurrency == 1
    with pytest.raises(ValidationError, match="unsupported state store"):
        Settings(state_url="memcached://cache:11211")
    # A flood may run LOGIN_CONCURRENCY verifications at once: their memory is bounded.
    with pytest.raises(ValidationError, match="per worker"):
        Settings(login_concurrency=32, argon2_memory_kib=65_536)
    assert Settings(state_url="redis://redis:6379/0").state_url.startswith("redis://")


def test_service_import_reads_the_same_model_tag_as_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert model_tag_from_env() == Settings().model_tag == "tabserve:latest"
    monkeypatch.setenv("TABSERVE_MODEL_TAG", "churn:v7")
    assert model_tag_from_env() == Settings().model_tag == "churn:v7"
    monkeypatch.setenv("TABSERVE_MODEL_TAG", "")
    with pytest.raises(SettingsError, match="TABSERVE_MODEL_TAG"):
        model_tag_from_env()
    with pytest.raises(SettingsError, match="TABSERVE_MODEL_TAG"):
        load_settings()
