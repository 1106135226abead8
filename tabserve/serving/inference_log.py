"""The inference log: every served row with its answer, as JSON lines on disk (optional).

Off unless ``TABSERVE_INFERENCE_LOG_DIR`` is set. Each worker process writes its own
file, ``inference.<worker>.jsonl``, rotated by size (``TABSERVE_INFERENCE_LOG_MAX_BYTES``,
``TABSERVE_INFERENCE_LOG_BACKUPS`` old files kept) through the standard library's
``RotatingFileHandler``; one process per file, so rotation never races. A line::

    {"time": "2026-12-01T20:15:02.123456+00:00", "request_id": "5f1c...", "model_version":
     "v3", "endpoint": "predict", "source": "api", "row": {...}, "answer": {...}}

Only answered rows are written (a refused request never reaches it), and never a
header, token or password: the row's features and the model's answer only.
``tabserve drift-report`` reads these files.

BentoML's own ``bentoml.monitor`` was the first choice; it is not used because its
records carry the request id as a raw integer (not the ``X-Request-ID`` a client
gets), it rotates by day only, and it reconfigures the process's logging.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tabserve.core.inference_records import log_file_name
from tabserve.serving.bentoml_private import worker_index
from tabserve.serving.metrics import inference_log_lost

_service_log = logging.getLogger("tabserve.monitor")


def worker_name() -> str:
    """This process's worker index under ``bentoml serve`` (else its pid)."""
    try:
        index = worker_index()
    except Exception:  # outside BentoML: the pid names the file
        index = None
    return f"pid{os.getpid()}" if index is None else str(index)


class _LossCountingHandler(logging.handlers.RotatingFileHandler):
    """A rotating file whose write errors are handed to ``on_error`` instead of printing a
    traceback to stderr for every record (logging's default)."""

    def __init__(self, *args: Any, on_error: Callable[[BaseException | None], None], **kw: Any):
        super().__init__(*args, **kw)
        self._on_error = on_error

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self._on_error(sys.exc_info()[1])


class InferenceLog:
    """Writes served rows as JSON lines into ``directory`` (one rotated file per worker).

    A row that cannot be written (a full or failing disk) never fails its request: it is
    counted (``tabserve_inference_log_lost_rows_total``) and the loss is logged once per
    ``warn_interval_s`` with how many rows it covers, not once per row.

    Args:
        directory: where the files go (created if missing).
        max_bytes: size at which a file is rotated.
        backups: rotated files kept.
        model_version: the version every line names.
        warn_interval_s: at most one warning about lost rows per this many seconds.
        clock: a monotonic time source (seconds).
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        backups: int,
        model_version: str,
        warn_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / log_file_name(worker_name())
        self.model_version = model_version
        self.warn_interval_s = warn_interval_s
        self._clock = clock
        self._warned = -float("inf")
        self._lost_since_warning = 0
        self._logger = logging.getLogger(f"tabserve.inference.{id(self)}")
        self._logger.propagate = False  # never in the service's own log
        self._logger.setLevel(logging.INFO)
        handler = _LossCountingHandler(
            self.path,
            maxBytes=max_bytes,
            backupCount=backups,
            encoding="utf-8",
            on_error=self._lost,
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)
        self._handler = handler

    def _lost(self, error: BaseException | None) -> None:
        inference_log_lost().inc()
        self._lost_since_warning += 1
        now = self._clock()
        if now - self._warned < self.warn_interval_s:
            return
        _service_log.warning(
            "inference log %s: %d answered row(s) could not be written since the last "
            "warning (%s); the answers were sent, the rows are counted in "
            "tabserve_inference_log_lost_rows_total",
            self.path,
            self._lost_since_warning,
            error or "unknown error",
        )
        self._warned, self._lost_since_warning = now, 0

    def write(
        self,
        rows: Sequence[Mapping[str, Any]],
        answers: Sequence[dict[str, Any]],
        *,
        request_id: str | None,
        endpoint: str,
        source: str,
    ) -> None:
        """One line per row and its answer."""
        now = dt.datetime.now(dt.UTC).isoformat()
        for row, answer in zip(rows, answers, strict=True):
            self._logger.info(
                json.dumps(
                    {
                        "time": now,
                        "request_id": request_id,
                        "model_version": self.model_version,
                        "endpoint": endpoint,
                        "source": source,
                        "row": dict(row),
                        "answer": answer,
                    },
                    allow_nan=False,
                )
            )

    def close(self) -> None:
        """Flush and close the file."""
        self._logger.removeHandler(self._handler)
        self._handler.close()
