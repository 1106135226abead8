"""Prometheus metrics of the service, exposed on BentoML's ``/metrics``.

``prometheus_client`` is imported when the metrics are first created, never at
module import: BentoML workers set ``PROMETHEUS_MULTIPROC_DIR`` after importing
the service module, and a client initialised before that would write nowhere
``/metrics`` reads from.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tabserve.core.drift import DriftReport

_LOCK = threading.Lock()
_METRICS: ServiceMetrics | None = None
_DRIFT_METRICS: DriftMetrics | None = None
_READY: Any = None
_LOG_LOST: Any = None
_UNKNOWN: Any = None

# Rows per model call: 1 up to well past the default max batch size.
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def value_buckets(quantiles: Sequence[float]) -> tuple[float, ...]:
    """Histogram buckets for predicted values: the training target's deciles (distinct,
    sorted), so that each bucket holds about a tenth of what training saw."""
    return tuple(sorted({float(q) for q in quantiles})) or (0.0,)


@dataclass
class ServiceMetrics:
    """The tabserve metrics (process-wide singletons: a registry accepts a name once)."""

    predictions: Any
    batch_rows: Any
    model_info: Any
    predicted_values: Any = None  # created for a regression model (buckets from its target)

    def use_value_buckets(self, quantiles: Sequence[float]) -> None:
        """Create ``tabserve_predicted_value`` with buckets from the target's quantiles
        (once per process: a process serves one model)."""
        with _LOCK:
            if self.predicted_values is None:
                from prometheus_client import Histogram

                self.predicted_values = Histogram(
                    "tabserve_predicted_value",
                    "Predicted values (regression models), buckets at the training "
                    "target's deciles",
                    labelnames=["endpoint", "source"],
                    buckets=value_buckets(quantiles),
                )

    def record(self, endpoint: str, answers: Sequence[dict[str, Any]], source: str = "api") -> None:
        """Count one model call: its rows, and what it answered (the class of each row,
        or each predicted value into ``tabserve_predicted_value``)."""
        self.batch_rows.labels(endpoint=endpoint, source=source).observe(len(answers))
        if answers and "value" in answers[0]:
            if self.predicted_values is not None:
                histogram = self.predicted_values.labels(endpoint=endpoint, source=source)
                for answer in answers:
                    histogram.observe(answer["value"])
            return
        counts: dict[str, int] = {}
        for answer in answers:
            label = str(answer["label"])
            counts[label] = counts.get(label, 0) + 1
        for label, count in counts.items():
            self.predictions.labels(endpoint=endpoint, label=label, source=source).inc(count)

    def set_model(self, version: str, tag: str, registry_version: str, run_id: str) -> None:
        """Publish the served model's identity as an info-style gauge (value 1)."""
        self.model_info.labels(
            version=version, tag=tag, registry_version=registry_version, mlflow_run_id=run_id
        ).set(1)


def service_metrics() -> ServiceMetrics:
    """The process's :class:`ServiceMetrics`, created on first use."""
    global _METRICS
    with _LOCK:
        if _METRICS is None:
            from prometheus_client import Counter, Gauge, Histogram

            _METRICS = ServiceMetrics(
                predictions=Counter(
                    "tabserve_predictions",
                    "Rows predicted, by predicted class and source (api, ui)",
                    labelnames=["endpoint", "label", "source"],
                ),
                batch_rows=Histogram(
                    "tabserve_batch_rows",
                    "Rows per model call (adaptive batches merge concurrent requests)",
                    labelnames=["endpoint", "source"],
                    buckets=ROW_BUCKETS,
                ),
                model_info=Gauge(
                    "tabserve_model_info",
                    "The served model (value is always 1)",
                    labelnames=["version", "tag", "registry_version", "mlflow_run_id"],
                    multiprocess_mode="max",
                ),
            )
        return _METRICS


@dataclass(frozen=True)
class DriftMetrics:
    """The drift gauges. Each worker publishes its own window's numbers; Prometheus'
    multiprocess mode exports the largest PSI (and missing-rate change) among the live
    workers, and the sum of their window sizes."""

    feature_psi: Any
    missing_delta: Any
    prediction_psi: Any
    window_rows: Any
    new_category_share: Any

    def publish(self, report: DriftReport, min_rows: int) -> None:
        """Set the gauges from a window's report (the PSIs once it holds ``min_rows``)."""
        self.window_rows.set(report.rows)
        if report.rows < min_rows:
            return
        for feature, value in report.feature_psi.items():
            self.feature_psi.labels(feature=feature).set(value)
        for feature, value in report.missing_delta.items():
            self.missing_delta.labels(feature=feature).set(value)
        if report.prediction_psi is not None:
            self.prediction_psi.set(report.prediction_psi)


