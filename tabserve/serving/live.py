"""The served-rows record in a worker: rows recorded as they are answered, ground truth
taken in (``POST /feedback``), and the live quality published from both.

One :class:`LiveRecord` per worker when ``TABSERVE_RECORD_URL`` is set. Every worker and
replica writing to the same store shares one record: feedback is checked against it
whichever worker served the row, and each worker publishes the live quality it reads
from it (the same figures: the gauges keep the most recently published value).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tabserve.core.quality import actual_label, actual_value, agrees, answers_quality
from tabserve.record.backends import open_store
from tabserve.record.rows import LabelledRow, Recorded, Served
from tabserve.record.settings import RecordSettings
from tabserve.record.store import StoreError
from tabserve.record.writer import DROP_REASONS, Recorder

# Every worker computes the same figures from the shared record, each at its own moment:
# the gauges below keep the most recently published value among live workers
# ("livemostrecent"), never a stale worker's.

logger = logging.getLogger("tabserve.record")

_LOCK = threading.Lock()
_METRICS: LiveMetrics | None = None

# The pipeline's test metrics that live quality has a figure for, by their live name.
TEST_METRICS = {
    "accuracy": "accuracy",
    "log_loss": "log_loss",
    "roc_auc": "roc_auc",
    "rmse": "rmse",
    "mae": "mae",
    "interval_coverage": "coverage",
}
# Seconds from answer to ground truth: a second up to a month.
DELAY_BUCKETS = (1, 10, 60, 600, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400)
MAX_ID_CHARS = 100
OUTCOMES = ("recorded", "unknown_id", "invalid", "duplicate")


@dataclass(frozen=True)
class LiveMetrics:
    """The record's and live quality's Prometheus metrics."""

    recorded: Any
    dropped: Any
    feedback_rows: Any
    feedback_delay: Any
    quality: Any
    labelled_rows: Any
    test_quality: Any
    shadow_agreement: Any
    shadow_quality: Any
    shadow_labelled_rows: Any


def live_metrics() -> LiveMetrics:
    """The process's :class:`LiveMetrics`, created on first use (never at import)."""
    global _METRICS
    with _LOCK:
        if _METRICS is None:
            from prometheus_client import Counter as PromCounter
            from prometheus_client import Gauge, Histogram

            _METRICS = LiveMetrics(
                recorded=PromCounter(
                    "tabserve_recorded_rows",
                    "Answered rows written to the served-rows record, by role",
                    labelnames=["role"],
                ),
                dropped=PromCounter(
                    "tabserve_record_dropped_rows",
                    "Answered rows the record could not keep (queue_full: the store is slower "
                    "than the traffic; store_error: the store failed; unencodable: a value JSON "
                    "cannot hold); the answers were sent",
                    labelnames=["reason"],
                ),
                feedback_rows=PromCounter(
                    "tabserve_feedback_rows",
                    "Ground-truth rows received on POST /feedback, by outcome",
                    labelnames=["outcome"],
                ),
                feedback_delay=Histogram(
                    "tabserve_feedback_delay_seconds",
                    "Time from a row's answer to its ground truth (recorded rows)",
                    buckets=DELAY_BUCKETS,
                ),
                quality=Gauge(
                    "tabserve_live_quality",
                    "The model's quality on its most recently labelled served rows (accuracy, "
                    "log_loss, roc_auc; rmse, mae, coverage), per model version and role",
                    labelnames=["metric", "model", "role"],
                    multiprocess_mode="livemostrecent",
                ),
                labelled_rows=Gauge(
                    "tabserve_live_labelled_rows",
                    "Labelled served rows the live quality figures stand on",
                    labelnames=["model", "role"],
                    multiprocess_mode="livemostrecent",
                ),
                test_quality=Gauge(
                    "tabserve_test_quality",
                    "The served model's quality on its test split (the pipeline's figures)",
                    labelnames=["metric", "model"],
                    multiprocess_mode="livemostrecent",
                ),
                shadow_agreement=Gauge(
                    "tabserve_shadow_agreement",
                    "Share of the shadow's most recent rows whose answer agrees with the "
                    "champion's (the same class; regression: inside the champion's interval)",
                    labelnames=["model"],
                    multiprocess_mode="livemostrecent",
                ),
                shadow_quality=Gauge(
                    "tabserve_shadow_paired_quality",
                    "The shadow's and the champion's quality on the same labelled rows (the "
                    "shadow's most recently labelled ones), by shadow model and role",
                    labelnames=["metric", "model", "role"],
                    multiprocess_mode="livemostrecent",
                ),
                shadow_labelled_rows=Gauge(
                    "tabserve_shadow_paired_rows",
                    "Labelled rows both the shadow and the champion answered (what the paired "
                    "quality stands on)",
                    labelnames=["model"],
                    multiprocess_mode="livemostrecent",
                ),
            )
        return _METRICS


