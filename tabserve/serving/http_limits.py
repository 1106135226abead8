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

import asyncio
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


class _RefusedError(Exception):
    """Raised in a parser callback: the parser stops, the protocol answers ``error``."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


def _limited_protocol() -> type[Any]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with URL, header and header-time limits."""

        max_url_bytes: ClassVar[int] = 8 * 1024
        max_header_bytes: ClassVar[int] = 32 * 1024
        max_headers: ClassVar[int] = 100
        header_timeout_s: ClassVar[float] = 10.0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._refusal: ServiceError | None = None
            self._header_timer: asyncio.TimerHandle | None = None
            self._url_bytes = self._header_bytes = self._header_count = 0
            # Bytes received while a request's line and headers are incomplete: httptools
            # hands over a header only once its value is complete, so a single endless
            # header is bounded here, as it arrives.
            self._in_head = True
            self._head_bytes = 0
            self._heads_completed = 0

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
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
            self._arm()  # the first request's line and headers must come in time too

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._url_bytes = self._header_bytes = self._header_count = 0
            self._arm()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True  # the next request's head may follow

        def data_received(self, data: bytes) -> None:
            in_head, heads = self._in_head, self._heads_completed
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
                self._disarm()
                error = HeadersTooLargeError(
                    f"the request line and headers are over "
                    f"{self.max_url_bytes + self.max_header_bytes} bytes"
                )
                logger.info("refused a request: %s %s", error.status, error.message)
                self._answer(error)

        def _refuse(self, error: ServiceError) -> None:
            # Raised in a parser callback, it stops the parser; httptools turns it into its
            # own error, which uvicorn answers through send_400_response, below.
            self._refusal = error
            raise _RefusedError(error)

        def on_url(self, url: bytes) -> None:
            self._url_bytes += len(url)
            if self._url_bytes > self.max_url_bytes:
                self._refuse(URITooLongError(f"the URL is over {self.max_url_bytes} bytes"))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_bytes += len(name) + len(value)
            self._header_count += 1
            if self._header_bytes > self.max_header_bytes or self._header_count > self.max_headers:
                self._refuse(
                    HeadersTooLargeError(
                        f"the headers are over {self.max_header_bytes} bytes "
                        f"or {self.max_headers} fields"
                    )
                )
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            self._in_head = False
            self._heads_completed += 1
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            error, self._refusal = self._refusal, None
            if error is None:
                super().send_400_response(msg)
                return
            self._disarm()
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
