"""Limits on what a client may send before its request reaches the app: the URL, the
headers, and the time it takes to send them.

BentoML serves with uvicorn, and uvicorn with httptools (the fast parser, with uvloop).
uvicorn has no limit of its own there: its only one, ``h11_max_incomplete_event_size``
(16 KiB by default), applies to its h11 parser, which is several times slower. Nor does
it time out a connection that sends its headers slowly (``timeout_keep_alive`` only runs
between requests). Measured before this module: a 4 MiB header and a 4 MiB URL were
accepted, and a connection sending one header byte a second stayed open for good.

:class:`LimitedHttpToolsProtocol` is uvicorn's own httptools protocol with three checks
in the parser's callbacks, before anything reaches BentoML or tabserve:

- a URL longer than ``TABSERVE_MAX_URL_BYTES`` (8 KiB): 414;
- headers over ``TABSERVE_MAX_HEADER_BYTES`` (32 KiB, names and values) or more than
  ``TABSERVE_MAX_HEADERS`` (100) of them: 431; a request line and headers still
  incomplete after the two limits' worth of bytes (one endless header, say) are refused
  as they arrive, so no more than that is ever buffered;
- a request line and headers not complete within ``TABSERVE_HEADER_TIMEOUT_S`` (10 s) of
  the connection or the request's first byte: 408, and the connection is closed.

Each answer is the service's JSON envelope, with ``Connection: close``. The class is
made uvicorn's ``auto`` protocol (what BentoML's workers use) when ``service.py`` is
imported, before a worker builds its server (:func:`install`).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, ClassVar

from tabserve.core.errors import (
    HeadersTooLargeError,
    RequestHeaderTimeoutError,
    ServiceError,
    URITooLongError,
    envelope_bytes,
)

logger = logging.getLogger("tabserve.gateway")

PROTOCOL = "tabserve.serving.http_limits:LimitedHttpToolsProtocol"
SWEEP_S = 1.0  # how often a worker looks for connections whose head is overdue


class _RefusedError(Exception):
    """Raised in a parser callback: the parser stops, the protocol answers ``error``."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


def _limited_protocol() -> type[Any]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with URL, header and header-time limits.

        Cheap per request: the fields are checked once, when the head is complete; what
        arrives before (one endless header) is bounded by counting the head's bytes as
        they come; and one sweep a second per worker, not a timer per request, closes the
        connections whose head is overdue.
        """

        max_url_bytes: ClassVar[int] = 8 * 1024
        max_header_bytes: ClassVar[int] = 32 * 1024
        max_headers: ClassVar[int] = 100
        header_timeout_s: ClassVar[float] = 10.0
        _sweeping: ClassVar[set[Any]] = set()  # the event loops a sweep runs in

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._refusal: ServiceError | None = None
            # When the head being received began (None: no head in progress).
            self._head_since: float | None = None
            self._head_bytes = 0
            self._heads_completed = 0

        # ---- the time a head may take: one sweep a second --------------------------------
        def _start_sweeping(self) -> None:
            if self.loop in self._sweeping:
                return
            self._sweeping.add(self.loop)
            self.loop.call_later(SWEEP_S, self._sweep)

        def _sweep(self) -> None:
            now = self.loop.time()
            for connection in list(self.connections):
                if not isinstance(connection, LimitedHttpToolsProtocol):
                    continue
                since = connection._head_since
                if since is not None and now - since > self.header_timeout_s:
                    connection._too_slow()
            self.loop.call_later(SWEEP_S, self._sweep)

        def _too_slow(self) -> None:
            self._head_since = None
            if self.transport is None or self.transport.is_closing():
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
            logger.info("closed a connection from %s: headers not sent in time", client)
            self._answer(RequestHeaderTimeoutError())

        def _answer(self, error: ServiceError) -> None:
            body = envelope_bytes(error)
            head = (
                f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
                "content-type: application/json\r\n"
                f"content-length: {len(body)}\r\n"
                "connection: close\r\n\r\n"
            ).encode("ascii")
            self.transport.write(head + body)
            self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._head_since = self.loop.time()  # the first head must come in time too
            self._start_sweeping()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_since = self.loop.time()

        # ---- the size of a head --------------------------------------------------------------
        def data_received(self, data: bytes) -> None:
            in_head, heads = self._head_since is not None, self._heads_completed
            super().data_received(data)
            if heads != self._heads_completed:
                # A head ended in this chunk (its fields were checked); what follows it in
                # the chunk (a body, the start of the next head) is at most one read.
                self._head_bytes = 0
                return
            if not in_head or self.transport.is_closing():
                return  # a body arriving, or a request refused
            self._head_bytes += len(data)
            if self._head_bytes > self.max_url_bytes + self.max_header_bytes:
                self._head_since = None
                self._refused(self._oversized_head())

        def _oversized_head(self) -> ServiceError:
            if len(getattr(self, "url", b"")) > self.max_url_bytes:
                return URITooLongError(f"the URL is over {self.max_url_bytes} bytes")
            return HeadersTooLargeError(
                f"the headers are over {self.max_header_bytes} bytes or {self.max_headers} fields"
            )

        def on_headers_complete(self) -> None:
            self._head_since = None
            self._heads_completed += 1
            headers = self.headers
            if (
                len(self.url) > self.max_url_bytes
                or len(headers) > self.max_headers
                or sum(len(name) + len(value) for name, value in headers) > self.max_header_bytes
            ):
                # Raised in a parser callback, it stops the parser; httptools turns it into
                # its own error, which uvicorn answers through send_400_response, below.
                self._refusal = self._oversized_head()
                raise _RefusedError(self._refusal)
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            error, self._refusal = self._refusal, None
            if error is None:
                super().send_400_response(msg)
                return
            self._refused(error)

        def _refused(self, error: ServiceError) -> None:
            logger.info("refused a request: %s %s", error.status, error.message)
            self._answer(error)

    return LimitedHttpToolsProtocol


def __getattr__(name: str) -> Any:
    # uvicorn imports the protocol class by name (``import_from_string``); it is built on
    # first use so that importing this module does not import uvicorn.
    if name == "LimitedHttpToolsProtocol":
        return _limited_protocol()
    raise AttributeError(name)


def install(
    max_url_bytes: int, max_header_bytes: int, max_headers: int, header_timeout_s: float
) -> bool:
    """Make :class:`LimitedHttpToolsProtocol` uvicorn's ``auto`` HTTP protocol, with these
    limits; False (with a warning) where httptools is not installed or uvicorn's table of
    protocols is not where it was (then uvicorn's own protocol serves, without them)."""
    try:
        import httptools  # noqa: F401
        from uvicorn import config
    except ImportError as exc:
        logger.warning("HTTP limits not installed (%s): uvicorn's own protocol serves", exc)
        return False
    protocols = getattr(config, "HTTP_PROTOCOLS", None)
    if not isinstance(protocols, dict) or "auto" not in protocols:
        logger.warning("uvicorn has no HTTP_PROTOCOLS['auto']: HTTP limits not installed")
        return False
    protocol = _limited_protocol()
    protocol.max_url_bytes = max_url_bytes
    protocol.max_header_bytes = max_header_bytes
    protocol.max_headers = max_headers
    protocol.header_timeout_s = header_timeout_s
    globals()["LimitedHttpToolsProtocol"] = protocol
    protocols["auto"] = PROTOCOL
    return True
