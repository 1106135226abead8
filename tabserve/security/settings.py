"""The security section of the settings: keys, tokens, sessions, users, logins, state.

Every field is a ``TABSERVE_*`` variable (``jwt_secret`` is ``TABSERVE_JWT_SECRET``).
In ``development`` the JWT secret falls back to the git-ignored local file that
``tabserve init-local`` writes; in ``production`` nothing is guessed.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from tabserve.core.config import SettingsError, section_config, split_list
from tabserve.security.files import read_private_file
from tabserve.security.keys import MIN_SECRET_BYTES, KeyRing
from tabserve.security.passwords import (
    ARGON2_MEMORY_KIB,
    ARGON2_PARALLELISM,
    ARGON2_TIME_COST,
    MAX_LOGIN_MEMORY_KIB,
)
from tabserve.security.state import DEFAULT_MAX_KEYS, MEMORY_URL, check_state_url

# The longest lifetime any token may be given (`tabserve token --ttl` included).
MAX_TOKEN_TTL_S = 86_400
DEFAULT_LOCAL_DIR = Path(".tabserve")
SECRET_FILE_NAME = "jwt_secret"
USERS_FILE_NAME = "users.json"
DEMO_PASSWORD_FILE_NAME = "demo_password"


class SecuritySettings(BaseSettings):
    """Keys, tokens, browser sessions, the users file, the login defences, the state store.

    Attributes:
        env: ``development`` (local secret fallback) or ``production`` (no fallback).
        jwt_secret: HS256 secret, at least 32 bytes.
        jwt_secret_file: file holding the HS256 secret (alternative to ``jwt_secret``).
        jwt_algorithm: ``HS256`` (default) or ``RS256`` (with key files).
        jwt_private_key_file: RS256 private key (PEM), needed to issue tokens.
        jwt_public_key_file: RS256 public key (PEM), needed to verify tokens.
        jwt_previous_secrets: earlier HS256 secrets still accepted for verification
            (comma-separated), during a key rotation; tokens are signed with the current one.
        jwt_previous_public_key_files: earlier RS256 public keys still accepted.
        jwt_issuer: ``iss`` claim issued and required.
        jwt_audience: ``aud`` claim issued and required.
        token_ttl_s: lifetime of issued tokens.
        token_max_ttl_s: the longest lifetime (``exp - iat``) an API token may have, any
            ``tabserve token --ttl`` included; a correctly signed token with a longer one is
            refused. Browser sessions may live ``ui_session_ttl_s`` at most.
        jwt_leeway_s: clock-skew tolerance when checking ``exp``/``iat``.
        users_file: JSON file of argon2id password hashes.
        local_dir: git-ignored folder for the generated local secret and demo user.
        login_max_failures: failed logins tolerated per user and client in the window
            (ten times as many per client, whatever the user names).
        login_window_s: moving window of the failed-login throttle.
        login_account_max_failures: failed logins per user name in the window across all
            networks; past it, only the networks the account logged in from recently may
            try (``tabserve/security/login_guard.py``).
        login_known_network_days: how long a network where a user logged in stays exempt
            from that account's ceiling.
        login_ipv6_prefix: an IPv6 client is counted by its network of this prefix length.
        login_concurrency: password verifications running at once in one worker.
        login_queue_timeout_s: how long a login waits for a verification slot before it
            is refused (429, ``busy``).
        argon2_time_cost: argon2id passes of new hashes (OWASP: 2).
        argon2_memory_kib: argon2id memory of new hashes, KiB (OWASP: 19,456).
        argon2_parallelism: argon2id lanes of new hashes (OWASP: 1).
        state_url: where the login throttle and revoked tokens live: ``memory://`` (this
            worker only) or ``redis://host:port/db`` (shared by all workers and replicas).
        state_max_keys: most throttle keys and revoked ids the memory store tracks.
        ui_session_ttl_s: lifetime of a browser session of the ``/ui`` (its cookie and token).
        ui_session_audience: ``aud`` claim of session tokens; differs from the API's, so a
            session cookie is never accepted as an API bearer token, nor the reverse.
        ui_cookie_secure: mark the session cookie ``Secure``; by default it is secure in
            production and whenever the request itself came over https.
    """

    model_config = section_config()

    env: Literal["development", "production"] = "development"

    jwt_secret: SecretStr | None = None
    jwt_secret_file: Path | None = None
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_private_key_file: Path | None = None
    jwt_public_key_file: Path | None = None
    jwt_previous_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    jwt_previous_public_key_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    jwt_issuer: str = Field(default="tabserve", min_length=1)
    jwt_audience: str = Field(default="tabserve-api", min_length=1)
    token_ttl_s: int = Field(default=900, ge=30, le=MAX_TOKEN_TTL_S)
    token_max_ttl_s: int = Field(default=MAX_TOKEN_TTL_S, ge=30, le=MAX_TOKEN_TTL_S)
    jwt_leeway_s: int = Field(default=10, ge=0, le=120)

    users_file: Path | None = None
    local_dir: Path = DEFAULT_LOCAL_DIR

    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_window_s: int = Field(default=300, ge=1, le=86_400)
    login_account_max_failures: int = Field(default=50, ge=1, le=100_000)
    login_known_network_days: int = Field(default=30, ge=1, le=365)
    login_ipv6_prefix: int = Field(default=64, ge=32, le=128)
    login_concurrency: int = Field(default=1, ge=1, le=64)
    login_queue_timeout_s: float = Field(default=5.0, ge=0.1, le=120)
    argon2_time_cost: int = Field(default=ARGON2_TIME_COST, ge=1, le=50)
    argon2_memory_kib: int = Field(default=ARGON2_MEMORY_KIB, ge=8, le=MAX_LOGIN_MEMORY_KIB)
    argon2_parallelism: int = Field(default=ARGON2_PARALLELISM, ge=1, le=16)
    state_url: str = MEMORY_URL
    state_max_keys: int = Field(default=DEFAULT_MAX_KEYS, ge=100, le=10_000_000)

    ui_session_ttl_s: int = Field(default=3600, ge=60, le=MAX_TOKEN_TTL_S)
    ui_session_audience: str = Field(default="tabserve-ui", min_length=1)
    ui_cookie_secure: bool | None = None

    @model_validator(mode="after")
    def _check_keys(self) -> SecuritySettings:
        if self.jwt_algorithm == "RS256" and self.jwt_public_key_file is None:
            raise ValueError("RS256 needs TABSERVE_JWT_PUBLIC_KEY_FILE")
        # The keys themselves are read lazily (``keys``): the users CLI does not need
        # them, while the service reads them at start-up so a bad one stops it there.
        return self

    @field_validator("jwt_previous_secrets", "jwt_previous_public_key_files", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("state_url")
    @classmethod
    def _state_url(cls, value: str) -> str:
        return check_state_url(value)

    @model_validator(mode="after")
    def _check_login_memory(self) -> SecuritySettings:
        worst = self.login_concurrency * self.argon2_memory_kib
        if worst > MAX_LOGIN_MEMORY_KIB:
            raise ValueError(
                f"TABSERVE_LOGIN_CONCURRENCY x TABSERVE_ARGON2_MEMORY_KIB is {worst // 1024} MiB "
                f"per worker, over {MAX_LOGIN_MEMORY_KIB // 1024} MiB: a login flood would "
                "take that much memory; lower one of them"
            )
        return self

    @model_validator(mode="after")
    def _check_token_ttl(self) -> SecuritySettings:
        if self.token_ttl_s > self.token_max_ttl_s:
            raise ValueError("TABSERVE_TOKEN_TTL_S must not exceed TABSERVE_TOKEN_MAX_TTL_S")
        return self

    @model_validator(mode="after")
    def _check_ui_audience(self) -> SecuritySettings:
        if self.ui_session_audience == self.jwt_audience:
            raise ValueError(
                "TABSERVE_UI_SESSION_AUDIENCE must differ from TABSERVE_JWT_AUDIENCE "
                "(a browser session must not be usable as an API token)"
            )
        return self

    @property
    def resolved_users_file(self) -> Path:
        """The users file: ``TABSERVE_USERS_FILE`` or ``<local_dir>/users.json``."""
        return self.users_file or self.local_dir / USERS_FILE_NAME

    @property
    def secret_file(self) -> Path:
        """Where the HS256 secret is read from when not given inline."""
        return self.jwt_secret_file or self.local_dir / SECRET_FILE_NAME

    @cached_property
    def keys(self) -> KeyRing:
        """The signing and verification keys (read and checked on first use).

        Raises:
            SettingsError: a missing, short or placeholder secret, an unreadable key file.
        """
        return KeyRing.load(self)

    @property
    def longest_token_ttl_s(self) -> int:
        """The longest any token may stay valid (``tabserve token --ttl`` included: longer
        ones are refused), with the clock-skew leeway: how long to keep a revocation
        whose expiry is unknown."""
        return max(self.token_max_ttl_s, self.ui_session_ttl_s) + self.jwt_leeway_s

    def raw_secret(self) -> str:
        """The HS256 secret as configured (inline, its file, or the local file).

        Raises:
            SettingsError: none configured in production, or the local file is missing.
        """
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
        if not explicit and not path.is_file():
            raise SettingsError(
                f"no JWT secret: {path} does not exist "
                "(run `tabserve init-local` to create a local one)"
            )
        return read_private_file(path, "TABSERVE_JWT_SECRET_FILE").strip()


def check_credentials(settings: SecuritySettings) -> list[str]:
    """Everything a server needs before it may start: the keys and the users file.

    In production every piece must be usable: a missing, unreadable or invalid secret,
    key or users file is an error. In development the key falls back to the local file
    (``tabserve init-local``) and a users file that does not exist yet only means that
    nobody can log in (the returned warnings say so); a file that exists must be usable.

    Returns:
        Warnings worth logging.

    Raises:
        SettingsError: naming the variable or file at fault and the fix.
    """
    from tabserve.security.users import check_users_file

    production = settings.env == "production"
    explicit_key = settings.jwt_secret is not None or settings.jwt_secret_file is not None
    if production or explicit_key or settings.jwt_algorithm == "RS256":
        _ = settings.keys
    users = settings.resolved_users_file
    if not production and not users.exists():
        return [
            f"the users file {users} does not exist: nobody can log in "
            "(create users with `tabserve users add NAME --scopes predict`)"
        ]
    check_users_file(users)
    return []
