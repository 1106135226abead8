"""The loaded service instance, as the middlewares see it.

Every middleware is given a function that returns the worker's loaded instance (or None
before it is ready); reading the settings from the instance keeps one settings object
per worker, read when the service started.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from tabserve.core.validation import RequestValidator
from tabserve.http.settings import EdgeSettings


class RowRecorder(Protocol):
    """What keeps the served rows (the serving layer's monitor)."""

    @property
    def logging_rows(self) -> bool:
        """Whether each request's rows and answers are recorded."""

    def log_rows(
        self,
        rows: Sequence[Mapping[str, Any]],
        answers: Sequence[dict[str, Any]],
        *,
        request_id: str | None,
        endpoint: str,
        source: str = "api",
    ) -> None:
        """Record one request's rows and answers."""


class ServingState(Protocol):
    """What the middlewares need from the loaded service instance."""

    @property
    def model_version(self) -> str:
        """The version callers see in ``X-Model-Version``."""

    @property
    def validator(self) -> RequestValidator:
        """The request validator built from the model's schema."""

    @property
    def settings(self) -> EdgeSettings:
        """The worker's settings (keys, limits), loaded when the service started."""

    @property
    def monitor(self) -> RowRecorder:
        """What records model calls (the inference log among them)."""


StateProvider = Callable[[], "ServingState | None"]
