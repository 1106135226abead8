"""Prometheus metrics of the service, exposed on BentoML's ``/metrics``.

``prometheus_client`` is imported when the metrics are first created, never at
module import: BentoML workers set ``PROMETHEUS_MULTIPROC_DIR`` after importing
the service module, and a client initialised before that would write nowhere
``/metrics`` reads from.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_LOCK = threading.Lock()
_METRICS: ServiceMetrics | None = None
_AUTH_METRICS: AuthMetrics | None = None
# The outcomes of a login attempt (``tabserve_login_attempts_total{outcome}``).
LOGIN_OUTCOMES = ("success", "failure", "throttled", "busy")

# Rows per model call: 1 up to well past the default max batch size.
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class ServiceMetrics:
    """The tabserve metrics (process-wide singletons: a registry accepts a name once)."""

    predictions: Any
    batch_rows: Any
    model_info: Any

    def record_batch(self, endpoint: str, labels: Sequence[Any]) -> None:
        """Count one model call over ``labels`` (one predicted label per row)."""
        self.batch_rows.labels(endpoint=endpoint).observe(len(labels))
        counts: dict[str, int] = {}
        for label in labels:
            counts[str(label)] = counts.get(str(label), 0) + 1
        for label, count in counts.items():
            self.predictions.labels(endpoint=endpoint, label=label).inc(count)

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
                    "Rows predicted, by predicted class",
                    labelnames=["endpoint", "label"],
                ),
                batch_rows=Histogram(
                    "tabserve_batch_rows",
                    "Rows per model call (adaptive batches merge concurrent requests)",
                    labelnames=["endpoint"],
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
class AuthMetrics:
    """Login and revocation counters (what the auth dashboards and alerts read)."""

    login_attempts: Any
    revoked_rejected: Any

    def login(self, outcome: str) -> None:
        """Count one login attempt: ``success``, ``failure`` (wrong password or unknown
        user, after the hash), ``throttled`` (too many failures) or ``busy`` (refused
        because every verification slot stayed taken)."""
        self.login_attempts.labels(outcome=outcome).inc()

    def revoked(self) -> None:
        """Count one request refused because its token was revoked."""
        self.revoked_rejected.inc()


def auth_metrics() -> AuthMetrics:
    """The process's :class:`AuthMetrics`, created on first use (never at import)."""
    global _AUTH_METRICS
    with _LOCK:
        if _AUTH_METRICS is None:
            from prometheus_client import Counter

            attempts = Counter(
                "tabserve_login_attempts",
                "Login attempts (token endpoint and UI), by outcome",
                labelnames=["outcome"],
            )
            for outcome in LOGIN_OUTCOMES:  # every series exists from the start, at 0
                attempts.labels(outcome=outcome)
            _AUTH_METRICS = AuthMetrics(
                login_attempts=attempts,
                revoked_rejected=Counter(
                    "tabserve_revoked_tokens_rejected",
                    "Requests refused because their token (or its subject) was revoked",
                ),
            )
        return _AUTH_METRICS
