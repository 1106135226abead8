"""The service's log format: BentoML's text lines (default) or one JSON object a line.

BentoML configures logging itself in every process of ``bentoml serve`` (the
supervisor and each worker call ``configure_server_logging()``, before they import
``service.py``): one stream handler, shared by the root, ``bentoml``, ``uvicorn.error``
and ``circus`` loggers, with a text format that appends the trace and span ids. With
``TABSERVE_LOG_FORMAT=json``, :func:`configure_logging` swaps that handler's formatter
for python-json-logger's, so every line a process writes through logging (BentoML's,
uvicorn's, the access log, tabserve's) is a JSON object::

    {"level": "INFO", "logger": "tabserve.gateway", "message": "...",
     "request_id": "41b837c6b053c2b0", "trace_id": "0ebede28...", "component":
     "entry_service:tabserve:1", "time": "2026-12-01T19:09:08.123456+00:00"}

``request_id`` is BentoML's id of the current request (the ``X-Request-ID`` the
client gets, see :func:`request_id`), ``trace_id`` its OpenTelemetry trace id; both
are null outside a request. Python warnings and uncaught exceptions are routed
through logging too, so they come out as JSON lines as well.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType
from typing import Any, Literal

LogFormat = Literal["text", "json"]

# Attributes BentoML's TraceRecordFilter and uvicorn add for their text formats: the
# JSON line has its own fields for what they carry, so they are left out.
_TEXT_ONLY_ATTRIBUTES = ("levelname_bracketed", "trace_msg", "service_name", "color_message")
_RENAMED = {"levelname": "level", "name": "logger"}
_FIELDS = ("levelname", "name", "message", "request_id", "trace_id", "component")
_uncaught_logger = logging.getLogger("tabserve.uncaught")


def trace_ids() -> tuple[str | None, str | None]:
    """``(request id, trace id)`` of the request being served, as BentoML prints them
    (hex, ``api_server.logging.access.format``); ``(None, None)`` outside a request."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.context import trace_context

    request, trace = trace_context.request_id, trace_context.trace_id
    if request is None and not trace:
        return None, None
    formats = BentoMLContainer.logging_formatting.get()
    return (
        None if request is None else format(request, formats["span_id"]),
        format(trace, formats["trace_id"]) if trace else None,
    )


def request_id() -> str | None:
    """BentoML's id of the current request (what its log lines and ``X-Request-ID``
    carry), or None outside a request."""
    return trace_ids()[0]


class TraceFields(logging.Filter):
    """Puts the request id, trace id and BentoML component of a record in fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add ``request_id``, ``trace_id`` and ``component``; never drops a record."""
        try:
            record.request_id, record.trace_id = trace_ids()
        except Exception:  # an id is best effort: never lose the line over it
            record.request_id, record.trace_id = None, None
        # BentoML's own filter has set "[entry_service:tabserve:1]"-style components.
        component = str(getattr(record, "component", "") or "").strip("[]")
        record.component = component or None
        return True


def json_formatter() -> logging.Formatter:
    """python-json-logger's formatter with the fields of a tabserve JSON line."""
    from pythonjsonlogger.core import RESERVED_ATTRS
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        list(_FIELDS),
        rename_fields=_RENAMED,
        reserved_attrs=[*RESERVED_ATTRS, *_TEXT_ONLY_ATTRIBUTES],
        timestamp="time",  # ISO 8601, UTC, microseconds
    )


def _console_handlers() -> list[logging.Handler]:
    """The handlers writing to a stream (not a file), on the root and every logger."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                found.setdefault(id(handler), handler)
    return list(found.values())


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    _uncaught_logger.critical("uncaught exception", exc_info=(kind, value, traceback))


def _log_uncaught_in_thread(args: Any) -> None:
    if args.exc_type is SystemExit:
        return
    _uncaught_logger.critical(
        "uncaught exception in thread %s",
        getattr(args.thread, "name", "?"),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def configure_logging(log_format: LogFormat) -> int:
    """Apply ``log_format`` to the console handlers BentoML set up in this process.

    ``text`` leaves BentoML's format as it is. ``json`` gives each console handler the
    JSON formatter and the :class:`TraceFields` filter, and sends Python warnings and
    uncaught exceptions (main and other threads) through logging. Idempotent. Without
    any console handler (not under ``bentoml serve``), a stderr handler on the root
    logger is added first, so JSON is still what comes out.

    Returns:
        The number of handlers that now write JSON (0 for ``text``).
    """
    if log_format == "text":
        return 0
    handlers = _console_handlers()
    if not handlers:
        fallback = logging.StreamHandler()
        logging.getLogger().addHandler(fallback)
        handlers = [fallback]
    for handler in handlers:
        handler.setFormatter(json_formatter())
        if not any(isinstance(f, TraceFields) for f in handler.filters):
            handler.addFilter(TraceFields())
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return len(handlers)
