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

Requests keep their id with tracing off: :func:`tabserve.logs.assign_request_id`.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"


def configured_exporter(service: Any) -> str | None:
    """The tracing exporter BentoML will use for ``service`` (``otlp``, ``zipkin``...), or None.

    BentoML 1.4 reads tracing per service: the ``tracing`` argument of
    ``@bentoml.service``, or ``services.<name>.tracing`` in its configuration file
    (``BENTOML_CONFIG``) and in ``BENTOML_CONFIG_OPTIONS``; when a worker builds its app,
    that service-level value replaces the top-level ``tracing`` section. This computes
    the same configuration the same way (BentoML's own loader), without installing it.
    """
    from bentoml._internal.configuration import (
        get_bentoml_config_file_from_env,
        get_bentoml_override_config_from_env,
        get_bentoml_override_config_json_from_env,
    )
    from bentoml._internal.configuration.containers import BentoMLConfiguration

    # Quiet: BentoML logs each override it applies, and the first line a worker logs fixes
    # the component name of all its lines (an lru_cache in bentoml._internal.log), before
    # the worker knows its service: they would all read "[:1]".
    loader_log = logging.getLogger(BentoMLConfiguration.__module__)
    was_disabled, loader_log.disabled = loader_log.disabled, True
    try:
        config = BentoMLConfiguration(
            override_config_file=get_bentoml_config_file_from_env(),
            override_config_values=get_bentoml_override_config_from_env(),
            # A copy: BentoML merges the overrides into its defaults in place.
            override_defaults={
                "services": {service.name: copy.deepcopy(service.config or {"workers": 1})}
            },
            override_config_json=get_bentoml_override_config_json_from_env(),
            use_version=2,
        ).to_dict()
    except Exception:  # an invalid configuration is BentoML's to report, when it loads it
        return None
    finally:
        loader_log.disabled = was_disabled
    tracing = dict(config.get("tracing") or {})
    tracing.update(config.get("services", {}).get(service.name, {}).get("tracing") or {})
    exporter = tracing.get("exporter_type")
    return str(exporter) if exporter else None


def apply_tracing_default(service: Any) -> str:
    """Switch the OpenTelemetry SDK off unless an exporter is configured for ``service``
    (the BentoML service, once defined; see the module doc).

    Returns:
        A sentence saying what tracing does now, for the log.
    """
    exporter = configured_exporter(service)
    explicit = os.environ.get(OTEL_SDK_DISABLED)
    if explicit is None and exporter is None:
        os.environ[OTEL_SDK_DISABLED] = "true"
        return (
            "tracing off: no exporter configured (BentoML tracing.exporter_type), so "
            f"{OTEL_SDK_DISABLED}=true"
        )
    if explicit is not None and explicit.strip().lower() == "true":
        return f"tracing off: {OTEL_SDK_DISABLED}={explicit}"
    return f"tracing on: exporter {exporter or 'none'}, {OTEL_SDK_DISABLED}={explicit or 'unset'}"
