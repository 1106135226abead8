"""Request ids, the body limit, the response headers and the one error envelope.

The serving layer stacks the HTTP edge (outermost first) as envelope →
:class:`tabserve.http.auth.AuthMiddleware` → :class:`tabserve.http.body.JsonBodyMiddleware`
→ :class:`tabserve.http.openapi.OpenAPIMiddleware`.

:class:`EnvelopeMiddleware` gives every request an id (BentoML's request/span
  id, which its log lines carry too), enforces the body-size limit, adds the
  ``X-Request-ID`` and ``X-Model-Version`` headers, turns every
  :class:`~tabserve.core.errors.ServiceError` into the envelope, and rewrites error
  bodies produced elsewhere (router 404/405, BentoML's own 4xx/5xx) into it. An
  unexpected exception is logged with its stack trace and answered with a bare
  500 envelope. Every error answer is logged once, with its request id (4xx as
  info, 5xx as warnings), so that BentoML's per-request access log can stay off
  (``TABSERVE_ACCESS_LOG=errors``, the default) without losing a failed request.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from tabserve.core.errors import (
    InternalError,
    NotReadyError,
    PayloadTooLargeError,
    ServiceError,
    envelope_bytes,
    error_for_status,
    is_envelope,
)
from tabserve.core.log_text import printable
from tabserve.http.instance import StateProvider
from tabserve.http.requests import REQUEST_ID, request_state
from tabserve.http.requests import headers as request_headers
from tabserve.http.settings import HttpSettings

logger = logging.getLogger("tabserve.gateway")

REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"
_MAX_ERROR_BODY = 64 * 1024  # foreign error bodies are buffered up to this size only


def new_request_id() -> str:
    """A fresh request id: 64 random bits in hex (the serving layer gives BentoML's)."""
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
        request_ids: gives the current request its id (the serving layer's shares it with
            BentoML's log lines); a fresh random one by default.
    """

    def __init__(
        self,
        app: Any,
        state: StateProvider,
        request_ids: Callable[[], str] = new_request_id,
    ) -> None:
        self.app = app
        self.state = state
        self.request_ids = request_ids

    def _request_id(self) -> str:
        try:
            return self.request_ids()
        except Exception:  # the id is best effort; never fail a request over it
            logger.debug("no request id from %r", self.request_ids, exc_info=True)
        return new_request_id()

    def _max_body_bytes(self) -> int:
        serving = self.state()
        if serving is None:  # before start-up completes: the documented default
            return int(HttpSettings.model_fields["max_body_bytes"].default)
        return serving.settings.max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._request_id()
        request_state(scope)[REQUEST_ID] = request_id
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

        declared = request_headers(scope).get("content-length")
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
                printable(scope.get("method"), 16),
                printable(scope.get("path")),
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
                printable(error_text.get("code"), 64),
                printable(error_text.get("message"), 500),
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
            printable(scope.get("method"), 16),
            printable(scope.get("path")),
            error.status,
            error.code,
            printable(error.message, 500),
            request_id,
        )


def _with_headers(send: Any, extra: list[tuple[bytes, bytes]]) -> Any:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped
