"""The inference log's files: their names and how to read them back.

The service writes them (``tabserve/serving/inference_log.py``); ``tabserve drift-report``
reads them. One JSON object a line::

    {"time": "2026-12-01T20:15:02.123456+00:00", "request_id": "5f1c...", "model_version":
     "v3", "endpoint": "predict", "source": "api", "row": {...}, "answer": {...}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LOG_GLOB = "inference.*.jsonl*"


def log_file_name(worker: str) -> str:
    """The file one worker writes (rotated copies get ``.1``, ``.2``... appended)."""
    return f"inference.{worker}.jsonl"


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of an inference log: a file, or a folder of them (rotated ones too)."""
    files = sorted(path.glob(LOG_GLOB)) if path.is_dir() else [path]
    records = []
    for file in files:
        with file.open(encoding="utf-8") as handle:
            records += [json.loads(line) for line in handle if line.strip()]
    return records
