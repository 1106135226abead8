"""What every process of ``bentoml serve`` does when it imports ``service.py``: one call.

:func:`prepare_process` reads the settings once (the worker's ``__init__`` reuses them),
switches the log format, checks the keys and the users file, reads the knobs BentoML's
decorators fix at import (batching, workers, access log), makes uvicorn trust exactly
the configured proxies and parse with the URL and header limits
(``tabserve/serving/http_limits.py``), and installs the BentoML fixes before BentoML
builds its app.
BentoML's supervisor restarts a worker whose start-up fails, forever: an invalid setting
or an unusable secret or users file must stop ``bentoml serve`` itself, with the fix in
the message and no stack trace (``SystemExit``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tabserve.core.config import SettingsError
from tabserve.serving import bentoml_fixes, http_limits
from tabserve.serving.logs import configure_logging
from tabserve.serving.settings import (
    BatchingSettings,
    ServerSettings,
    Settings,
    check_startup,
    load_batching_settings,
    load_server_settings,
    load_settings,
)

logger = logging.getLogger("tabserve.service")


@dataclass(frozen=True)
class Process:
    """The settings this process read at import."""

    settings: Settings
    batching: BatchingSettings
    server: ServerSettings


_process: Process | None = None


def prepare_process() -> Process:
    """Set this process up for serving (module doc); idempotent.

    Raises:
        SystemExit: for an unusable configuration, with the reason and the fix.
    """
    global _process
    if _process is not None:
        return _process
    try:
        settings = load_settings()
        configure_logging(settings.log_format)
        for warning in check_startup(settings):
            logger.warning("%s", warning)
        process = Process(settings, load_batching_settings(), load_server_settings())
    except SettingsError as error:
        raise SystemExit(f"tabserve cannot start: {error}") from None
    # uvicorn reads its trusted proxies and its protocol when each worker starts, after
    # this import.
    if (replaced := process.server.apply_trusted_proxies()) is not None:
        logger.warning(replaced)
    server = process.server
    http_limits.install(
        server.max_url_bytes, server.max_header_bytes, server.max_headers, server.header_timeout_s
    )
    # Before BentoML builds the app (tabserve/serving/bentoml_fixes.py).
    bentoml_fixes.apply()
    bentoml_fixes.cap_batch_wait(process.batching.batch_max_wait_ms)
    bentoml_fixes.cache_api_callers()
    _process = process
    return process


def process_settings() -> Settings:
    """The settings :func:`prepare_process` read (read now if it has not run)."""
    return prepare_process().settings
