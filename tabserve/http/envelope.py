"""The HTTP edge of the service: request ids, body limits, JSON body checks, one envelope.

Two pure ASGI middlewares; ``service.py`` adds them (outermost first) as
envelope → :class:`tabserve.auth.AuthMiddleware` → JSON body →
:class:`tabserve.http.openapi.OpenAPIMiddleware`:

- :class:`EnvelopeMiddleware` gives every request an id (BentoML's request/span
  id, which its log lines carry too), enforces the body-size limit, adds the
  ``X-Request-ID`` and ``X-Model-Version`` headers, turns every
  :class:`~tabserve.core.errors.ServiceError` into the envelope, and rewrites error
  bodies produced elsewhere (router 404/405, BentoML's own 4xx/5xx) into it. An
  unexpected exception is logged with its stack trace and answered with a bare
  500 envelope. Every error answer is logged once, with its request id (4xx as
  info, 5xx as warnings), so that BentoML's per-request access log can stay off
  (``TABSERVE_ACCESS_LOG=errors``, the default) without losing a failed request.
- :class:`JsonBodyMiddleware` guards the JSON APIs (``/predict``, ``/explain``):
  content type (415), JSON syntax (400), row count (413) and the schema (422),
  so that a bad request never reaches the adaptive batch it would otherwise fail.
  The body is parsed once: the validated rows reach the API through
  :data:`ValidatedRows`, not through a second parse by BentoML.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import ValidatorFunctionWrapHandler, WrapValidator

from tabserve.core.errors import (
    InternalError,
    NotReadyError,
    PayloadTooLargeError,
    ServiceError,
    UnsupportedMediaTypeError,
    envelope_bytes,
    error_for_status,
    is_envelope,
)
from tabserve.core.validation import RequestValidator
from tabserve.serving import logs
from tabserve.settings import Settings

if TYPE_CHECKING:
    from tabserve.serving.monitor import Monitor

logger = logging.getLogger("tabserve.gateway")

REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"
JSON_API_PATHS = frozenset({"/predict", "/explain"})
_MAX_ERROR_BODY = 64 * 1024  # foreign error bodies are buffered up to this size only


class ServingState(Protocol):
    """What the middlewares need from the loaded service instance."""

    @property
    def model_version(self) -> str:
        """The version callers see in ``X-Model-Version``."""

    @property
    def validator(self) -> RequestValidator:
        """The request validator built from the model's schema."""

    @property
    def settings(self) -> Settings:
        """The worker's settings (keys, limits), loaded when the service started."""

    @property
    def monitor(self) -> Monitor:
        """What records model calls (the inference log among them)."""


StateProvider = Callable[[], "ServingState | None"]


# The body is parsed once: JsonBodyMiddleware validates it into rows, hands them to the
# API's parameter (ValidatedRows) through this context variable, and replays a stand-in
# body that BentoML parses in no time.
_validated_rows: ContextVar[Sequence[Mapping[str, Any]] | None] = ContextVar(
    "tabserve_validated_rows", default=None
)
HANDED_OFF_BODY = b'{"rows":[]}'


