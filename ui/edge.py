"""The UI's HTTP edge: what of a request Gradio may believe, and how its pages may be shown.

Gradio derives the URLs it hands out from ``X-Forwarded-Host`` and ``X-Forwarded-Proto``
when a request carries them, and answers any ``Origin`` with a CORS grant when the
server is not on localhost, whoever sent them. tabserve's rule (SECURITY.md) is that
only the trusted proxies decide the client, the scheme and the host: uvicorn has already
applied ``X-Forwarded-For``/``-Proto`` from a peer in ``TABSERVE_TRUSTED_PROXIES`` to the
request's client and scheme, so :class:`UIEdge` removes every forwarding header before
Gradio sees the request (Gradio then builds its URLs from the ``Host`` header and that
scheme: a proxy in front passes ``Host`` through). A state-changing call (not GET, HEAD,
OPTIONS) from another origin than the page's is refused (403), and a foreign ``Origin``
is removed from the others, so Gradio never grants it. Every answer under ``/ui`` says
it may not be framed (``X-Frame-Options: DENY``, ``frame-ancestors 'none'``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tabserve.core.errors import CrossOriginError
from tabserve.http.envelope import error_response

FORWARDING_HEADERS = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-proto",
        b"x-forwarded-server",
        b"x-real-ip",
    }
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NO_FRAMING = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
)


def _same_origin(origin: bytes, host: bytes | None, scheme: str) -> bool:
    """Whether ``Origin`` names the page's own scheme, host and port."""
    if host is None:
        return False
    try:
        parts = urlsplit(origin.decode("latin-1"))
    except ValueError:
        return False
    default = {"http": 80, "https": 443}.get(scheme)
    own = urlsplit(f"{scheme}://{host.decode('latin-1')}")
    try:
        ports = (parts.port or default, own.port or default)
    except ValueError:  # a port that is not a number
        return False
    return (parts.scheme, parts.hostname, ports[0]) == (scheme, own.hostname, ports[1])


class UIEdge:
    """Pure ASGI, in front of the UI's app (module doc)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in FORWARDING_HEADERS]
        origin = next((v for k, v in headers if k == b"origin"), None)
        host = next((v for k, v in headers if k == b"host"), None)
        if origin is not None and not _same_origin(origin, host, scope.get("scheme", "http")):
            if scope["method"] not in SAFE_METHODS:
                await error_response(
                    CrossOriginError("a UI call from another origin than the UI's is refused")
                )(scope, receive, send)
                return
            headers = [(k, v) for k, v in headers if k != b"origin"]

        async def framed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"x-frame-options", b"content-security-policy")
                ]
                message = {**message, "headers": [*kept, *NO_FRAMING]}
            await send(message)

        await self.app({**scope, "headers": headers}, receive, framed)
