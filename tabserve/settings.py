"""Runtime settings of the service and the ``tabserve`` CLI (prefix ``TABSERVE_``).

One :class:`Settings` object, read from the environment, that fails loudly: a
missing, short or placeholder secret is an error, never a silent default. In
``development`` the JWT secret falls back to the git-ignored local file that
``tabserve init-local`` writes; in ``production`` nothing is guessed.
"""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_BYTES = 32
DEFAULT_LOCAL_DIR = Path(".tabserve")
SECRET_FILE_NAME = "jwt_secret"
USERS_FILE_NAME = "users.json"
DEMO_PASSWORD_FILE_NAME = "demo_password"
SCOPES = ("predict", "explain", "admin")

# Values people paste from examples; refused even when long enough.
_PLACEHOLDER_MARKERS = (
    "changeme",
    "change-me",
    "change_me",
    "replace-me",
    "replace_me",
    "your-secret",
    "your_secret",
    "placeholder",
    "example",
    "dummy",
    "insecure",
    "xxxxxxxx",
)


class SettingsError(RuntimeError):
    """The configuration cannot be used; the message says what to set."""


class BatchingSettings(BaseSettings):
    """Adaptive batching knobs, read when ``service.py`` is imported.

    BentoML fixes ``max_batch_size``/``max_latency_ms`` in the ``@bentoml.api``
    decorator, so these two are read from the environment at import time (no
    I/O besides the environment).
    """

    model_config = SettingsConfigDict(env_prefix="TABSERVE_", extra="ignore")

    batch_max_size: int = Field(default=256, ge=1, le=100_000)
    # BentoML cancels (503) a queued request whose estimated latency exceeds this
    # budget; a tight budget fails most requests under load, so it is generous.
    batch_max_latency_ms: int = Field(default=10_000, ge=10, le=600_000)


class ModelSettings(BaseSettings):
    """Which model the service serves; the part of :class:`Settings` read at import.

    BentoML takes the model reference when ``service.py`` defines its class, so
    :func:`model_tag_from_env` reads this one setting then (the environment only, no
    I/O); :class:`Settings` inherits it, so both read the same ``TABSERVE_MODEL_TAG``.
    """

    model_config = SettingsConfigDict(env_prefix="TABSERVE_", extra="ignore")

    model_tag: str = Field(default="tabserve:latest", min_length=1)


