"""Fixes for BentoML: a request timeout that keeps every request alive for its duration,
and an adaptive-batching wait that outlives the load it was learned from.

**The request timeout.**

BentoML wraps every service in its ``TimeoutMiddleware``
(it cannot be switched off: ``traffic.timeout`` must be positive). Up to at least
BentoML 1.4.39 its ``__call__`` schedules ``loop.call_later(timeout, ...)`` per request
and never cancels the handle. The handle holds the request's waiter future and, through
the contextvars context it captured, the request's OpenTelemetry span. So each finished
request stays in memory for ``timeout`` seconds (60 by default): at 350 requests/s,
about 20 objects × 21,000 requests. Every full garbage collection walks them all; the
collections grew to 250 ms and stalled the event loop, putting p95/p99 latency at 4 to
8 times the median (docs/benchmark.md and load_tests/FINDINGS.md).

:func:`apply` replaces that ``__call__`` with the same logic plus the missing
``handle.cancel()``. A timed-out request also gets the one JSON envelope (504,
``timeout``) instead of BentoML's own body, and its handler is not cancelled: BentoML
cancels it, which for a sync handler (a thread nothing can interrupt) frees its thread
slot while it still runs, so the next request runs beside it, and loses the error it
raises later (bentoml/BentoML#5642). Here it ends in the background, keeping its slot,
and how it ended is logged; its late answer is dropped. ``tests/unit/test_bentoml_fixes.py``
checks that finished requests leave no timer behind. Every patch here is applied only
where the installed BentoML's method is the one checked
(:func:`tabserve.serving.bentoml_private.guarded`, with the upstream issue each waits for).

**The batching wait.** BentoML's ``CorkDispatcher`` (up to at least 1.4.39) holds a lone
request back while the mean time that past batches waited, ``Optimizer.wait`` (the last
50 batches, refreshed at most every 5 s), says more requests could join it. That mean
counts the time requests queued behind the batch in progress, so under load it grows to
about one model call (10 to 40 ms here); once the load is gone, each lone request is
held back for nearly that long, the batch it forms records about as long a wait, and the
learned wait decays by 5 % per refresh: minutes of 25 to 45 ms answers where the
unbatched service answers in 1 to 5 ms (``make bench``, "1 user right after the burst").
:func:`cap_batch_wait` bounds that learned wait (``TABSERVE_BATCH_MAX_WAIT_MS``); under
load, requests that arrive while a batch runs still form the next batch, since BentoML
runs one batch at a time per worker. The same test module checks the bound and fails if
BentoML changes ``Optimizer.trigger_refresh``.

**The API caller built per request.** BentoML's ``APIMethod.__get__`` (up to at least
1.4.39) builds a new caller of the API function every time the method is read from the
service instance, with ``inspect.signature`` and ``functools.wraps``, and the HTTP
server reads it twice per request (the endpoint, then the batch it joins): about 3 % of
the CPU per request under load. The caller depends only on the method and the instance,
so :func:`cache_api_callers` builds it once per instance and method. The same test
module checks that reads give the same caller and fails if BentoML changes
``APIMethod._local_call``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from tabserve.core.errors import RequestTimeoutError, envelope_bytes
from tabserve.core.log_text import printable
from tabserve.serving.bentoml_private import API_CALLER, BATCH_WAIT, TIMEOUT_CALL, guarded

logger = logging.getLogger("tabserve.bentoml_fixes")


async def _timeout_call(self: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``TimeoutMiddleware.__call__`` with its timer cancelled once the request is done, and
    a request that times out answered 504 without cancelling its handler (module doc)."""
    if scope["type"] not in ("http", "websocket"):
        await self.app(scope, receive, send)
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)
    timed_out = False

    async def first_send(message: dict[str, Any]) -> None:
        if timed_out:
            return  # the client has its 504: a late answer is dropped
        if not waiter.done():
            waiter.set_result(None)  # the response has started: no timeout from now on
        await send(message)

    task = asyncio.ensure_future(self.app(scope, receive, first_send))
    try:
        await waiter
    except TimeoutError:
        timed_out = True
        request_id = scope.get("state", {}).get("request_id")
        # Not cancelled: a sync handler runs in a thread nothing can interrupt, and
        # cancelling the task that waits for it would give its thread slot to the next
        # request while it still runs, and lose its error (bentoml/BentoML#5642). It ends
        # in the background, holding its slot, and how it ends is logged.
        task.add_done_callback(_late_outcome_logger(scope, request_id, self.timeout))
        body = envelope_bytes(RequestTimeoutError(), request_id)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 504, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
    else:
        await task
    finally:
        timer.cancel()  # the line BentoML lacks: frees the waiter, context and span now
        if not waiter.done():
            waiter.cancel()