def _handed_off(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    rows = _validated_rows.get()
    if rows is not None and value == []:
        return rows
    return handler(value)


ValidatedRows = Annotated[list[Mapping[str, Any]], WrapValidator(_handed_off)]
"""The type of the prediction APIs' ``rows``: the rows the gateway validated (each a
:class:`~tabserve.core.schema.SchemaRow`: its values in schema order, read as a mapping).

BentoML parses each request body into the API's input model. For ``/predict`` and
``/explain`` the :class:`JsonBodyMiddleware` has already parsed and validated the body
into rows (one pydantic-core pass, :meth:`RequestValidator.validated_rows`); it replays
``{"rows":[]}`` to BentoML, and this validator gives BentoML's model those rows instead of
the empty list, in the same request's context. Anything else (no rows handed off, say a
direct call) is validated as a plain list of objects.
"""


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _request_id() -> str:
    """BentoML's id of the current request (shared with its log lines); with tracing off,
    a fresh one, made BentoML's too (:func:`tabserve.serving.logs.assign_request_id`)."""
    try:
        return logs.assign_request_id()
    except Exception:  # the id is best effort; never fail a request over it
        logger.debug("no BentoML request id", exc_info=True)
    return uuid.uuid4().hex[:16]


async def send_error(send: Any, error: ServiceError, request_id: str) -> None:
    """Send ``error`` as a complete envelope response."""
    body = envelope_bytes(error, request_id)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def error_response(error: ServiceError) -> Any:
    """A Starlette response carrying ``error``'s envelope (for handlers inside mounted apps).

    The :class:`EnvelopeMiddleware` around it adds the request id headers.
    """
    from starlette.responses import Response

    return Response(
        envelope_bytes(error),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


class EnvelopeMiddleware:
    """Request ids, body limit, response headers and the one error envelope.

    Args:
        app: the wrapped ASGI app.
        state: returns the loaded service instance, or None before it is ready.
    """

    def __init__(self, app: Any, state: StateProvider) -> None:
        self.app = app
        self.state = state

    def _max_body_bytes(self) -> int:
        serving = self.state()
        if serving is None:  # before start-up completes: the documented default
            return int(Settings.model_fields["max_body_bytes"].default)
        return serving.settings.max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = False
        discarding = False  # the rest of a rewritten error body is dropped
        pending_error: dict[str, Any] | None = None  # a foreign error response being buffered
        error_chunks: list[bytes] = []
        limit = self._max_body_bytes()
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(
                        f"the request body is over the limit of {limit} bytes"
                    )
            return message

        def extra_headers() -> list[tuple[bytes, bytes]]:
            headers = [(REQUEST_ID_HEADER.lower().encode(), request_id.encode())]
            serving = self.state()
            if serving is not None:
                headers.append(
                    (MODEL_VERSION_HEADER.lower().encode(), serving.model_version.encode())
                )
            return headers

        async def wrapped_send(message: dict[str, Any]) -> None:
            nonlocal started, pending_error, discarding
            if discarding:
                return
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"x-request-id", b"x-model-version")
                ]
                message = {**message, "headers": headers + extra_headers()}
                if message["status"] >= 400:
                    pending_error = message  # decide once the body is known
                    return
                await send(message)
                return
            if message["type"] == "http.response.body" and pending_error is not None:
                error_chunks.append(message.get("body", b""))
                if message.get("more_body", False) and sum(map(len, error_chunks)) < (
                    _MAX_ERROR_BODY
                ):
                    return
                await self._finish_error(send, pending_error, b"".join(error_chunks), request_id)
                pending_error = None
                discarding = bool(message.get("more_body", False))
                return
            await send(message)

        declared = _header(scope, b"content-length")
        try:
            if scope["path"] == "/readyz" and self.state() is None:
                raise NotReadyError("the model is not loaded yet")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes")
            await self.app(scope, limited_receive, wrapped_send)
        except ServiceError as error:
            self._log(scope, request_id, error)
            if started and pending_error is None:
                raise  # the response is already on the wire; nothing sane to add
            await send_error(_with_headers(send, extra_headers()), error, request_id)
        except Exception:
            logger.exception(
                "unhandled error on %s %s [request_id=%s]",
                scope.get("method"),
                scope.get("path"),
                request_id,
            )
            if started and pending_error is None:
                raise
            await send_error(_with_headers(send, extra_headers()), InternalError(), request_id)

    async def _finish_error(
        self, send: Any, start: dict[str, Any], body: bytes, request_id: str
    ) -> None:
        """Send a buffered error response, rewritten into the envelope if it is not one."""
        status = int(start["status"])
        if is_envelope(body):
            data = json.loads(body)
            error_text = data["error"]
            logger.log(
                logging.WARNING if status >= 500 else logging.INFO,
                "answering %d %s: %s [request_id=%s]",
                status,
                error_text.get("code"),
                error_text.get("message"),
                request_id,
            )
            data["error"].setdefault("request_id", request_id)
            body = json.dumps(data).encode("utf-8")
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        error = error_for_status(status)
        if status == 503:
            error = NotReadyError("the service is not ready or is overloaded; retry shortly")
        logger.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "answering %d %s [request_id=%s] (rewrote a non-envelope error body)",
            status,
            error.code,
            request_id,
        )
        new_body = envelope_bytes(error, request_id)
        kept = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-type", b"content-length")
        ]
        kept += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        kept += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(new_body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": kept})
        await send({"type": "http.response.body", "body": new_body, "more_body": False})

    @staticmethod
    def _log(scope: dict[str, Any], request_id: str, error: ServiceError) -> None:
        logger.log(
            logging.WARNING if error.status >= 500 else logging.INFO,
            "%s %s -> %d %s: %s [request_id=%s]",
            scope.get("method"),
            scope.get("path"),
            error.status,
            error.code,
            error.message,
            request_id,
        )


def _with_headers(send: Any, extra: list[tuple[bytes, bytes]]) -> Any:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


class JsonBodyMiddleware:
    """Checks and validates the JSON body of the prediction APIs before BentoML sees it.

    Args:
        app: the wrapped ASGI app.
        state: returns the loaded service instance, or None before it is ready.
        paths: the JSON API paths to guard.
    """

    def __init__(
        self, app: Any, state: StateProvider, paths: frozenset[str] = JSON_API_PATHS
    ) -> None:
        self.app = app
        self.state = state
        self.paths = paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        media_type = (_header(scope, b"content-type") or "application/json").split(";")[0]
        media_type = media_type.strip().lower()
        if media_type != "application/json":
            raise UnsupportedMediaTypeError(
                f"content type {media_type!r} is not accepted; send application/json"
            )
        serving = self.state()
        if serving is None:
            raise NotReadyError("the model is not loaded yet")
        body = await _read_body(receive)
        rows = serving.validator.validated_rows(body)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-length",)] + [
            (b"content-length", str(len(HANDED_OFF_BODY)).encode())
        ]
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": HANDED_OFF_BODY, "more_body": False}
            result: dict[str, Any] = await receive()  # only http.disconnect remains
            return result

        token = _validated_rows.set(rows)
        try:
            if not serving.monitor.logging_rows:
                await self.app({**scope, "headers": headers}, replay, send)
                return
            # The inference log: each request's own rows and answers, written once it was
            # answered 200 (adaptive batching merges requests before the API function
            # runs, so this is the one place that knows which rows and answers are whose).
            status = 0
            chunks: list[bytes] = []

            async def keep(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                elif message["type"] == "http.response.body" and status == 200:
                    chunks.append(message.get("body", b""))
                await send(message)

            await self.app({**scope, "headers": headers}, replay, keep)
        finally:
            _validated_rows.reset(token)
        if status == 200:
            serving.monitor.log_rows(
                rows,
                json.loads(b"".join(chunks)),
                request_id=scope.get("state", {}).get("request_id"),
                endpoint=scope["path"].strip("/"),
            )


async def _read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
