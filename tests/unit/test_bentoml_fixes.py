"""The BentoML fixes: no timer outlives its request, 504 is enveloped; the batching wait
BentoML learns under load is capped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from tabserve.serving import bentoml_fixes
from tabserve.serving.bentoml_private import API_CALLER, BATCH_WAIT, TIMEOUT_CALL, source_sha256


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
    original = getattr(TimeoutMiddleware, "_tabserve_original___call__", TimeoutMiddleware.__call__)
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
    original = TimeoutMiddleware._tabserve_original___call__  # type: ignore[attr-defined]
    assert source_sha256(original) == TIMEOUT_CALL.sha256


# ---- the batching wait -------------------------------------------------------------------
def _learned_wait(waits_s: float, batches: int = 60) -> float:
    """The wait BentoML's optimizer learns from ``batches`` that each waited ``waits_s``."""
    from bentoml._internal.marshal.dispatcher import Optimizer

    optimizer = Optimizer(max_latency=10.0)
    for _ in range(batches):
        optimizer.log_outbound(n=16, wait=waits_s, duration=0.02)
    optimizer.trigger_refresh()
    return float(optimizer.wait)


def test_the_original_dispatcher_holds_a_lone_request_for_its_learned_wait() -> None:
    """What the cap is for (if this starts failing, BentoML changed its dispatcher)."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher, Optimizer

    original = getattr(Optimizer, "_tabserve_original_trigger_refresh", Optimizer.trigger_refresh)

    async def run() -> float:
        dispatcher = CorkDispatcher(
            max_latency_in_ms=10_000, max_batch_size=256, fallback=lambda: None
        )

        async def echo(batch: Any) -> Any:
            return batch

        call = dispatcher(echo)
        for _ in range(20):  # past BentoML's training phase
            await call([1])
        # What a burst leaves behind: batches that queued ~30 ms behind the one running.
        for _ in range(60):
            dispatcher.optimizer.log_outbound(n=16, wait=0.03, duration=0.02)
        original(dispatcher.optimizer)
        started = asyncio.get_running_loop().time()
        await call([1])  # one request, nothing else coming
        elapsed = asyncio.get_running_loop().time() - started
        dispatcher.shutdown()
        return elapsed

    assert asyncio.run(run()) >= 0.02


def test_the_learned_wait_is_capped() -> None:
    bentoml_fixes.cap_batch_wait(1.0)
    assert _learned_wait(0.03) <= 0.001
    assert _learned_wait(0.0005) == pytest.approx(0.0005, abs=1e-4)  # below the cap: kept
    bentoml_fixes.cap_batch_wait(0)
    assert _learned_wait(0.03) == 0.0
    bentoml_fixes.cap_batch_wait(1.0)  # the default, for other tests in this process


def test_the_wrapped_refresh_is_the_one_the_cap_was_written_for() -> None:
    """BentoML changed ``Optimizer.trigger_refresh``: check whether the cap still applies."""
    from bentoml._internal.marshal.dispatcher import Optimizer

    bentoml_fixes.cap_batch_wait(1.0)
    original = Optimizer._tabserve_original_trigger_refresh  # type: ignore[attr-defined]
    assert source_sha256(original) == BATCH_WAIT.sha256


# ---- the API caller ----------------------------------------------------------------------
def test_an_api_caller_is_built_once_per_instance_and_method() -> None:
    import bentoml

    @bentoml.service(name="callers_probe")
    class Probe:
        def __init__(self) -> None:
            self.calls = 0

        @bentoml.api
        def echo(self, text: str = "x") -> str:
            self.calls += 1
            return text * 2

        @bentoml.api
        def other(self, text: str) -> str:
            return text

    bentoml_fixes.cache_api_callers()
    assert bentoml_fixes.cache_api_callers() is False
    one, two = Probe.inner(), Probe.inner()
    assert one.echo.local is one.echo.local and one.echo.local is not one.other.local
    assert one.echo.local is not two.echo.local
    assert one.echo.local("ab") == "abab" and one.echo.local() == "xx"  # defaults still filled
    assert one.calls == 2 and two.calls == 0
    assert two.echo.local(text="c") == "cc" and two.calls == 1


def test_the_cached_caller_is_the_one_the_cache_was_written_for() -> None:
    """BentoML changed ``APIMethod._local_call``: check whether caching still applies."""
    from _bentoml_sdk.method import APIMethod

    bentoml_fixes.cache_api_callers()
    original = APIMethod._tabserve_original__local_call  # type: ignore[attr-defined]
    assert source_sha256(original) == API_CALLER.sha256


def test_every_patch_applies_to_the_installed_bentoml_and_names_its_upstream_issue() -> None:
    from tabserve.serving.bentoml_private import (
        CHECKED_VERSIONS,
        PATCHES,
        guarded,
        installed_version,
    )

    assert installed_version() in CHECKED_VERSIONS
    for patch in PATCHES:
        assert guarded(patch) is not None, patch.name
        assert patch.upstream


def test_a_patch_whose_source_changed_upstream_is_left_out_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dataclasses import replace

    from tabserve.serving.bentoml_private import TIMEOUT_CALL, guarded

    changed = replace(TIMEOUT_CALL, sha256="0" * 64)
    assert guarded(changed) is None
    assert "is not patched" in caplog.text and "#5642" in caplog.text
    missing = replace(TIMEOUT_CALL, owner="bentoml._internal.nowhere:Nothing")
    assert guarded(missing) is None
    assert "cannot be patched" in caplog.text
