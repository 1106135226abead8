"""Tracing that costs nothing unless its spans go somewhere.

BentoML wraps every request in OpenTelemetry's ASGI middleware. Without an exporter
(BentoML's ``tracing.exporter_type``, unset by default) the spans are sampled at rate 0
and thrown away, yet each request still pays for creating them, their attributes and
their context (about 10 % of the service's CPU per request under load, measured in
``make bench``). OpenTelemetry's own switch, ``OTEL_SDK_DISABLED=true``, makes the SDK's
tracer a no-op; BentoML creates its tracer when a worker builds its app, right after
importing ``service.py``, which is where :func:`apply_tracing_default` runs (once the
service class is defined, its configuration known).

- No exporter configured and ``OTEL_SDK_DISABLED`` unset: it is set to ``true``.
- An exporter configured (``tracing.exporter_type`` of the service, in BentoML's
  configuration file, ``BENTOML_CONFIG``, or ``BENTOML_CONFIG_OPTIONS`` as
  ``services.tabserve.tracing.exporter_type=otlp``): tracing stays on, as BentoML
  configures it.
- ``OTEL_SDK_DISABLED`` set by you: your value holds either way.

With the SDK off, BentoML still wraps every request in OpenTelemetry's ASGI middleware
(its app factory adds it unconditionally, up to at least 1.4.39): each request then pays
for a no-op span, its context and the middleware's wrapped ``receive``/``send`` (about
5 % of the CPU per request, ``make bench``'s py-spy profile).
:func:`skip_tracing_middleware_when_off` leaves it out of the app when the SDK is off.

Requests keep their id with tracing off: :func:`tabserve.serving.logs.assign_request_id`.
"""

from __future__ import annotations

import os
from typing import Any

from tabserve.serving.bentoml_private import adjust_app_middlewares, service_configuration

OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"


def sdk_disabled() -> bool:
    """Whether the OpenTelemetry SDK is off, read as the SDK reads it."""
    return os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"


def configured_exporter(service: Any) -> str | None:
    """The tracing exporter BentoML will use for ``service`` (``otlp``, ``zipkin``...), or None.

    BentoML 1.4 reads tracing per service: the ``tracing`` argument of
    ``@bentoml.service``, or ``services.<name>.tracing`` in its configuration file
    (``BENTOML_CONFIG``) and in ``BENTOML_CONFIG_OPTIONS``; when a worker builds its app,
    that service-level value replaces the top-level ``tracing`` section. This computes
    the same configuration the same way (BentoML's own loader), without installing it.
    """
    try:
        config = service_configuration(service.name, service.config or {"workers": 1})
    except Exception:  # an invalid configuration is BentoML's to report, when it loads it
        return None
    tracing = dict(config.get("tracing") or {})
    tracing.update(config.get("services", {}).get(service.name, {}).get("tracing") or {})
    exporter = tracing.get("exporter_type")
    return str(exporter) if exporter else None


def apply_tracing_default(service: Any) -> str:
    """Switch the OpenTelemetry SDK off unless an exporter is configured for ``service``
    (the BentoML service, once defined; see the module doc), and with it OpenTelemetry's
    ASGI middleware (:func:`skip_tracing_middleware_when_off`).

    Returns:
        A sentence saying what tracing does now, for the log.
    """
    exporter = configured_exporter(service)
    explicit = os.environ.get(OTEL_SDK_DISABLED)
    skip_tracing_middleware_when_off()
    if explicit is None and exporter is None:
        os.environ[OTEL_SDK_DISABLED] = "true"
        return (
            "tracing off: no exporter configured (BentoML tracing.exporter_type), so "
            f"{OTEL_SDK_DISABLED}=true"
        )
    if sdk_disabled():
        return f"tracing off: {OTEL_SDK_DISABLED}={explicit}"
    return f"tracing on: exporter {exporter or 'none'}, {OTEL_SDK_DISABLED}={explicit or 'unset'}"


def skip_tracing_middleware_when_off() -> bool:
    """Make BentoML leave OpenTelemetry's ASGI middleware out of a worker's app whenever
    the SDK is off (see the module doc); True if installed now, False if it already was.

    The choice is made when the app is built: nothing else changes, a BentoML that stops
    adding it is left as it is, and with tracing on the list is BentoML's own.
    """
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    def without_tracing(listed: list[Any]) -> list[Any]:
        if not sdk_disabled():
            return listed
        return [m for m in listed if m.cls is not OpenTelemetryMiddleware]

    return adjust_app_middlewares("tracing-off", without_tracing)
