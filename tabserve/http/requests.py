"""What the middlewares read from a request, and what they leave for the next one.

The request-state keys are defined here once: the envelope gives each request an id,
auth records who called and with which scopes, the UI reads both. Headers, cookies and
forms are read with Starlette's own helpers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import Headers

from tabserve.core.errors import MalformedRequestError, UnsupportedMediaTypeError

# Keys of ``scope["state"]`` (what Starlette exposes as ``request.state``).
REQUEST_ID = "request_id"
SUBJECT = "tabserve_sub"
SCOPES = "tabserve_scopes"
TOKEN_ID = "tabserve_jti"
STATE_STORE = "tabserve_state_store"


def request_state(scope: dict[str, Any]) -> dict[str, Any]:
    """The request's state (created if missing)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def headers(scope: dict[str, Any]) -> Headers:
    """The request's headers (case-insensitive, read-only)."""
    return Headers(scope=scope)


def media_type(scope: dict[str, Any], default: str = "") -> str:
    """The request's media type, lower-case, without its parameters (``charset``...)."""
    value = headers(scope).get("content-type", default)
    return value.split(";", 1)[0].strip().lower()


def require_json(scope: dict[str, Any]) -> None:
    """A JSON API's body must be JSON (no content type is taken as JSON).

    Raises:
        UnsupportedMediaTypeError: naming the type sent (415).
    """
    kind = media_type(scope, default="application/json")
    if kind != "application/json":
        raise UnsupportedMediaTypeError(
            f"content type {kind!r} is not accepted; send application/json"
        )


async def read_form(request: Any) -> Any:
    """The request's form; a form that cannot be parsed is the client's error (400).

    Raises:
        MalformedRequestError: naming what Starlette's parser found.
    """
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    try:
        return await request.form()
    except HTTPException as exc:  # Starlette's wrapping of MultiPartException
        raise MalformedRequestError(f"the form cannot be parsed: {exc.detail}") from None
    except (MultiPartException, ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequestError(f"the form cannot be parsed: {exc}") from None


def replayed_body(body: bytes, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive`` for an app downstream of one that has read the request body:
    it gives ``body`` once, then the client's own messages (its disconnect)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        message: dict[str, Any] = await receive()
        return message

    return replay
