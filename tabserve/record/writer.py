"""Served rows written to the record off the response path: a bounded queue and a thread.

A model call hands its rows to :meth:`Recorder.offer`, which encodes them for the record
(JSON text per request, never any I/O) and queues the text; one thread per worker takes
what has gathered and writes it in one transaction, at most ``batch_rows`` at a time.
Queueing text rather than the rows keeps what waits out of the garbage collector's walks
(measured: the queued rows and answers, tens of thousands of objects, cost the serving
worker more in collections than their encoding).

When the store is slow or down the service keeps answering: rows that find the queue
full, or whose write fails, are dropped, counted (``on_dropped(rows, reason)``) and
logged at most once per ``warn_interval_s`` with how many rows the message covers. The
same thread enforces the retention.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from tabserve.record.rows import Recorded, Served
from tabserve.record.store import RecordStore, StoreError

logger = logging.getLogger("tabserve.record")

# Why rows were not recorded (``on_dropped``'s reasons, the metric's label values).
DROP_REASONS = ("queue_full", "store_error", "unencodable")


class Recorder:
    """Writes offered rows to ``store`` from its own thread.

    Args:
        store: where the rows go.
        capacity: the most rows waiting; more are dropped (``queue_full``).
        batch_rows: the most rows written in one transaction.
        flush_s: how long rows may wait for others to join their write.
        retention_s: served rows (and ground truths) older than this are deleted, checked
            every ``retention_check_s``; None: kept forever.
        on_written: called with the calls each successful write stored.
        on_dropped: called with ``(rows, reason)``: ``queue_full``, ``store_error`` or
            ``unencodable`` (a value JSON cannot hold: never seen, but counted).
        warn_interval_s: at most one warning about dropped rows per this many seconds.
    """

    def __init__(
        self,
        store: RecordStore,
        *,
        capacity: int = 50_000,
        batch_rows: int = 2_000,
        flush_s: float = 0.2,
        retention_s: float | None = None,
        retention_check_s: float = 600.0,
        on_written: Callable[[list[Recorded]], None] = lambda calls: None,
        on_dropped: Callable[[int, str], None] = lambda rows, reason: None,
        warn_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.capacity = capacity
        self.batch_rows = batch_rows
        self.flush_s = flush_s
        self.retention_s = retention_s
        self.retention_check_s = retention_check_s
        self._on_written = on_written
        self._on_dropped = on_dropped
        self.warn_interval_s = warn_interval_s
        self._clock = clock
        self._waiting: deque[Recorded] = deque()
        self._rows = 0
        self._busy = False
        self._ready = threading.Condition()
        self._stopped = False
        self._warned = -float("inf")
        self._dropped_since_warning = 0
        self._retained = -float("inf")
        self._thread: threading.Thread | None = None

    # ---- the model call's side ------------------------------------------------------
    def offer(self, served: Served) -> bool:
        """Encode one call's rows and queue them for writing; False (and counted, not
        encoded) when the queue is full."""
        count = len(served)
        with self._ready:
            full = self._rows + count > self.capacity
            if not full:
                self._rows += count  # the place is taken before the encoding
        if full:
            self._dropped(count, "queue_full", "the record's queue is full")
            return False
        try:
            recorded = served.encoded()
        except Exception as exc:  # counted and told (at a bounded rate) like any loss
            with self._ready:
                self._rows -= count
            self._dropped(count, "unencodable", f"a served row could not be encoded: {exc!r}")
            return False
        with self._ready:
            self._waiting.append(recorded)
            if self._rows >= self.batch_rows:
                self._ready.notify()
        return True

    # ---- the writer thread -----------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tabserve-record", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is waiting and stop the thread."""
        with self._ready:
            self._stopped = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every row offered so far was written (or dropped); whether it was."""
        deadline = self._clock() + timeout_s
        with self._ready:
            self._ready.notify()
            while self._rows or self._busy:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._ready.wait(min(left, 0.05))
        return True

    def _take(self) -> list[Recorded]:
        with self._ready:
            if not self._stopped and self._rows < self.batch_rows:
                self._ready.wait(self.flush_s)
            taken: list[Recorded] = []
            rows = 0
            while self._waiting and (not taken or rows + len(self._waiting[0]) <= self.batch_rows):
                served = self._waiting.popleft()
                taken.append(served)
                rows += len(served)
            self._rows -= rows
            self._busy = bool(taken)
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            try:
                if taken:
                    self._write(taken)
                self._retain()
            except Exception:  # the thread must never die: say so and go on
                logger.exception("the record's writer failed")
            finally:
                with self._ready:
                    self._busy = False
                    self._ready.notify_all()
                    done = self._stopped and not self._waiting
            if done:
                self.store.close()
                return

    def _write(self, taken: list[Recorded]) -> None:
        try:
            self.store.write_calls(taken)
        except StoreError as exc:
            self._dropped(sum(len(s) for s in taken), "store_error", str(exc))
            return
        self._on_written(taken)

    def _retain(self) -> None:
        if self.retention_s is None:
            return
        now = self._clock()
        if now - self._retained < self.retention_check_s:
            return
        self._retained = now
        try:
            deleted = self.store.delete_before(time.time() - self.retention_s)
        except StoreError as exc:
            logger.warning(
                "the record's retention could not run (next try in %.0f s): %s",
                self.retention_check_s,
                exc,
            )
            return
        if deleted:
            logger.info(
                "record retention: %d served row(s) older than %.0f s deleted",
                deleted,
                self.retention_s,
            )

    def _dropped(self, rows: int, reason: str, why: str) -> None:
        self._on_dropped(rows, reason)
        with self._ready:
            self._dropped_since_warning += rows
            now = self._clock()
            if now - self._warned < self.warn_interval_s:
                return
            self._warned, count = now, self._dropped_since_warning
            self._dropped_since_warning = 0
        logger.warning(
            "%d served row(s) not recorded since the last warning (%s: %s); the answers were "
            "sent, the rows are counted in tabserve_record_dropped_rows_total",
            count,
            reason,
            why,
        )