@dataclass(frozen=True)
class Outcome:
    """What became of one feedback row."""

    id: Any
    outcome: str
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        answer = {"id": self.id, "outcome": self.outcome}
        if self.reason is not None:
            answer["reason"] = self.reason
        return answer


class LiveRecord:
    """A worker's side of the served-rows record.

    Args:
        settings: the record section of the settings (``record_url`` set).
        model_version: the version the served rows name.
        classes: the model's classes (None: a regression model).
        test_metrics: the served model's test figures (its lineage's metrics).
        names: the champion's features, in the order of its validated rows' values (the
            shadow scores the same rows: its records hold them in this order too).
    """

    def __init__(
        self,
        settings: RecordSettings,
        model_version: str,
        classes: Sequence[Any] | None,
        test_metrics: Mapping[str, float],
        names: Sequence[str] = (),
    ) -> None:
        assert settings.record_url is not None
        self.settings = settings
        self.model_version = model_version
        self.names = tuple(names)
        self.classes = list(classes) if classes is not None else None
        self.store = open_store(settings.record_url, settings.record_timeout_s)
        self.metrics = live_metrics()
        self.recorder = Recorder(
            self.store,
            capacity=settings.record_queue_rows,
            batch_rows=settings.record_batch_rows,
            flush_s=settings.record_flush_s,
            retention_s=settings.record_retention_days * 86_400,
            on_written=self._written,
            on_dropped=lambda rows, reason: self.metrics.dropped.labels(reason=reason).inc(rows),
        )
        for name, live_name in TEST_METRICS.items():
            if name in test_metrics:
                self.metrics.test_quality.labels(metric=live_name, model=model_version).set(
                    test_metrics[name]
                )
        for reason in DROP_REASONS:
            self.metrics.dropped.labels(reason=reason)
        for outcome in OUTCOMES:
            self.metrics.feedback_rows.labels(outcome=outcome)
        self._stopped = threading.Event()
        self._publisher: threading.Thread | None = None
        # The shadow's figures as last published (the UI's model card reads them).
        self.shadow_status: dict[str, dict[str, Any]] = {}

    # ---- served rows ------------------------------------------------------------------
    def _written(self, calls: Sequence[Recorded]) -> None:
        rows: Counter[str] = Counter()
        for call in calls:
            rows[call.role] += len(call)
        for role, count in rows.items():
            self.metrics.recorded.labels(role=role).inc(count)

    def offer(
        self,
        rows: Sequence[Mapping[str, Any]],
        answers: Sequence[dict[str, Any]],
        endpoint: str,
        source: str,
        role: str = "champion",
        model: str | None = None,
        features: bool = True,
    ) -> None:
        """Queue answered rows for the record, each named by its answer's ``id``; with
        ``features`` False, the answers only (a shadow's: the champion's record holds the
        same rows' features). A call's rows all came through the HTTP edge or the UI, which
        gave each an id, or none did (a direct call's: not recorded). The recorder encodes
        the rows here, in the model call (:meth:`Recorder.offer`)."""
        if answers and "id" in answers[0]:
            self.recorder.offer(
                Served(
                    role=role,
                    model=model or self.model_version,
                    endpoint=endpoint,
                    source=source,
                    served_at=time.time(),
                    names=self.names,
                    rows=rows,
                    answers=answers,
                    features=features,
                )
            )

    # ---- ground truth -----------------------------------------------------------------
    def _truth(self, item: Any) -> tuple[str, Any] | Outcome:
        if not isinstance(item, Mapping):
            return Outcome(None, "invalid", 'each row is an object: {"id": ..., "actual": ...}')
        row_id = item.get("id")
        if not isinstance(row_id, str) or not 0 < len(row_id) <= MAX_ID_CHARS:
            return Outcome(row_id, "invalid", "id must be the id of an answered row (text)")
        if "actual" not in item:
            return Outcome(row_id, "invalid", "actual is missing")
        try:
            if self.classes is None:
                return row_id, actual_value(item["actual"])
            return row_id, actual_label(item["actual"], self.classes)
        except ValueError as exc:
            return Outcome(row_id, "invalid", f"actual {exc}")

    def feedback(self, items: Sequence[Any]) -> list[Outcome]:
        """Record the ground truth of served rows; one outcome per item, in order.

        ``recorded``; ``unknown_id`` (never answered, or older than the retention);
        ``invalid`` (with the reason); ``duplicate`` (already recorded: the first report
        stands). A row answered in the last moments may still wait in a worker's queue:
        ids not found are looked up once more after ``record_flush_s``.

        Raises:
            StoreError: the store cannot be reached.
        """
        outcomes: list[Outcome | None] = [None] * len(items)
        truths: dict[str, tuple[int, Any]] = {}
        for index, item in enumerate(items):
            truth = self._truth(item)
            if isinstance(truth, Outcome):
                outcomes[index] = truth
            elif truth[0] in truths:
                outcomes[index] = Outcome(truth[0], "duplicate", "named twice in this request")
            else:
                truths[truth[0]] = (index, truth[1])
        served = self.store.served(list(truths)) if truths else {}
        if len(served) < len(truths):
            self.recorder.flush(timeout_s=self.settings.record_flush_s * 4)
            time.sleep(self.settings.record_flush_s)  # other workers' last writes
            served |= self.store.served([i for i in truths if i not in served])
        now = time.time()
        known = [(row_id, truths[row_id][1]) for row_id in truths if row_id in served]
        duplicates = self.store.add_feedback(known, now) if known else set()
        for row_id, (index, _) in truths.items():
            if row_id not in served:
                outcomes[index] = Outcome(row_id, "unknown_id", "no answered row has this id")
            elif row_id in duplicates:
                outcomes[index] = Outcome(row_id, "duplicate", "already recorded")
            else:
                outcomes[index] = Outcome(row_id, "recorded")
                self.metrics.feedback_delay.observe(max(0.0, now - served[row_id]["served_at"]))
        done = [o for o in outcomes if o is not None]
        for outcome, count in Counter(o.outcome for o in done).items():
            self.metrics.feedback_rows.labels(outcome=outcome).inc(count)
        return done

    # ---- live quality -----------------------------------------------------------------
    def quality(self) -> dict[tuple[str, str], tuple[int, dict[str, float]]]:
        """Per (model version, role): how many labelled rows, and the quality on them."""
        since = time.time() - self.settings.record_retention_days * 86_400
        labelled = self.store.labelled(per_model=self.settings.live_quality_rows, since=since)
        groups: dict[tuple[str, str], list[LabelledRow]] = defaultdict(list)
        for row in labelled:
            # Predictions only: an explanation carries no probabilities or interval.
            if "probabilities" in row.answer or "interval" in row.answer:
                groups[(row.model, row.role)].append(row)
        return {
            key: (len(rows), answers_quality([r.answer for r in rows], [r.actual for r in rows]))
            for key, rows in groups.items()
        }

    def shadow_figures(self) -> dict[str, dict[str, Any]]:
        """Per shadow model: its agreement with the champion over its most recent rows,
        and both models' quality on the same labelled rows."""
        since = time.time() - self.settings.record_retention_days * 86_400
        limit = self.settings.live_quality_rows
        recent = self.store.pairs(limit, since=since)
        labelled = self.store.pairs(limit, labelled=True, since=since)
        figures: dict[str, dict[str, Any]] = {}
        for model in sorted({pair.shadow_model for pair in recent}):
            compared = [(p.champion, p.shadow) for p in recent if p.shadow_model == model]
            paired = [(p.champion, p.shadow, p.actual) for p in labelled if p.shadow_model == model]
            truths = [actual for _, _, actual in paired]
            figures[model] = {
                "compared": len(compared),
                "agreement": sum(agrees(c, s) for c, s in compared) / len(compared),
                "labelled": len(paired),
                "champion": answers_quality([c for c, _, _ in paired], truths),
                "shadow": answers_quality([s for _, s, _ in paired], truths),
            }
        return figures

    def publish_quality(self) -> None:
        """Recompute the live quality gauges (and the shadow's) from the record."""
        for (model, role), (rows, figures) in self.quality().items():
            for metric, value in figures.items():
                if math.isfinite(value):
                    self.metrics.quality.labels(metric=metric, model=model, role=role).set(value)
            self.metrics.labelled_rows.labels(model=model, role=role).set(rows)
        shadows = self.shadow_figures()
        for model, shadow in shadows.items():
            self.metrics.shadow_agreement.labels(model=model).set(shadow["agreement"])
            self.metrics.shadow_labelled_rows.labels(model=model).set(shadow["labelled"])
            for role in ("champion", "shadow"):
                for metric, value in shadow[role].items():
                    if math.isfinite(value):
                        self.metrics.shadow_quality.labels(
                            metric=metric, model=model, role=role
                        ).set(value)
        self.shadow_status = shadows

    # ---- threads ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread and the live-quality publisher."""
        self.recorder.start()
        if self._publisher is not None:
            return

        def run() -> None:
            interval = self.settings.live_quality_interval_s
            warned = -float("inf")
            while not self._stopped.wait(interval):
                try:
                    self.publish_quality()
                except StoreError as exc:  # once a minute at most while it lasts
                    now = time.monotonic()
                    if now - warned >= 60:
                        logger.warning("live quality not published (record unreachable): %s", exc)
                        warned = now
                except Exception:  # a gauge must never kill the worker
                    logger.exception("publishing the live quality failed")

        self._publisher = threading.Thread(target=run, name="tabserve-live", daemon=True)
        self._publisher.start()

    def stop(self) -> None:
        """Write what waits, and stop both threads (tests; a worker's exit stops them)."""
        self._stopped.set()
        self.recorder.stop()
        if self._publisher is not None:
            self._publisher.join(timeout=5)
