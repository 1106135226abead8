"""Settings fail loudly: no production secret defaults, placeholders refused."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tabserve.settings import Settings, SettingsError, load_settings, model_tag_from_env


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
    assert settings.signing_key == secret
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
        _ = load_settings().signing_key


def test_production_never_falls_back_to_a_local_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    local = tmp_path / ".tabserve"
    local.mkdir()
    (local / "jwt_secret").write_text(secrets.token_urlsafe(48))
    assert load_settings().signing_key  # development uses the local file
    monkeypatch.setenv("TABSERVE_ENV", "production")
    with pytest.raises(SettingsError, match="production needs TABSERVE_JWT_SECRET"):
        _ = load_settings().signing_key


def test_development_without_any_secret_says_how_to_make_one() -> None:
    with pytest.raises(SettingsError, match="tabserve init-local"):
        _ = load_settings().signing_key


def test_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(secrets.token_urlsafe(48) + "\n")
    monkeypatch.setenv("TABSERVE_ENV", "production")
    monkeypatch.setenv("TABSERVE_JWT_SECRET_FILE", str(path))
    assert load_settings().signing_key == path.read_text().strip()


def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABSERVE_MAX_ROWS", "0")
    with pytest.raises(SettingsError, match="TABSERVE_MAX_ROWS"):
        load_settings()


def test_rs256_needs_a_public_key() -> None:
    with pytest.raises(ValueError, match="PUBLIC_KEY_FILE"):
        Settings(jwt_algorithm="RS256")


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