def _late_outcome_logger(
    scope: dict[str, Any], request_id: str | None, timeout_s: float
) -> Callable[[asyncio.Future[None]], None]:
    """A done-callback that logs how a request that timed out finally ended."""
    started = time.monotonic() - timeout_s
    where = f"{printable(scope.get('method'), 16)} {printable(scope.get('path'))}"

    def log(task: asyncio.Future[None]) -> None:
        took = time.monotonic() - started
        if task.cancelled():
            logger.warning("%s [request_id=%s]: cancelled after its timeout", where, request_id)
        elif (error := task.exception()) is not None:
            logger.error(
                "%s [request_id=%s] failed %.1f s after it started, past its %.0f s timeout "
                "(the client had a 504)",
                where,
                request_id,
                took,
                timeout_s,
                exc_info=error,
            )
        else:
            logger.warning(
                "%s [request_id=%s] finished %.1f s after it started, past its %.0f s "
                "timeout; its answer was dropped (the client had a 504)",
                where,
                request_id,
                took,
                timeout_s,
            )

    return log


def apply() -> bool:
    """Install the fixed ``TimeoutMiddleware.__call__``; True if it was installed now.

    Idempotent. Must run before BentoML builds the service's ASGI app (``service.py``
    calls it when imported, before ``bentoml serve`` builds the app in the worker).
    """
    middleware = guarded(TIMEOUT_CALL)
    if middleware is None or middleware.__call__ is _timeout_call:
        return False
    middleware._tabserve_original___call__ = middleware.__call__
    middleware.__call__ = _timeout_call
    logger.debug("installed the fixed BentoML TimeoutMiddleware.__call__")
    return True


def cap_batch_wait(max_wait_ms: float) -> None:
    """Bound the wait BentoML's dispatcher learns to ``max_wait_ms`` (see the module doc).

    Wraps ``Optimizer.trigger_refresh``, where the learned wait is computed; calling
    this again only changes the bound. Must run before the first batch is refreshed
    (``service.py`` calls it when imported).
    """
    global _max_wait_s
    _max_wait_s = max(0.0, max_wait_ms / 1000.0)
    optimizer = guarded(BATCH_WAIT)
    if optimizer is None or getattr(optimizer.trigger_refresh, "_tabserve_capped", False):
        return
    original = optimizer.trigger_refresh

    def trigger_refresh(self: Any) -> None:
        original(self)
        self.wait = min(self.wait, _max_wait_s)

    trigger_refresh._tabserve_capped = True  # type: ignore[attr-defined]
    optimizer._tabserve_original_trigger_refresh = original
    optimizer.trigger_refresh = trigger_refresh
    logger.debug("capped BentoML's learned batching wait at %.1f ms", max_wait_ms)


_max_wait_s = 0.0


def cache_api_callers() -> bool:
    """Build each API function's caller once per service instance and method, not on
    every read (see the module doc); True if installed now. Idempotent; must run before
    the first request (``service.py`` calls it when imported)."""
    method = guarded(API_CALLER)
    if method is None or getattr(method._local_call, "_tabserve_cached", False):
        return False
    original = method._local_call

    def _local_call(self: Any, instance: Any) -> Any:
        try:
            callers = instance.__dict__.setdefault("_tabserve_api_callers", {})
        except AttributeError:  # no instance dict (slots): build it every time, as BentoML
            return original(self, instance)
        caller = callers.get(self.name)
        if caller is None:
            caller = callers[self.name] = original(self, instance)
        return caller

    _local_call._tabserve_cached = True  # type: ignore[attr-defined]
    method._tabserve_original__local_call = original
    method._local_call = _local_call
    logger.debug("BentoML's API callers are built once per instance")
    return True
