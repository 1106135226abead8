"""OpenTelemetry's ASGI middleware is left out of BentoML's app exactly when the SDK is off
(``tabserve/serving/tracing.py``); the served behaviour, ids and spans, is in
``tests/service/test_request_ids.py``."""

from __future__ import annotations

import bentoml
import pytest
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from tabserve.serving import tracing


@bentoml.service(name="tracing_probe")
class Probe:
    @bentoml.api
    def echo(self, text: str) -> str:
        return text


def _middleware_classes() -> list[type]:
    """The middleware of the app BentoML builds for a worker (``to_asgi``, as it serves)."""
    app = Probe.to_asgi()
    return [m.cls for m in app.user_middleware]  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_the_sdk_off_leaves_the_middleware_out(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    tracing.skip_tracing_middleware_when_off()
    monkeypatch.setenv(tracing.OTEL_SDK_DISABLED, value)
    classes = _middleware_classes()
    assert OpenTelemetryMiddleware not in classes
    assert classes, "the rest of BentoML's middleware is still there"


@pytest.mark.parametrize("value", [None, "false", "0"])
def test_the_sdk_on_keeps_bentomls_middleware(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    tracing.skip_tracing_middleware_when_off()
    if value is None:
        monkeypatch.delenv(tracing.OTEL_SDK_DISABLED, raising=False)
    else:
        monkeypatch.setenv(tracing.OTEL_SDK_DISABLED, value)
    assert OpenTelemetryMiddleware in _middleware_classes()


def test_installing_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    tracing.skip_tracing_middleware_when_off()
    assert tracing.skip_tracing_middleware_when_off() is False
    monkeypatch.setenv(tracing.OTEL_SDK_DISABLED, "true")
    assert OpenTelemetryMiddleware not in _middleware_classes()
