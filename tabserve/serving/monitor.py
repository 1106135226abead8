"""What the service records about every model call: metrics, drift and the inference log.

One :class:`Monitor` per worker, shared by the API (``service.py``) and the UI, so rows
scored in the browser count exactly like the API's (labelled ``source="ui"``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tabserve.core.drift import DriftWindow, Reference
from tabserve.serving.inference_log import InferenceLog
from tabserve.serving.metrics import (
    DriftMetrics,
    ServiceMetrics,
    drift_metrics,
    forget_dead_workers,
    unknown_categories,
)
from tabserve.serving.settings import MonitoringSettings

logger = logging.getLogger("tabserve.monitor")


class Monitor:
    """Records model calls.

    Args:
        metrics: the service's metrics.
        settings: the drift window and inference log settings.
        reference: the model's drift reference (None: no drift gauges).
        schema: the model's schema.
        model_version: the version the inference log names.
        clock: time source (seconds).
    """

    def __init__(
        self,
        metrics: ServiceMetrics,
        settings: MonitoringSettings,
        reference: Reference | None,
        schema: Any,
        model_version: str,
        clock: Any = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.settings = settings
        self._clock = clock
        self._categorical = [f.name for f in schema.features if f.kind == "categorical"]
        self.window: DriftWindow | None = None
        self.drift: DriftMetrics | None = None
        if settings.drift_enabled and reference is not None:
            self.window = DriftWindow(
                reference, schema, settings.drift_window_rows, settings.drift_window_s, clock
            )
            self.drift = drift_metrics()
        self.log: InferenceLog | None = None
        if settings.inference_log_dir is not None:
            self.log = InferenceLog(
                settings.inference_log_dir,
                settings.inference_log_max_bytes,
                settings.inference_log_backups,
                model_version,
                settings.inference_log_warn_interval_s,
            )
            logger.info("writing served rows to %s", self.log.path)
        self._published = -float("inf")
        self._lock = threading.Lock()
        # Unknown categories reported by the validator, waiting for the model call that
        # answers their rows; then in a window of about as many rows as the drift's.
        self._pending_unknown: Counter[str] = Counter()
        self._unknown_window: deque[tuple[int, Counter[str]]] = deque()
        self._unknown_rows = 0
        self._unknown_metric = unknown_categories()

    def unknown_category(self, feature: str) -> None:
        """A value of ``feature`` never seen in training was read as missing (the
        validator's report, ``TABSERVE_UNKNOWN_CATEGORY=missing``)."""
        self._unknown_metric.labels(feature=feature).inc()
        with self._lock:
            self._pending_unknown[feature] += 1

    def _count_unknown(self, rows: int) -> None:
        with self._lock:
            counts, self._pending_unknown = self._pending_unknown, Counter()
            self._unknown_window.append((rows, counts))
            self._unknown_rows += rows
            while (
                self._unknown_rows - self._unknown_window[0][0] >= self.settings.drift_window_rows
            ):
                self._unknown_rows -= self._unknown_window.popleft()[0]

    def new_category_shares(self) -> dict[str, float]:
        """Per categorical feature with unknown values lately: their share of the rows."""
        with self._lock:
            total: Counter[str] = Counter()
            for _, counts in self._unknown_window:
                total.update(counts)
            rows = self._unknown_rows
        return {feature: count / rows for feature, count in total.items()} if rows else {}

    def observe(
        self,
        endpoint: str,
        matrix: np.ndarray,
        answers: Sequence[dict[str, Any]],
        source: str = "api",
    ) -> None:
        """Count one model call and add its rows to the drift window (the gauges are
        refreshed at most every ``drift_publish_interval_s``)."""
        self.metrics.record(endpoint, answers, source)
        if self._pending_unknown or self._unknown_window:
            self._count_unknown(len(matrix))
        if self.window is None or self.drift is None:
            return
        self.window.add(matrix, answers if endpoint == "predict" else None)
        now = self._clock()
        with self._lock:
            due = now - self._published >= self.settings.drift_publish_interval_s
            if due:
                self._published = now
        if due:
            self.drift.publish(self.window.report(), self.settings.drift_min_rows)
            shares = self.new_category_shares()
            for feature in self._categorical:
                self.drift.new_category_share.labels(feature=feature).set(shares.get(feature, 0.0))
            forget_dead_workers()  # a killed worker's gauges must not outlive it

    def log_rows(
        self,
        rows: Sequence[Mapping[str, Any]],
        answers: Sequence[dict[str, Any]],
        *,
        request_id: str | None,
        endpoint: str,
        source: str = "api",
    ) -> None:
        """Write answered rows to the inference log, when it is on."""
        if self.log is not None:
            self.log.write(rows, answers, request_id=request_id, endpoint=endpoint, source=source)

    @property
    def logging_rows(self) -> bool:
        """Whether the inference log is on (the gateway keeps request bodies only then)."""
        return self.log is not None
