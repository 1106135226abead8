"""What the service records about every model call: metrics, drift, the inference log and
the served-rows record.

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
from tabserve.http.envelope import new_request_id
from tabserve.serving.inference_log import InferenceLog
from tabserve.serving.live import LiveRecord
from tabserve.serving.metrics import (
    DriftMetrics,
    ServiceMetrics,
    drift_metrics,
    forget_dead_workers,
    unknown_categories,
)
from tabserve.serving.settings import MonitoringSettings
from tabserve.serving.shadow import Shadow

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
        # Rows added since the gauges were last computed: the publisher's cue.
        self._stale = False
        self._stopped = threading.Event()
        self._publisher: threading.Thread | None = None
        # Unknown categories reported by the validator, waiting for the model call that
        # answers their rows; then in a window of about as many rows as the drift's.
        self._pending_unknown: Counter[str] = Counter()
        self._unknown_window: deque[tuple[int, Counter[str]]] = deque()
        self._unknown_rows = 0
        self._unknown_metric = unknown_categories()
        # The served-rows record (TABSERVE_RECORD_URL) and the shadow challenger
        # (TABSERVE_SHADOW_MODEL), set by the service once started.
        self.live: LiveRecord | None = None
        self.shadow: Shadow | None = None

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
        recomputed here at most every ``drift_publish_interval_s``, and by the publisher
        thread once that interval has passed, so that they never lag the traffic)."""
        self.metrics.record(endpoint, answers, source)
        if self._pending_unknown or self._unknown_window:
            self._count_unknown(len(matrix))
        if self.window is None or self.drift is None:
            return
        self.window.add(matrix, answers if endpoint == "predict" else None)
        with self._lock:
            self._stale = True
        self.publish_if_due()

    def publish_if_due(self) -> bool:
        """Recompute the drift gauges if rows came in (or the window ages out rows) and
        ``drift_publish_interval_s`` has passed since the last time; whether it did."""
        if self.window is None or self.drift is None:
            return False
        now = self._clock()
        with self._lock:
            changing = self._stale or self.settings.drift_window_s is not None
            due = changing and now - self._published >= self.settings.drift_publish_interval_s
            if due:
                self._published, self._stale = now, False
        if due:
            self.drift.publish(self.window.report(), self.settings.drift_min_rows)
            shares = self.new_category_shares()
            for feature in self._categorical:
                self.drift.new_category_share.labels(feature=feature).set(shares.get(feature, 0.0))
            forget_dead_workers()  # a killed worker's gauges must not outlive it
        return due

    def start_publisher(self) -> None:
        """Start the thread that brings the gauges up to date after traffic stops (a
        burst's last rows were published by no model call: the interval had not passed).
        Not needed with ``drift_publish_interval_s`` 0, where every call publishes."""
        interval = self.settings.drift_publish_interval_s
        if self.window is None or interval <= 0 or self._publisher is not None:
            return

        def run() -> None:
            while not self._stopped.wait(interval):
                try:
                    self.publish_if_due()
                except Exception:  # a gauge must never kill the worker; say so and go on
                    logger.exception("publishing the drift gauges failed")

        self._publisher = threading.Thread(target=run, name="tabserve-drift", daemon=True)
        self._publisher.start()

    def stop_publisher(self) -> None:
        """Stop the publisher thread (tests; a worker's exit stops it anyway)."""
        self._stopped.set()
        if self._publisher is not None:
            self._publisher.join(timeout=5)

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

    def record(
        self,
        rows: Sequence[Mapping[str, Any]],
        answers: Sequence[dict[str, Any]],
        endpoint: str,
        source: str = "api",
        matrix: np.ndarray | None = None,
    ) -> None:
        """Queue answered rows (their answers carry their ids) for the served-rows record,
        when it is on, and predicted ones (with their encoded ``matrix``, when given) for
        the shadow, when one runs."""
        if self.live is not None:
            self.live.offer(rows, answers, endpoint, source)
        if self.shadow is not None and endpoint == "predict":
            self.shadow.offer(rows, answers, endpoint, source, matrix)

    @property
    def logging_rows(self) -> bool:
        """Whether the inference log is on (the gateway keeps request bodies only then)."""
        return self.log is not None


def named_answers(
    answers: Sequence[dict[str, Any]], request_id: str | None
) -> list[dict[str, Any]]:
    """Answers given their rows' ids, ``<request id>-<index>`` (the UI's rows: the API's
    get theirs from the HTTP edge, :mod:`tabserve.http.body`)."""
    prefix = request_id or new_request_id()
    return [{**answer, "id": f"{prefix}-{index}"} for index, answer in enumerate(answers)]