def drift_metrics() -> DriftMetrics:
    """The process's :class:`DriftMetrics`, created on first use (never at import)."""
    global _DRIFT_METRICS
    with _LOCK:
        if _DRIFT_METRICS is None:
            from prometheus_client import Gauge

            _DRIFT_METRICS = DriftMetrics(
                feature_psi=Gauge(
                    "tabserve_feature_drift_psi",
                    "PSI of each feature in the rolling window of served rows against the "
                    "training reference (largest among live workers)",
                    labelnames=["feature"],
                    multiprocess_mode="livemax",
                ),
                missing_delta=Gauge(
                    "tabserve_feature_missing_delta",
                    "Missing rate of each feature in the window minus the training one "
                    "(largest among live workers)",
                    labelnames=["feature"],
                    multiprocess_mode="livemax",
                ),
                prediction_psi=Gauge(
                    "tabserve_prediction_drift_psi",
                    "PSI of the window's predictions against the validation split's "
                    "(largest among live workers)",
                    multiprocess_mode="livemax",
                ),
                window_rows=Gauge(
                    "tabserve_drift_window_rows",
                    "Rows in the drift windows (summed over live workers)",
                    multiprocess_mode="livesum",
                ),
                new_category_share=Gauge(
                    "tabserve_feature_new_category_share",
                    "Share of the window's rows whose value of a categorical feature was "
                    "never seen in training (largest among live workers)",
                    labelnames=["feature"],
                    multiprocess_mode="livemax",
                ),
            )
        return _DRIFT_METRICS


def unknown_categories() -> Any:
    """``tabserve_unknown_category_total{feature}``: values of a categorical feature
    outside the categories the model keeps (never seen in training, or folded into its
    ``other`` level), read as missing or as that level, and answered."""
    global _UNKNOWN
    with _LOCK:
        if _UNKNOWN is None:
            from prometheus_client import Counter

            _UNKNOWN = Counter(
                "tabserve_unknown_category",
                "Values of a categorical feature outside the categories the model keeps, "
                "answered as missing or as the feature's other level",
                labelnames=["feature"],
            )
        return _UNKNOWN


def inference_log_lost() -> Any:
    """``tabserve_inference_log_lost_rows_total``: answered rows the inference log could not
    write (a full or failing disk); the answers themselves were sent."""
    global _LOG_LOST
    with _LOCK:
        if _LOG_LOST is None:
            from prometheus_client import Counter

            _LOG_LOST = Counter(
                "tabserve_inference_log_lost_rows",
                "Answered rows the inference log could not write (disk full or failing)",
            )
        return _LOG_LOST


def forget_dead_workers() -> list[int]:
    """Remove the live gauges of worker processes that died without saying so.

    In Prometheus' multiprocess mode each process writes its ``live*`` gauges to files of
    its own, which only the process itself removes when it exits cleanly. A worker killed
    outright (SIGKILL, the OOM killer) leaves them, and ``/metrics`` would go on reporting
    its last values (``tabserve_ready``, the drift gauges) next to those of the worker
    the supervisor started in its place. Returns the pids forgotten.
    """
    import re

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not os.path.isdir(directory):
        return []
    pids = {
        int(found.group(1))
        for name in os.listdir(directory)
        if (found := re.fullmatch(r"gauge_live\w*?_(\d+)\.db", name))
    }
    dead = [pid for pid in pids if not _alive(pid)]
    if dead:
        from prometheus_client import multiprocess

        for pid in dead:
            multiprocess.mark_process_dead(pid, directory)
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def ready_gauge() -> Any:
    """``tabserve_ready``: 1 once the worker's model is loaded and verified, 0 while it is
    refused (the smallest among live workers: one unready worker shows)."""
    global _READY
    with _LOCK:
        if _READY is None:
            from prometheus_client import Gauge

            _READY = Gauge(
                "tabserve_ready",
                "1 when the model is loaded and verified (/readyz 200), else 0",
                multiprocess_mode="livemin",
            )
        return _READY
