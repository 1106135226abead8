"""BentoML's request metrics, labelled by route instead of by raw path.

BentoML counts and times every request (``bentoml_service_request_total``,
``..._duration_seconds``, ``..._in_progress``) labelled with the request's raw path. Any
client, anonymous included, can make up paths (``/a1``, ``/a2``...), and every one adds
series that ``/metrics`` then serves for the life of the worker: unbounded cardinality,
driven from outside. Here BentoML's own middleware is kept, and only the path it reads is
folded first: a route of the service keeps its path, a path under a mounted app's prefix
becomes the prefix (``/ui``), and anything else becomes :data:`OTHER`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tabserve.serving.bentoml_private import adjust_app_middlewares, request_metrics_middleware

OTHER = "other"
_REAL_PATH = "tabserve.real_path"


def path_label(path: str, routes: frozenset[str], prefixes: tuple[str, ...]) -> str:
    """The ``endpoint`` label of ``path``: itself if it is a route, else its mounted
    prefix, else :data:`OTHER`."""
    if path in routes:
        return path
    for prefix in prefixes:
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return OTHER


class _RestorePath:
    """Gives the app below the real path back (BentoML's metrics middleware saw the label)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        real = scope.get(_REAL_PATH)
        if real is not None:
            scope = {**scope, "path": real}
            del scope[_REAL_PATH]
        await self.app(scope, receive, send)


def fold_request_metric_paths(routes: Iterable[str], prefixes: Iterable[str]) -> bool:
    """Label BentoML's request metrics by :func:`path_label` in every worker's app; True if
    installed now (see :func:`~tabserve.serving.bentoml_private.adjust_app_middlewares`)."""
    known, mounted = frozenset(routes), tuple(prefixes)
    metrics = request_metrics_middleware()

    class FoldedPathMetrics(metrics):  # type: ignore[misc,valid-type]
        """BentoML's request metrics, reading the folded path."""

        def __init__(self, app: Any, **options: Any) -> None:
            super().__init__(_RestorePath(app), **options)

        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope.get("type") == "http":
                label = path_label(scope["path"], known, mounted)
                if label != scope["path"]:
                    scope = {**scope, "path": label, _REAL_PATH: scope["path"]}
            await super().__call__(scope, receive, send)

    def folded(listed: list[Any]) -> list[Any]:
        for entry in listed:
            if entry.cls is metrics:
                entry.cls = FoldedPathMetrics
        return listed

    return adjust_app_middlewares("request-metrics-by-route", folded)
