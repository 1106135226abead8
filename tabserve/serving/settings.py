"""The serving section of the settings, and :class:`Settings`: every section in one object.

``Settings`` is what a worker reads once at start-up: the security section
(``tabserve/security/settings.py``), the HTTP section (``tabserve/http/settings.py``), the
record section (``tabserve/record/settings.py``) and the sections below (model, logs, UI,
drift, inference log, shutdown). A few knobs are fixed by BentoML's decorators when
``service.py`` is imported (batching, workers, access log, trusted proxies): they are read
then, from the environment only (:class:`BatchingSettings`, :class:`ServerSettings`,
:func:`model_tag_from_env`).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

from tabserve.core.config import SettingsError, load_section, section_config, split_list
from tabserve.http.settings import EdgeSettings
from tabserve.record.settings import RecordSettings
from tabserve.security.settings import check_credentials

# What uvicorn reads for the peers whose X-Forwarded-* headers it trusts.
UVICORN_TRUSTED_ENV = "FORWARDED_ALLOW_IPS"


def parse_trusted_proxies(value: Any) -> list[str]:
    """Normalise ``TABSERVE_TRUSTED_PROXIES``: IP addresses or CIDR networks.

    Raises:
        ValueError: for anything that is not an address or a network (``*`` included:
            trusting every peer would let any client choose its own address).
    """
    networks = []
    for item in split_list(value) or []:
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
    decorator, so these are read from the environment at import time (no other I/O).
    """

    model_config = section_config()

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
            answer logged by tabserve's envelope with its request id; ``all``: BentoML's
            access log line for every request as well.
        trusted_proxies: peers (addresses or CIDR networks) whose ``X-Forwarded-For``
            and ``X-Forwarded-Proto`` are believed; empty: nobody's, the socket peer
            is the client.
        max_url_bytes: the longest URL accepted (414 beyond).
        max_header_bytes: the most header bytes, names and values, accepted (431 beyond).
        max_headers: the most header fields accepted (431 beyond).
        header_timeout_s: how long a client may take to send a request's line and headers
            (408 and the connection closed beyond; ``tabserve/serving/http_limits.py``).
    """

    model_config = section_config()

    workers: int | Literal["cpu_count"] = 1
    access_log: Literal["errors", "all"] = "errors"
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_url_bytes: int = Field(default=8 * 1024, ge=256, le=1 << 20)
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1 << 20)
    max_headers: int = Field(default=100, ge=10, le=10_000)
    header_timeout_s: float = Field(default=10.0, ge=0.5, le=600)

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
    """Which model the service serves, and its shadow; read at import too (BentoML takes
    the model references when ``service.py`` defines its class), and part of
    :class:`Settings`.

    Attributes:
        model_tag: the BentoML model answered with.
        shadow_model: a second BentoML model that scores every row the champion answered,
            off the response path, its answers recorded beside the champion's
            (``tabserve/serving/shadow.py``; needs ``record_url``); None: no shadow.
        shadow_max_share: the most of the time each worker's shadow thread may spend
            scoring (it sheds rows beyond).
        shadow_queue_rows: the most rows waiting for the shadow, per worker; more are shed.
    """

    model_config = section_config()

    model_tag: str = Field(default="tabserve:latest", min_length=1)
    shadow_model: str | None = None
    shadow_max_share: float = Field(default=0.1, gt=0, le=1)
    shadow_queue_rows: int = Field(default=10_000, ge=10, le=1_000_000)

    @field_validator("shadow_model")
    @classmethod
    def _no_blank_shadow(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class UISettings(BaseSettings):
    """The browser UI mounted at ``/ui`` (its sessions are the security section's).

    Attributes:
        ui_enabled: serve the browser UI at ``/ui`` (built when a worker starts).
        ui_max_upload_bytes: largest CSV the batch tab accepts (also capped by
            ``max_body_bytes``, see :attr:`Settings.ui_upload_limit_bytes`).
        ui_batch_max_rows: most rows the batch tab scores in one file.
    """

    model_config = section_config()

    ui_enabled: bool = True
    ui_max_upload_bytes: int = Field(default=960 * 1024, ge=1024, le=1 << 30)
    ui_batch_max_rows: int = Field(default=10_000, ge=1, le=1_000_000)


class MonitoringSettings(BaseSettings):
    """Logs, the drift window and the inference log.

    Attributes:
        log_level: level of the ``tabserve.*`` loggers (BentoML sets the root to WARNING).
        log_format: ``text`` (BentoML's lines, the default) or ``json`` (one JSON object a
            line with time, level, logger, message, request id and trace id; see
            ``tabserve/serving/logs.py``).
        drift_enabled: keep a rolling window of served rows and publish its drift
            against the training reference (``tabserve/core/drift.py``).
        drift_window_rows: most rows in each worker's window.
        drift_window_s: rows older than this leave the window too (None: rows only).
        drift_min_rows: the PSI gauges appear once a window holds this many rows (a
            sample of n rows from the training distribution itself has a PSI of about
            ``(bins - 1) / n`` over 10 bins: 0.02 at 500 rows, well under the alert's 0.2).
        drift_publish_interval_s: how often the drift gauges are recomputed: at most this
            often on the request path, and this long after the last rows came in at the
            latest (a thread per worker), so a scrape after traffic stops reads every row
            served; 0: on every model call.
        inference_log_dir: write every served row and answer as JSON lines here
            (``tabserve/serving/inference_log.py``); None (the default): no inference log.
        inference_log_max_bytes: size at which an inference log file is rotated.
        inference_log_backups: rotated inference log files kept.
        inference_log_warn_interval_s: at most one warning about rows the inference log
            could not write (a full disk) per this many seconds; each lost row is counted.
    """

    model_config = section_config()

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    drift_enabled: bool = True
    drift_window_rows: int = Field(default=1000, ge=10, le=1_000_000)
    drift_window_s: float | None = Field(default=None, gt=0)
    drift_min_rows: int = Field(default=500, ge=1)
    drift_publish_interval_s: float = Field(default=1.0, ge=0)
    inference_log_dir: Path | None = None
    inference_log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    inference_log_backups: int = Field(default=5, ge=0, le=1000)
    inference_log_warn_interval_s: float = Field(default=60.0, ge=0.1, le=86_400)


class Settings(ModelSettings, UISettings, MonitoringSettings, RecordSettings, EdgeSettings):
    """Everything the service, the token endpoint and the CLI read, one section each.

    Attributes:
        shutdown_grace_s: on SIGTERM, how long requests in flight may take to finish
            before the server stops (``bentoml serve --timeout-graceful-shutdown``); keep
            it below the orchestrator's kill timeout (Kubernetes: 30 s by default).
    """

    model_config = section_config()

    shutdown_grace_s: int = Field(default=20, ge=1, le=3600)

    @property
    def ui_upload_limit_bytes(self) -> int:
        """The batch tab's CSV size limit, kept under the service-wide body limit.

        Every request, uploads included, passes the envelope's ``max_body_bytes``
        check; the multipart envelope around the file needs some headroom.
        """
        headroom = min(64 * 1024, self.max_body_bytes // 8)
        return min(self.ui_max_upload_bytes, self.max_body_bytes - headroom)


def load_settings() -> Settings:
    """Read :class:`Settings` from the environment.

    Raises:
        SettingsError: with one readable message for any invalid or missing value.
    """
    return load_section(Settings)


def load_server_settings() -> ServerSettings:
    """Read the workers and trusted proxies; an invalid value stops the import clearly."""
    return load_section(ServerSettings, "server settings")


def load_batching_settings() -> BatchingSettings:
    """Read the batching knobs; an invalid value stops the import with a clear message."""
    return load_section(BatchingSettings, "batching settings")


def model_tag_from_env() -> str:
    """The BentoML model tag to serve, read at service import: :attr:`Settings.model_tag`.

    Raises:
        SettingsError: when ``TABSERVE_MODEL_TAG`` is set but empty.
    """
    return load_section(ModelSettings, "model settings").model_tag


def check_startup(settings: Settings | None = None) -> list[str]:
    """What a server needs before it may start (the keys and the users file:
    :func:`~tabserve.security.settings.check_credentials`); the warnings worth logging.

    Raises:
        SettingsError: naming the variable or file at fault and the fix.
    """
    return check_credentials(settings or load_settings())


__all__ = [
    "BatchingSettings",
    "ModelSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "check_startup",
    "load_batching_settings",
    "load_server_settings",
    "load_settings",
    "model_tag_from_env",
    "parse_trusted_proxies",
]
