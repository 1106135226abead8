"""Typed domain errors and the one JSON envelope every failure is answered with.

Every error the service can answer is an exception class with an HTTP status and
a stable machine-readable ``code``. One function, :func:`envelope`, renders any of
them as::

    {"error": {"code": "validation_error", "message": "...", "details": [...],
               "request_id": "..."}}

No stack trace, token or password ever goes into a message: the server log keeps
the trace under the same request id.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

ENVELOPE_MEDIA_TYPE = "application/json"


class ServiceError(Exception):
    """Base class of the errors the service answers to a client.

    Attributes:
        status: HTTP status code.
        code: stable, machine-readable error code.
        message: human-readable explanation, safe to show to a client.
        details: optional structured details (e.g. one entry per invalid field).
        headers: extra response headers (e.g. ``WWW-Authenticate``, ``Retry-After``).
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details or []
        self.headers = dict(headers or {})
        super().__init__(self.message)


class MalformedRequestError(ServiceError):
    """The body is not valid JSON (or not the expected JSON structure at all)."""

    status = 400
    code = "malformed_request"
    default_message = "the request body is not valid JSON"


class UnauthenticatedError(ServiceError):
    """No credentials, or credentials that cannot be trusted."""

    status = 401
    code = "unauthenticated"
    default_message = "a valid bearer token is required"

    def __init__(self, message: str | None = None, *, error: str = "invalid_token") -> None:
        # RFC 6750: the challenge tells the client what to do next.
        super().__init__(
            message,
            headers={"WWW-Authenticate": f'Bearer realm="tabserve", error="{error}"'},
        )


class InvalidCredentialsError(ServiceError):
    """Wrong user name or password at the token endpoint."""

    status = 401
    code = "invalid_credentials"
    default_message = "unknown user or wrong password"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="tabserve"'})


class ForbiddenError(ServiceError):
    """A valid token that lacks the scope the route needs."""

    status = 403
    code = "insufficient_scope"
    default_message = "the token lacks the scope this route needs"

    def __init__(self, message: str | None = None, *, scope: str = "") -> None:
        super().__init__(
            message,
            details=[{"required_scope": scope}] if scope else None,
            headers={
                "WWW-Authenticate": f'Bearer realm="tabserve", error="insufficient_scope", '
                f'scope="{scope}"'
            },
        )


class RequestHeaderTimeoutError(ServiceError):
    """The request line and headers did not arrive in time (a slow sender)."""

    status = 408
    code = "request_timeout"
    default_message = "the request's headers did not arrive in time"


class URITooLongError(ServiceError):
    """The URL is over the limit."""

    status = 414
    code = "uri_too_long"
    default_message = "the URL is too long"


class HeadersTooLargeError(ServiceError):
    """The request headers are over the limit (bytes or fields)."""

    status = 431
    code = "headers_too_large"
    default_message = "the request headers are too large"


class CrossOriginError(ServiceError):
    """A state-changing call from another origin than the page's (the browser UI)."""

    status = 403
    code = "cross_origin"
    default_message = "a call from another origin is refused"


class NotFoundError(ServiceError):
    """No such route."""

    status = 404
    code = "not_found"
    default_message = "no such route"


class MethodNotAllowedError(ServiceError):
    """The route exists but not for this HTTP method."""

    status = 405
    code = "method_not_allowed"
    default_message = "this HTTP method is not allowed on this route"


class PayloadTooLargeError(ServiceError):
    """The body is over the byte limit, or carries too many rows."""

    status = 413
    code = "payload_too_large"
    default_message = "the request body is too large"


class UnsupportedMediaTypeError(ServiceError):
    """Any content type other than JSON."""

    status = 415
    code = "unsupported_media_type"
    default_message = "the request body must be application/json"


class RequestValidationError(ServiceError):
    """The JSON is well formed but does not match the model's feature schema."""

    status = 422
    code = "validation_error"
    default_message = "the request does not match the model's feature schema"


class TooManyRequestsError(ServiceError):
    """Throttled (e.g. repeated failed logins)."""

    status = 429
    code = "too_many_requests"
    default_message = "too many requests; retry later"

    def __init__(self, message: str | None = None, *, retry_after_s: int = 60) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))})


class ServerBusyError(TooManyRequestsError):
    """Every password-verification slot stayed taken for the whole queue timeout."""

    code = "busy"
    default_message = "too many logins at once; retry in a moment"

    def __init__(self, message: str | None = None, *, retry_after_s: int = 1) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class InternalError(ServiceError):
    """Anything unexpected. The message never carries the exception text."""

    status = 500
    code = "internal_error"
    default_message = "internal server error; the server log has the details"


class NotReadyError(ServiceError):
    """The model is not loaded yet (or the server is overloaded)."""

    status = 503
    code = "not_ready"
    default_message = "the service is not ready"


class RecordUnavailableError(ServiceError):
    """The served-rows record is off (no ``TABSERVE_RECORD_URL``) or cannot be reached."""

    status = 503
    code = "record_unavailable"
    default_message = "the served-rows record is not available"


class RequestTimeoutError(ServiceError):
    """The request took longer than the service's timeout (``traffic.timeout``)."""

    status = 504
    code = "timeout"
    default_message = "the request took too long and was abandoned; retry, or send fewer rows"


_BY_STATUS: dict[int, type[ServiceError]] = {
    400: MalformedRequestError,
    401: UnauthenticatedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: RequestValidationError,
    429: TooManyRequestsError,
    503: NotReadyError,
    504: RequestTimeoutError,
}


def error_for_status(status: int, message: str | None = None) -> ServiceError:
    """The domain error for an HTTP status produced outside tabserve (router, BentoML).

    Args:
        status: the HTTP status of the foreign error response.
        message: optional client-safe message; the class default otherwise.

    Returns:
        An instance of the matching :class:`ServiceError` subclass; a generic one
        carrying ``status`` for statuses without a dedicated class.
    """
    cls = _BY_STATUS.get(status)
    if cls is None:
        error = InternalError(message) if status >= 500 else ServiceError(message or "error")
        error.status = status  # type: ignore[misc]
        if status < 500:
            error.code = "client_error"  # type: ignore[misc]
        return error
    if cls is UnauthenticatedError:
        return UnauthenticatedError(message)
    if cls is ForbiddenError:
        return ForbiddenError(message)
    if cls is TooManyRequestsError:
        return TooManyRequestsError(message)
    return cls(message)


def envelope(error: ServiceError, request_id: str | None = None) -> dict[str, Any]:
    """Render an error as the one JSON envelope.

    Args:
        error: the domain error.
        request_id: the request id the response header and the server log share.

    Returns:
        ``{"error": {"code", "message", "details", "request_id"}}``.
    """
    body: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "details": error.details,
    }
    if request_id is not None:
        body["request_id"] = request_id
    return {"error": body}


def envelope_bytes(error: ServiceError, request_id: str | None = None) -> bytes:
    """The envelope of ``error`` as UTF-8 JSON bytes."""
    return json.dumps(envelope(error, request_id), default=str).encode("utf-8")


def is_envelope(body: bytes) -> bool:
    """Whether a response body already is an error envelope."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return (
        isinstance(data, dict)
        and set(data) == {"error"}
        and isinstance(data["error"], dict)
        and "code" in data["error"]
        and "message" in data["error"]
    )
