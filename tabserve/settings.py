"""Runtime settings of the service and the ``tabserve`` CLI (prefix ``TABSERVE_``).

One :class:`Settings` object, read from the environment, that fails loudly: a
missing, short or placeholder secret is an error, never a silent default. In
``development`` the JWT secret falls back to the git-ignored local file that
``tabserve init-local`` writes; in ``production`` nothing is guessed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tabserve.security.state import DEFAULT_MAX_KEYS, MEMORY_URL, check_state_url

MIN_SECRET_BYTES = 32
# The longest lifetime any token may be given (`tabserve token --ttl` included).
MAX_TOKEN_TTL_S = 86_400
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


# OWASP's recommended minimum for argon2id (Password Storage Cheat Sheet): 19 MiB,
# 2 passes, 1 lane. About 35 ms per verification on one core.
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 19_456
ARGON2_PARALLELISM = 1
# The most memory the concurrent password verifications of one worker may take.
MAX_LOGIN_MEMORY_KIB = 512 * 1024
# What uvicorn reads for the peers whose X-Forwarded-* headers it trusts.
UVICORN_TRUSTED_ENV = "FORWARDED_ALLOW_IPS"


class SettingsError(RuntimeError):
    """The configuration cannot be used; the message says what to set."""


def _split(value: Any) -> Any:
    """A comma- or space-separated environment value as a list (lists pass through)."""
    if isinstance(value, str):
        return [item for item in value.replace(",", " ").split() if item]
    return value


def parse_trusted_proxies(value: Any) -> list[str]:
    """Normalise ``TABSERVE_TRUSTED_PROXIES``: IP addresses or CIDR networks.

    Raises:
        ValueError: for anything that is not an address or a network (``*`` included:
            trusting every peer would let any client choose its own address).
    """
    networks = []
    for item in _split(value) or []:
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP address or CIDR network (e.g. 10.0.0.0/8); "
                "'*' is refused: list the proxies' networks"
            ) from None
    return networks


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
    # The longest BentoML's dispatcher may hold a request back for others to join its
    # batch when no batch is running (tabserve/serving/bentoml_fixes.py: its learned wait
    # otherwise outlives the load it was learned from).
    batch_max_wait_ms: float = Field(default=1.0, ge=0, le=60_000)


class ServerSettings(BaseSettings):
    """Process-level knobs read when ``service.py`` is imported (environment only).

    BentoML fixes the number of workers and its access log in the ``@bentoml.service``
    decorator, and uvicorn reads its trusted proxies when each worker starts, right
    after importing the service; so these are read at import, from the environment,
    with no other I/O.

    Attributes:
        workers: BentoML worker processes (an integer, or ``cpu_count``); each runs
            the model with one XGBoost thread.
        access_log: ``errors`` (default): BentoML's access log off, and each 4xx/5xx
            answer logged by tabserve's gateway with its request id; ``all``: BentoML's
            access log line for every request as well.
        trusted_proxies: peers (addresses or CIDR networks) whose ``X-Forwarded-For``
            and ``X-Forwarded-Proto`` are believed; empty: nobody's, the socket peer
            is the client.
    """

    model_config = SettingsConfigDict(env_prefix="TABSERVE_", extra="ignore")

    workers: int | Literal["cpu_count"] = 1
    # BentoML's access log, a line for every request (`all`), or only tabserve's line
    # for each 4xx/5xx answer, with its request id (`errors`: cheaper, see the README).
    access_log: Literal["errors", "all"] = "errors"
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError("must be between 1 and 64, or cpu_count")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> list[str]:
        return parse_trusted_proxies(value)

    def apply_trusted_proxies(self) -> str | None:
        """Make uvicorn trust exactly :attr:`trusted_proxies` (and no one by default).

        uvicorn rewrites each request's client address and scheme from
        ``X-Forwarded-For``/``X-Forwarded-Proto`` when the peer is in
        ``FORWARDED_ALLOW_IPS``, which it reads when a worker builds its config, right
        after importing the service; its own default trusts 127.0.0.1, which would let
        any local process (or a sidecar that is no proxy) choose its client address.
        ``TABSERVE_TRUSTED_PROXIES`` is the one setting: it replaces any other value.

        Returns:
            A warning to log when ``FORWARDED_ALLOW_IPS`` held another value, else None.
        """
        wanted = ",".join(self.trusted_proxies)
        current = os.environ.get(UVICORN_TRUSTED_ENV)
        os.environ[UVICORN_TRUSTED_ENV] = wanted
        if current is not None and current != wanted:
            return (
                f"{UVICORN_TRUSTED_ENV}={current!r} replaced by TABSERVE_TRUSTED_PROXIES="
                f"{wanted!r}: set the trusted proxies with TABSERVE_TRUSTED_PROXIES"
            )
        return None


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
        jwt_previous_secrets: earlier HS256 secrets still accepted for verification
            (comma-separated), during a key rotation; tokens are signed with the current one.
        jwt_previous_public_key_files: earlier RS256 public keys still accepted.
        login_max_failures: failed logins tolerated per user and client in the window
            (ten times as many per client, whatever the user names).
        login_window_s: moving window of the failed-login throttle.
        login_concurrency: password verifications running at once in one worker.
        login_queue_timeout_s: how long a login waits for a verification slot before it
            is refused (429, ``busy``).
        argon2_time_cost: argon2id passes of new hashes (OWASP: 2).
        argon2_memory_kib: argon2id memory of new hashes, KiB (OWASP: 19,456).
        argon2_parallelism: argon2id lanes of new hashes (OWASP: 1).
        state_url: where the login throttle and revoked tokens live: ``memory://`` (this
            worker only) or ``redis://host:port/db`` (shared by all workers and replicas).
        state_max_keys: most throttle keys and revoked ids the memory store tracks.
        log_level: level of the ``tabserve.*`` loggers (BentoML sets the root to WARNING).
        log_format: ``text`` (BentoML's lines, the default) or ``json`` (one JSON object a
            line with time, level, logger, message, request id and trace id; see
            ``tabserve/serving/logs.py``).
        ui_enabled: serve the browser UI at ``/ui`` (built when a worker starts).
        ui_session_ttl_s: lifetime of a browser session of the ``/ui`` (its cookie and token).
        ui_session_audience: ``aud`` claim of session tokens; differs from the API's, so a
            session cookie is never accepted as an API bearer token, nor the reverse.
        ui_cookie_secure: mark the session cookie ``Secure``; by default it is secure in
            production and whenever the request itself came over https.
        ui_max_upload_bytes: largest CSV the batch tab accepts (also capped by
            ``max_body_bytes``, see :attr:`ui_upload_limit_bytes`).
        ui_batch_max_rows: most rows the batch tab scores in one file.
        drift_enabled: keep a rolling window of served rows and publish its drift
            against the training reference (``tabserve/core/drift.py``).
        drift_window_rows: most rows in each worker's window.
        drift_window_s: rows older than this leave the window too (None: rows only).
        drift_min_rows: the PSI gauges appear once a window holds this many rows (a
            sample of n rows from the training distribution itself has a PSI of about
            ``(bins - 1) / n`` over 10 bins: 0.02 at 500 rows, well under the alert's 0.2).
        drift_publish_interval_s: how often the drift gauges are recomputed, at most.
        inference_log_dir: write every served row and answer as JSON lines here
            (``tabserve/serving/inference_log.py``); None (the default): no inference log.
        inference_log_max_bytes: size at which an inference log file is rotated.
        inference_log_backups: rotated inference log files kept.
        shutdown_grace_s: on SIGTERM, how long requests in flight may take to finish
            before the server stops (``bentoml serve --timeout-graceful-shutdown``); keep
            it below the orchestrator's kill timeout (Kubernetes: 30 s by default).
    """

    env: Literal["development", "production"] = "development"

    jwt_secret: SecretStr | None = None
    jwt_secret_file: Path | None = None
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_private_key_file: Path | None = None
    jwt_public_key_file: Path | None = None
    jwt_issuer: str = Field(default="tabserve", min_length=1)
    jwt_audience: str = Field(default="tabserve-api", min_length=1)
    token_ttl_s: int = Field(default=900, ge=30, le=MAX_TOKEN_TTL_S)
    jwt_leeway_s: int = Field(default=10, ge=0, le=120)

    users_file: Path | None = None
    local_dir: Path = DEFAULT_LOCAL_DIR

    max_rows: int = Field(default=1000, ge=1, le=1_000_000)
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    jwt_previous_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    jwt_previous_public_key_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_window_s: int = Field(default=300, ge=1, le=86_400)
    login_concurrency: int = Field(default=1, ge=1, le=64)
    login_queue_timeout_s: float = Field(default=5.0, ge=0.1, le=120)
    argon2_time_cost: int = Field(default=ARGON2_TIME_COST, ge=1, le=50)
    argon2_memory_kib: int = Field(default=ARGON2_MEMORY_KIB, ge=8, le=MAX_LOGIN_MEMORY_KIB)
    argon2_parallelism: int = Field(default=ARGON2_PARALLELISM, ge=1, le=16)
    state_url: str = MEMORY_URL
    state_max_keys: int = Field(default=DEFAULT_MAX_KEYS, ge=100, le=10_000_000)

    ui_enabled: bool = True
    ui_session_ttl_s: int = Field(default=3600, ge=60, le=MAX_TOKEN_TTL_S)
    ui_session_audience: str = Field(default="tabserve-ui", min_length=1)
    ui_cookie_secure: bool | None = None
    ui_max_upload_bytes: int = Field(default=960 * 1024, ge=1024, le=1 << 30)
    ui_batch_max_rows: int = Field(default=10_000, ge=1, le=1_000_000)

    shutdown_grace_s: int = Field(default=20, ge=1, le=3600)

    drift_enabled: bool = True
    drift_window_rows: int = Field(default=1000, ge=10, le=1_000_000)
    drift_window_s: float | None = Field(default=None, gt=0)
    drift_min_rows: int = Field(default=500, ge=1)
    drift_publish_interval_s: float = Field(default=1.0, ge=0)
    inference_log_dir: Path | None = None
    inference_log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    inference_log_backups: int = Field(default=5, ge=0, le=1000)

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        if self.jwt_algorithm == "RS256" and self.jwt_public_key_file is None:
            raise ValueError("RS256 needs TABSERVE_JWT_PUBLIC_KEY_FILE")
        # The secret itself is resolved lazily (``signing_key``): the users CLI does not
        # need it, while the service resolves it at start-up so a bad one stops it there.
        return self

    @field_validator("jwt_previous_secrets", "jwt_previous_public_key_files", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("state_url")
    @classmethod
    def _state_url(cls, value: str) -> str:
        return check_state_url(value)

    @model_validator(mode="after")
    def _check_login_memory(self) -> Settings:
        worst = self.login_concurrency * self.argon2_memory_kib
        if worst > MAX_LOGIN_MEMORY_KIB:
            raise ValueError(
                f"TABSERVE_LOGIN_CONCURRENCY x TABSERVE_ARGON2_MEMORY_KIB is {worst // 1024} MiB "
                f"per worker, over {MAX_LOGIN_MEMORY_KIB // 1024} MiB: a login flood would "
                "take that much memory; lower one of them"
            )
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
            return read_private_file(self.jwt_private_key_file, "TABSERVE_JWT_PRIVATE_KEY_FILE")
        return check_secret(self._raw_secret())

    @cached_property
    def verification_key(self) -> str:
        """The key tokens are verified with (HS256 secret or RS256 public key PEM)."""
        if self.jwt_algorithm == "RS256":
            assert self.jwt_public_key_file is not None  # checked by the validator
            return read_private_file(self.jwt_public_key_file, "TABSERVE_JWT_PUBLIC_KEY_FILE")
        return self.signing_key

    @cached_property
    def key_id(self) -> str:
        """The ``kid`` header of issued tokens: identifies the verification key.

        Derived from the key (sha256 of a fixed prefix and the key, first 16 hex digits),
        so it changes when the key is rotated and tokens signed with an earlier key are
        told apart; it reveals nothing usable about an HS256 secret.
        """
        return self._kid(self.verification_key)

    def _kid(self, key: str) -> str:
        digest = hashlib.sha256(b"tabserve-kid\0" + key.encode()).hexdigest()
        return f"{self.jwt_algorithm.lower()}-{digest[:16]}"

    @cached_property
    def verification_keys(self) -> dict[str, str]:
        """Every key a token may be verified with, by ``kid``: the current key first,
        then the previous ones still listed (``TABSERVE_JWT_PREVIOUS_SECRETS`` for HS256,
        ``TABSERVE_JWT_PREVIOUS_PUBLIC_KEY_FILES`` for RS256).

        Raises:
            SettingsError: for a previous secret that is short or a placeholder, or a
                previous public key file that cannot be read.
        """
        keys = {self.key_id: self.verification_key}
        if self.jwt_algorithm == "RS256":
            for path in self.jwt_previous_public_key_files:
                key = read_private_file(path, "TABSERVE_JWT_PREVIOUS_PUBLIC_KEY_FILES")
                keys.setdefault(self._kid(key), key)
        else:
            for secret in self.jwt_previous_secrets:
                previous = check_secret(secret.get_secret_value())
                keys.setdefault(self._kid(previous), previous)
        return keys

    @property
    def longest_token_ttl_s(self) -> int:
        """The longest any token may stay valid (``tabserve token --ttl`` included), with
        the clock-skew leeway: how long to keep a revocation whose expiry is unknown."""
        return MAX_TOKEN_TTL_S + self.jwt_leeway_s

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
        if not explicit and not path.is_file():
            raise SettingsError(
                f"no JWT secret: {path} does not exist "
                "(run `tabserve init-local` to create a local one)"
            )
        return read_private_file(path, "TABSERVE_JWT_SECRET_FILE").strip()


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


def _problems(exc: ValidationError) -> str:
    """One line naming each variable at fault (``TABSERVE_MAX_ROWS: ...``)."""
    return "; ".join(
        f"TABSERVE_{'_'.join(str(p) for p in err['loc']).upper() or '?'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    )


def load_settings() -> Settings:
    """Read :class:`Settings` from the environment.

    Raises:
        SettingsError: with one readable message for any invalid or missing value.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(f"invalid settings: {_problems(exc)}") from None


def load_server_settings() -> ServerSettings:
    """Read the workers and trusted proxies; an invalid value stops the import clearly."""
    try:
        return ServerSettings()
    except ValidationError as exc:
        raise SettingsError(f"invalid server settings: {_problems(exc)}") from None


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


def read_private_file(path: Path, variable: str) -> str:
    """The text of a key or secret file, or a :class:`SettingsError` naming it and the fix.

    Raises:
        SettingsError: the file is missing, unreadable by this process, or not text.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"{variable}: {path} does not exist") from None
    except PermissionError:
        raise SettingsError(
            f"{variable}: {path} is not readable by this process (uid {os.getuid()}, "
            f"gid {os.getgid()}, groups {sorted(os.getgroups())}): {UNREADABLE_FIX}"
        ) from None
    except IsADirectoryError:
        raise SettingsError(f"{variable}: {path} is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{variable}: {path} cannot be read: {exc}") from None


# How to make a mounted secret readable by the service; the README's image section says more.
UNREADABLE_FIX = (
    "give the service's user or group read access, e.g. mode 0640 and, in a container, "
    '`--group-add "$(stat -c %g FILE)"` (Kubernetes: a Secret volume with defaultMode 0440 '
    "and the pod's fsGroup)"
)


def check_startup(settings: Settings | None = None) -> list[str]:
    """Everything a server needs before it may start: settings, key, users file.

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

    settings = settings or load_settings()
    production = settings.env == "production"
    explicit_key = settings.jwt_secret is not None or settings.jwt_secret_file is not None
    if production or explicit_key or settings.jwt_algorithm == "RS256":
        _ = settings.verification_keys
    users = settings.resolved_users_file
    if not production and not users.exists():
        return [
            f"the users file {users} does not exist: nobody can log in "
            "(create users with `tabserve users add NAME --scopes predict`)"
        ]
    check_users_file(users)
    return []
