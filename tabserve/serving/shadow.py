"""A shadow challenger: a second model scores every row the champion answered, off the
client's latency path, and its answers go into the record beside the champion's.

``TABSERVE_SHADOW_MODEL`` names the second model in the BentoML store (the pipeline
imports the registry's ``@challenger`` as ``<model>-challenger``). A model call hands its
rows and the champion's answers to :meth:`Shadow.offer` (a list append); one thread per
worker scores them with the shadow model (on the champion's encoded rows when both
encode alike):

- only while the worker serves no prediction: between requests, never beside one (it
  sleeps until the HTTP edge says the last request in flight ended: no polling);
- at most ``shadow_max_share`` of the time (it idles in proportion to the work it did).

Rows that find its queue full are shed and counted
(``tabserve_shadow_rows_total{outcome="shed"}``): under saturation the shadow sees a
sample of the traffic, never a slower champion. Its records hold its answers only (the
features are the champion's records').
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tabserve.core.predictor import Predictor
from tabserve.core.quality import agrees
from tabserve.core.schema import FeatureSchema
from tabserve.http.body import wait_idle

logger = logging.getLogger("tabserve.shadow")

# How long a waiting shadow waits for an idle moment before it looks whether it was stopped.
IDLE_WAIT_S = 0.5
_LOCK = threading.Lock()
_COUNTER: Any = None


def shadow_rows() -> Any:
    """``tabserve_shadow_rows_total{outcome}``: rows the shadow compared (``agree``,
    ``disagree``) or shed."""
    global _COUNTER
    with _LOCK:
        if _COUNTER is None:
            from prometheus_client import Counter

            _COUNTER = Counter(
                "tabserve_shadow_rows",
                "Rows the shadow model scored (agree, disagree: with the champion's answer) "
                "or shed (its queue was full: the service was saturated)",
                labelnames=["outcome"],
            )
        return _COUNTER


class ShadowError(ValueError):
    """The shadow model cannot score the champion's rows (the message says why)."""


def check_compatible(champion: FeatureSchema, shadow: FeatureSchema) -> None:
    """The shadow must read features the champion's rows hold, of the same kind, and
    answer the same task.

    Raises:
        ShadowError: naming what differs.
    """
    kinds = {f.name: f.kind for f in champion.features}
    missing = [f.name for f in shadow.features if f.name not in kinds]
    differ = [f.name for f in shadow.features if f.name in kinds and kinds[f.name] != f.kind]
    if missing or differ:
        raise ShadowError(
            f"the shadow reads features the champion's rows do not hold ({missing}) or holds "
            f"as another kind ({differ})"
        )
    if champion.target.is_regression != shadow.target.is_regression:
        raise ShadowError("the shadow and the champion answer different tasks")


@dataclass(frozen=True)
class _Call:
    rows: Sequence[Mapping[str, Any]]
    answers: Sequence[dict[str, Any]]
    endpoint: str
    source: str
    matrix: np.ndarray | None


class Shadow:
    """Scores the champion's rows with a second model in a thread of its own.

    Args:
        predictor: the shadow model.
        live: the record the shadow's answers go to (``offer(..., role="shadow")``).
        max_share: the most of the wall-clock time the thread may spend scoring.
        capacity: the most rows waiting; more are shed.
        batch_rows: the most rows scored at once (small: a request that arrives while the
            shadow scores waits for that much).
    """

    def __init__(
        self,
        predictor: Predictor,
        live: Any,
        max_share: float = 0.1,
        capacity: int = 10_000,
        batch_rows: int = 64,
        champion: FeatureSchema | None = None,
    ) -> None:
        self.predictor = predictor
        # The champion's encoded rows serve as they are when both models encode alike (the
        # same features, kinds, categories and parts): no second encoding.
        self.same_encoding = champion is not None and (
            champion.features == predictor.schema.features
            and champion.columns == predictor.schema.columns
        )
        self.version = predictor.version
        self.live = live
        self.max_share = max_share
        self.capacity = capacity
        self.batch_rows = batch_rows
        self.counter = shadow_rows()
        for outcome in ("agree", "disagree", "shed"):
            self.counter.labels(outcome=outcome)
        self._waiting: deque[_Call] = deque()
        self._rows = 0
        self._ready = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.compared = 0
        self.agreed = 0
        self.shed = 0

    def offer(
        self,
        rows: Sequence[Mapping[str, Any]],
        answers: Sequence[dict[str, Any]],
        endpoint: str,
        source: str = "api",
        matrix: np.ndarray | None = None,
    ) -> None:
        """Queue a call's rows, the champion's answers and, when given, its encoded rows
        (no I/O, no model call)."""
        count = len(rows)
        with self._ready:
            full = self._rows + count > self.capacity
            if not full:
                kept = matrix if self.same_encoding else None
                self._waiting.append(_Call(rows, answers, endpoint, source, kept))
                self._rows += count
                self._ready.notify()
        if full:
            self.shed += count
            self.counter.labels(outcome="shed").inc(count)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tabserve-shadow", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._ready:
            self._stopped = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _take(self) -> list[_Call]:
        with self._ready:
            while not self._waiting and not self._stopped:
                self._ready.wait()
            taken: list[_Call] = []
            rows = 0
            while self._waiting and (
                not taken or rows + len(self._waiting[0].rows) <= self.batch_rows
            ):
                call = self._waiting.popleft()
                taken.append(call)
                rows += len(call.rows)
            self._rows -= rows
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            if not taken:
                return  # stopped
            while not self._stopped and not wait_idle(IDLE_WAIT_S):
                pass  # the champion is serving: wait (asleep) for a quiet moment
            started = time.perf_counter()
            try:
                self._score(taken)
            except Exception:  # the champion must never notice: say so and go on
                logger.exception("the shadow model failed on %d call(s)", len(taken))
            spent = time.perf_counter() - started
            # Idle in proportion: scoring takes at most max_share of the time.
            time.sleep(spent * (1 / self.max_share - 1))

    def _score(self, taken: list[_Call]) -> None:
        rows = [row for call in taken for row in call.rows]
        champion = [answer for call in taken for answer in call.answers]
        matrices = [call.matrix for call in taken]
        if all(m is not None for m in matrices):
            matrix = np.vstack(matrices)  # type: ignore[arg-type]
        else:
            matrix = self.predictor.matrix(rows)
        shadow = self.predictor.answers(matrix)
        agreed = 0
        for mine, theirs in zip(shadow, champion, strict=True):
            if "id" in theirs:
                mine["id"] = theirs["id"]
            agreed += agrees(theirs, mine)
        self.compared += len(rows)
        self.agreed += agreed
        self.counter.labels(outcome="agree").inc(agreed)
        self.counter.labels(outcome="disagree").inc(len(rows) - agreed)
        start = 0
        for call in taken:
            end = start + len(call.rows)
            self.live.offer(
                call.rows,
                shadow[start:end],
                call.endpoint,
                call.source,
                role="shadow",
                model=self.version,
                features=False,
            )
            start = end

    def status(self) -> dict[str, Any]:
        """This worker's view: version, rows compared, agreed and shed."""
        return {
            "version": self.version,
            "compared": self.compared,
            "agreed": self.agreed,
            "shed": self.shed,
        }
