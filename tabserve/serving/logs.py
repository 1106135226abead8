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
import random
import sys
import threading
from types import TracebackType
from typing import Any, Literal

from tabserve.serving.bentoml_private import id_formats, trace_context

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
    context = trace_context()
    request, trace = context.request_id, context.trace_id
    if not request and not trace:  # 0: the invalid span of a disabled tracer
        return None, None
    formats = id_formats()
    return (
        format(request, formats["span_id"]) if request else None,
        format(trace, formats["trace_id"]) if trace else None,
    )


def request_id() -> str | None:
    """BentoML's id of the current request (what its log lines and ``X-Request-ID``
    carry), or None outside a request."""
    return trace_ids()[0]


def assign_request_id() -> str:
    """Give the current request an id when tracing gave it none; return it.

    BentoML takes a request's id from its OpenTelemetry span. With tracing off
    (``OTEL_SDK_DISABLED=true``, the default without an exporter: see
    :mod:`tabserve.serving.tracing`) every span is the invalid one, whose id is 0, so every
    request would share the id ``0000000000000000``. This sets 64 random bits (what
    OpenTelemetry's own id generator draws) as BentoML's request id instead, in the
    request's context: BentoML's response headers and log lines, the error envelope,
    ``X-Request-ID`` and the JSON log lines then all carry the same id.
    """
    current = request_id()
    if current is not None:
        return current
    value = random.getrandbits(64) or 1
    trace_context().request_id = value
    return format(value, id_formats()["span_id"])


class RequestIdInText(logging.Filter):
    """Appends ``(request_id=...)`` to BentoML's text lines that carry no trace.

    BentoML's text format ends each line of a traced request with its trace and span
    ids; with tracing off that suffix is empty, and a line such as BentoML's own
    "Exception on /predict" would name no request. This filter (after BentoML's on the
    same handler) puts the request id there instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Fill an empty ``trace_msg`` with the request id; never drops a record."""
        if getattr(record, "trace_msg", None) == "":
            try:
                current = request_id()
            except Exception:  # an id is best effort: never lose the line over it
                current = None
            if current is not None and f"request_id={current}" not in record.getMessage():
                record.trace_msg = f" (request_id={current})"
        return True


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

    ``text`` keeps BentoML's format, with the request id at the end of a line where
    tracing (off by default) puts no trace ids (:class:`RequestIdInText`). ``json``
    gives each console handler the JSON formatter and the :class:`TraceFields` filter,
    and sends Python warnings and uncaught exceptions (main and other threads) through
    logging. Idempotent. Without
    any console handler (not under ``bentoml serve``), a stderr handler on the root
    logger is added first, so JSON is still what comes out.

    Returns:
        The number of handlers that now write JSON (0 for ``text``).
    """
    if log_format == "text":
        for handler in _console_handlers():
            if not any(isinstance(f, RequestIdInText) for f in handler.filters):
                handler.addFilter(RequestIdInText())
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
