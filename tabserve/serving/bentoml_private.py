"""Every use of a private BentoML API, in one place, each guarded.

tabserve reaches into BentoML where its public API offers no hook. Each such place is
here, and nowhere else in the project (import-linter checks that no other module imports
``bentoml._internal``, ``_bentoml_sdk`` or ``_bentoml_impl``):

- three patches of BentoML's code (:mod:`tabserve.serving.bentoml_fixes`): each names
  the source it replaces by its sha256 and is applied only when the installed BentoML's
  source is one of those checked (:func:`guarded`); otherwise it is left out with a
  warning, and the service runs as BentoML would;
- adjustments of the middleware a worker's app is built with
  (:func:`adjust_app_middlewares`: tracing off, request metrics by route);
- reads of BentoML's state: the request context (request and trace ids), the id formats
  of its logs, the worker index, its configuration loader.

:data:`CHECKED_VERSIONS` lists the releases whose files were read against these uses;
``pyproject.toml``'s lower bound is the oldest of them. Each patch names the upstream
issue it waits for (or says that none is filed yet).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

logger = logging.getLogger("tabserve.bentoml_fixes")

# The BentoML releases whose patched methods and read state were checked, byte for byte
# (1.4.40's patched files are identical to 1.4.39's).
CHECKED_VERSIONS = ("1.4.39", "1.4.40")


@dataclass(frozen=True)
class Patch:
    """A method of BentoML that tabserve replaces or wraps.

    Attributes:
        name: what it is, for the log.
        owner: ``module:Class`` holding the method.
        attribute: the method (or property) replaced.
        sha256: the sha256 of its source in :data:`CHECKED_VERSIONS`.
        upstream: the upstream issue the patch waits for, or why none is named.
    """

    name: str
    owner: str
    attribute: str
    sha256: str
    upstream: str

    def owner_class(self) -> Any:
        """The class holding the method (imported now)."""
        import importlib

        module, _, name = self.owner.partition(":")
        return getattr(importlib.import_module(module), name)

    def source_sha256(self) -> str:
        """The sha256 of the installed method's source (of the original, once patched)."""
        target = self.owner_class()
        original = getattr(target, f"_tabserve_original_{self.attribute}", None)
        found = original or getattr(target, self.attribute)
        if isinstance(found, property):
            found = found.fget
        return source_sha256(found)


TIMEOUT_CALL = Patch(
    name="the request timeout's timer",
    owner="bentoml._internal.server.http.traffic:TimeoutMiddleware",
    attribute="__call__",
    sha256="fd8b9e3da28ed2b44cfd508d641617e049fcd4986138197ce7bb227332505896",
    upstream=(
        "not filed upstream yet (the timer of every request is kept for traffic.timeout); "
        "the same method's sync-handler bug is bentoml/BentoML#5642"
    ),
)
BATCH_WAIT = Patch(
    name="the adaptive batching's learned wait",
    owner="bentoml._internal.marshal.dispatcher:Optimizer",
    attribute="trigger_refresh",
    sha256="f87e72c1c3570482c3d4fde5a26eecdbefe1467b48e21176f3ded1c954fbfde1",
    upstream="not filed upstream yet (the learned wait outlives the load it was learned from)",
)
API_CALLER = Patch(
    name="the API caller built per request",
    owner="_bentoml_sdk.method:APIMethod",
    attribute="_local_call",
    sha256="72c85cd5fadd8a7c9c7af342f0f245c457c0b5fcb0b71094c49d5048dc5dc43f",
    upstream="not filed upstream yet (APIMethod.__get__ rebuilds the caller on every read)",
)
APP_MIDDLEWARES = Patch(
    name="the list of middleware a worker's app is built with",
    owner="_bentoml_impl.server.app:ServiceAppFactory",
    attribute="middlewares",
    sha256="",  # wrapped, not replaced: each adjustment is checked by its behaviour
    upstream=(
        "not filed upstream yet: OpenTelemetry's middleware is added whether tracing is on "
        "or off, and the request metrics are labelled with the raw path (one series per "
        "path any client makes up)"
    ),
)
PATCHES = (TIMEOUT_CALL, BATCH_WAIT, API_CALLER, APP_MIDDLEWARES)


