"""The fixed BentoML ``TimeoutMiddleware``: no timer outlives its request; 504 is enveloped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bentoml._internal.server.http.traffic import TimeoutMiddleware

from tabserve import bentoml_fixes


async def _ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await asyncio.sleep(5)
    await _ok_app(scope, receive, send)


async def _call(middleware: Any, scope: dict[str, Any], method: Any = None) -> list[dict[str, Any]]:
    """One request through ``middleware`` (through ``method`` of it if given)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    if method is None:
        await middleware(scope, receive, send)
    else:
        await method(middleware, scope, receive, send)
    return sent


def _live_timers(loop: asyncio.AbstractEventLoop) -> int:
    """Pending (not cancelled) timers that would fire BentoML's timeout callback."""
    scheduled = loop._scheduled  # type: ignore[attr-defined]
    return sum(
        1
        for handle in scheduled
        if not handle.cancelled() and "_set_timer_out" in repr(handle._callback)
    )


def _timers_left_after(call: Any, requests: int) -> tuple[int, list[dict[str, Any]]]:
    async def run() -> tuple[int, list[dict[str, Any]]]:
        middleware = TimeoutMiddleware(_ok_app, timeout=60)
        sent: list[dict[str, Any]] = []
        for _ in range(requests):
            sent = await call(middleware, {"type": "http", "state": {}})
        return _live_timers(asyncio.get_running_loop()), sent

    return asyncio.run(run())


def test_the_original_keeps_one_timer_per_finished_request() -> None:
    """What the fix is for (if this starts failing, BentoML fixed it upstream)."""
    original = getattr(TimeoutMiddleware, "_tabserve_original_call", TimeoutMiddleware.__call__)
    left, sent = _timers_left_after(lambda m, s: _call(m, s, original), 50)
    assert left == 50
    assert sent[0]["status"] == 200


def test_fixed_call_leaves_no_timer_behind() -> None:
    bentoml_fixes.apply()
    assert TimeoutMiddleware.__call__ is bentoml_fixes._timeout_call
    left, sent = _timers_left_after(_call, 50)
    assert left == 0
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"ok"


def test_apply_is_idempotent() -> None:
    bentoml_fixes.apply()
    assert bentoml_fixes.apply() is False
    assert TimeoutMiddleware.__call__ is bentoml_fixes._timeout_call


def test_a_timed_out_request_gets_the_envelope() -> None:
    bentoml_fixes.apply()

    async def run() -> list[dict[str, Any]]:
        middleware = TimeoutMiddleware(_slow_app, timeout=0.05)
        return await _call(middleware, {"type": "http", "state": {"request_id": "req-1"}})

    sent = asyncio.run(run())
    assert sent[0]["status"] == 504
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "timeout" and error["request_id"] == "req-1"


def test_the_replaced_method_is_the_one_the_fix_was_written_for() -> None:
    """BentoML changed ``TimeoutMiddleware.__call__``: check whether the fix still applies."""
    bentoml_fixes.apply()
    original = TimeoutMiddleware._tabserve_original_call  # type: ignore[attr-defined]
    assert bentoml_fixes.source_sha256(original) == bentoml_fixes.REPLACED_SOURCE_SHA256