class Settings(ModelSettings):
    """Everything the service, the token endpoint and the CLI read.

    Attributes:
        env: ``development`` (local secret fallback) or ``production`` (no fallback).
        model_tag: BentoML model tag served (``name:version`` or ``name:latest``).
        jwt_secret: HS256 secret, at least 32 bytes.
        jwt_secret_file: file holding the HS256 secret (alternative to ``jwt_secret``).
        jwt_algorithm: ``HS256`` (default) or ``RS256`` (with key files).
        jwt_private_key_file: RS256 private key (PEM), needed to issue tokens.
        jwt_public_key_file: RS256 public key (PEM), needed to verify tokens.
        jwt_issuer: ``iss`` claim issued and required.
        jwt_audience: ``aud`` claim issued and required.
        token_ttl_s: lifetime of issued tokens.
        jwt_leeway_s: clock-skew tolerance when checking ``exp``/``iat``.
        users_file: JSON file of argon2id password hashes.
        local_dir: git-ignored folder for the generated local secret and demo user.
        max_rows: most rows accepted in one request.
        max_body_bytes: largest request body accepted.
        login_max_failures: failed logins tolerated per user and client in the window.
        login_window_s: sliding window of the failed-login throttle.
        log_level: level of the ``tabserve.*`` loggers (BentoML sets the root to WARNING).
        ui_enabled: serve the browser UI at ``/ui`` (built when a worker starts).
        ui_session_ttl_s: lifetime of a browser session of the ``/ui`` (its cookie and token).
        ui_session_audience: ``aud`` claim of session tokens; differs from the API's, so a
            session cookie is never accepted as an API bearer token, nor the reverse.
        ui_cookie_secure: mark the session cookie ``Secure``; by default it is secure in
            production and whenever the request itself came over https.
        ui_max_upload_bytes: largest CSV the batch tab accepts (also capped by
            ``max_body_bytes``, see :attr:`ui_upload_limit_bytes`).
        ui_batch_max_rows: most rows the batch tab scores in one file.
    """

    env: Literal["development", "production"] = "development"

    jwt_secret: SecretStr | None = None
    jwt_secret_file: Path | None = None
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_private_key_file: Path | None = None
    jwt_public_key_file: Path | None = None
    jwt_issuer: str = Field(default="tabserve", min_length=1)
    jwt_audience: str = Field(default="tabserve-api", min_length=1)
    token_ttl_s: int = Field(default=900, ge=30, le=86_400)
    jwt_leeway_s: int = Field(default=10, ge=0, le=120)

    users_file: Path | None = None
    local_dir: Path = DEFAULT_LOCAL_DIR

    max_rows: int = Field(default=1000, ge=1, le=1_000_000)
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_window_s: int = Field(default=300, ge=1, le=86_400)

    ui_enabled: bool = True
    ui_session_ttl_s: int = Field(default=3600, ge=60, le=86_400)
    ui_session_audience: str = Field(default="tabserve-ui", min_length=1)
    ui_cookie_secure: bool | None = None
    ui_max_upload_bytes: int = Field(default=960 * 1024, ge=1024, le=1 << 30)
    ui_batch_max_rows: int = Field(default=10_000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        if self.jwt_algorithm == "RS256" and self.jwt_public_key_file is None:
            raise ValueError("RS256 needs TABSERVE_JWT_PUBLIC_KEY_FILE")
        # The secret itself is resolved lazily (``signing_key``): the users CLI does not
        # need it, while the service resolves it at start-up so a bad one stops it there.
        return self

    @model_validator(mode="after")
    def _check_ui_audience(self) -> Settings:
        if self.ui_session_audience == self.jwt_audience:
            raise ValueError(
                "TABSERVE_UI_SESSION_AUDIENCE must differ from TABSERVE_JWT_AUDIENCE "
                "(a browser session must not be usable as an API token)"
            )
        return self

    @property
    def ui_upload_limit_bytes(self) -> int:
        """The batch tab's CSV size limit, kept under the service-wide body limit.

        Every request, uploads included, passes the gateway's ``max_body_bytes``
        check; the multipart envelope around the file needs some headroom.
        """
        headroom = min(64 * 1024, self.max_body_bytes // 8)
        return min(self.ui_max_upload_bytes, self.max_body_bytes - headroom)

    @property
    def resolved_users_file(self) -> Path:
        """The users file: ``TABSERVE_USERS_FILE`` or ``<local_dir>/users.json``."""
        return self.users_file or self.local_dir / USERS_FILE_NAME

    @property
    def secret_file(self) -> Path:
        """Where the HS256 secret is read from when not given inline."""
        return self.jwt_secret_file or self.local_dir / SECRET_FILE_NAME

    @cached_property
    def signing_key(self) -> str:
        """The key tokens are signed with (HS256 secret or RS256 private key PEM).

        Raises:
            SettingsError: when the secret is missing, short or a placeholder, or
                when RS256 has no private key file.
        """
        if self.jwt_algorithm == "RS256":
            if self.jwt_private_key_file is None:
                raise SettingsError("issuing RS256 tokens needs TABSERVE_JWT_PRIVATE_KEY_FILE")
            return self.jwt_private_key_file.read_text()
        return check_secret(self._raw_secret())

    @cached_property
    def verification_key(self) -> str:
        """The key tokens are verified with (HS256 secret or RS256 public key PEM)."""
        if self.jwt_algorithm == "RS256":
            assert self.jwt_public_key_file is not None  # checked by the validator
            return self.jwt_public_key_file.read_text()
        return self.signing_key

    @cached_property
    def key_id(self) -> str:
        """The ``kid`` header of issued tokens: identifies the verification key.

        Derived from the key (sha256 of a fixed prefix and the key, first 16 hex digits),
        so it changes when the key is rotated and tokens signed with an earlier key are
        refused as such; it reveals nothing usable about an HS256 secret.
        """
        digest = hashlib.sha256(b"tabserve-kid\0" + self.verification_key.encode()).hexdigest()
        return f"{self.jwt_algorithm.lower()}-{digest[:16]}"

    def _raw_secret(self) -> str:
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        explicit = self.jwt_secret_file is not None
        if not explicit and self.env == "production":
            raise SettingsError(
                "TABSERVE_ENV=production needs TABSERVE_JWT_SECRET or TABSERVE_JWT_SECRET_FILE "
                f"(a random value of at least {MIN_SECRET_BYTES} bytes, e.g. from "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        path = self.secret_file
        if not path.is_file():
            hint = "" if explicit else " (run `tabserve init-local` to create a local one)"
            raise SettingsError(f"no JWT secret: {path} does not exist{hint}")
        return path.read_text().strip()


def check_secret(secret: str) -> str:
    """Return ``secret`` if it is usable as an HS256 key.

    Raises:
        SettingsError: if it is shorter than 32 bytes or looks like a placeholder.
    """
    if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes "
            f"(got {len(secret.encode('utf-8'))})"
        )
    lowered = secret.lower()
    if any(marker in lowered for marker in _PLACEHOLDER_MARKERS) or len(set(secret)) < 8:
        raise SettingsError("the JWT secret looks like a placeholder; generate a random one")
    return secret


def load_settings() -> Settings:
    """Read :class:`Settings` from the environment.

    Raises:
        SettingsError: with one readable message for any invalid or missing value.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TABSERVE_{'_'.join(str(p) for p in err['loc']).upper() or '?'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise SettingsError(f"invalid settings: {problems}") from None


def load_batching_settings() -> BatchingSettings:
    """Read the batching knobs; an invalid value stops the import with a clear message."""
    try:
        return BatchingSettings()
    except ValidationError as exc:
        raise SettingsError(f"invalid batching settings: {exc}") from None


def model_tag_from_env() -> str:
    """The BentoML model tag to serve, read at service import: :attr:`Settings.model_tag`.

    Raises:
        SettingsError: when ``TABSERVE_MODEL_TAG`` is set but empty.
    """
    try:
        return ModelSettings().model_tag
    except ValidationError as exc:
        raise SettingsError(f"invalid TABSERVE_MODEL_TAG: {exc}") from None


def fail_fast_in_production() -> None:
    """With ``TABSERVE_ENV=production``, check the settings and the JWT key now.

    Does nothing in development (``bentoml build`` and tests import the service
    without secrets).

    Raises:
        SettingsError: naming the variable to fix.
    """
    if os.environ.get("TABSERVE_ENV", "development") != "production":
        return
    _ = load_settings().verification_key