def source_sha256(function: Any) -> str:
    """sha256 of a function's source text."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def installed_version() -> str:
    """The installed BentoML release."""
    return version("bentoml")


def guarded(patch: Patch) -> Any | None:
    """The class ``patch`` applies to, or None (with a warning) when the installed
    BentoML's source of the method is not the one checked: then the patch is left out."""
    try:
        target = patch.owner_class()
        found = patch.source_sha256() if patch.sha256 else ""
    except (ImportError, AttributeError, OSError, TypeError) as exc:
        logger.warning(
            "BentoML %s: %s cannot be patched (%s); running as BentoML does (%s)",
            installed_version(),
            patch.name,
            exc,
            patch.upstream,
        )
        return None
    if patch.sha256 and found != patch.sha256:
        logger.warning(
            "BentoML %s changed %s.%s (checked: %s): %s is not patched; check whether the "
            "fix is still needed (%s)",
            installed_version(),
            patch.owner,
            patch.attribute,
            ", ".join(CHECKED_VERSIONS),
            patch.name,
            patch.upstream,
        )
        return None
    return target


# ---- the middleware a worker's app is built with ------------------------------------
MiddlewareAdjustment = Callable[[list[Any]], list[Any]]
_adjustments: dict[str, MiddlewareAdjustment] = {}


def adjust_app_middlewares(name: str, adjust: MiddlewareAdjustment) -> bool:
    """Have every worker's app built with ``adjust(list)`` of BentoML's middleware list
    (starlette ``Middleware`` entries, outermost first), under ``name``; True if installed
    now, False if ``name`` already was or BentoML cannot be adjusted (with a warning).

    Wraps the ``middlewares`` property of BentoML's ``ServiceAppFactory`` once; each
    adjustment runs when a worker builds its app, in the order they were added.
    """
    if name in _adjustments:
        return False
    factory = guarded(APP_MIDDLEWARES)
    if factory is None:
        return False
    _adjustments[name] = adjust
    current = factory.middlewares
    if getattr(current.fget, "_tabserve_adjusted", False):
        return True
    original = current.fget
    assert original is not None

    def middlewares(self: Any) -> list[Any]:
        listed: list[Any] = original(self)
        for step in _adjustments.values():
            listed = step(listed)
        return listed

    middlewares._tabserve_adjusted = True  # type: ignore[attr-defined]
    factory._tabserve_original_middlewares = current
    factory.middlewares = property(middlewares)
    return True


def request_metrics_middleware() -> Any:
    """BentoML's middleware that counts and times requests (``bentoml_service_request_*``)."""
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    return RunnerTrafficMetricsMiddleware


# ---- BentoML's state, read -----------------------------------------------------------
def trace_context() -> Any:
    """BentoML's per-request context (``request_id``, ``trace_id``: ints, 0 when unset)."""
    from bentoml._internal.context import trace_context as context

    return context


def id_formats() -> dict[str, str]:
    """How BentoML prints ids in its logs: ``{"span_id": "016x", "trace_id": "032x"}``."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    formats: dict[str, str] = BentoMLContainer.logging_formatting.get()
    return formats


def worker_index() -> int | None:
    """This process's worker index under ``bentoml serve`` (None outside it)."""
    from bentoml._internal.context import server_context

    index = server_context.worker_index
    return None if index is None else int(index)


def service_configuration(service_name: str, service_config: dict[str, Any]) -> dict[str, Any]:
    """The configuration BentoML will load for the service named ``service_name``, computed
    the same way (BentoML's own loader: its defaults, ``BENTOML_CONFIG``,
    ``BENTOML_CONFIG_OPTIONS``), without installing it.

    Raises:
        Exception: whatever BentoML's loader raises for an invalid configuration.
    """
    import copy

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
            override_defaults={"services": {service_name: copy.deepcopy(service_config)}},
            override_config_json=get_bentoml_override_config_json_from_env(),
            use_version=2,
        ).to_dict()
    finally:
        loader_log.disabled = was_disabled
    return {str(key): value for key, value in config.items()}
