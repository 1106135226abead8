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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tabserve.core.inference_records import log_file_name
from tabserve.serving.bentoml_private import worker_index


def worker_name() -> str:
    """This process's worker index under ``bentoml serve`` (else its pid)."""
    try:
        index = worker_index()
    except Exception:  # outside BentoML: the pid names the file
        index = None
    return f"pid{os.getpid()}" if index is None else str(index)


class InferenceLog:
    """Writes served rows as JSON lines into ``directory`` (one rotated file per worker).

    Args:
        directory: where the files go (created if missing).
        max_bytes: size at which a file is rotated.
        backups: rotated files kept.
        model_version: the version every line names.
    """

    def __init__(self, directory: Path, max_bytes: int, backups: int, model_version: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / log_file_name(worker_name())
        self.model_version = model_version
        self._logger = logging.getLogger(f"tabserve.inference.{id(self)}")
        self._logger.propagate = False  # never in the service's own log
        self._logger.setLevel(logging.INFO)
        handler = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)
        self._handler = handler

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
