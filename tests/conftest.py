"""Session-wide isolation of the test process.

BentoML fixes its home (the model store) and prometheus_client its multiprocess
directory when first imported, and several test packages import them in process
(``tests/support.py``, the metrics parsers). So both are pointed at a private
temporary folder before any test module is imported: the suite never reads or
writes the developer's ``~/bentoml`` or the repo's ``.bentoml``, and the result
does not depend on which test package happens to import BentoML first.
Subprocesses the tests start get their own homes explicitly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_ISOLATED = ("BENTOML_HOME", "PROMETHEUS_MULTIPROC_DIR")
_saved: dict[str, str | None] = {}
_root: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    root = Path(tempfile.mkdtemp(prefix="tabserve-tests-"))
    (root / "prometheus").mkdir()
    _root.append(root)
    _saved.update({k: os.environ.get(k) for k in _ISOLATED})
    os.environ["BENTOML_HOME"] = str(root / "bentoml")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(root / "prometheus")


def pytest_unconfigure(config: pytest.Config) -> None:
    for key, value in _saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    for root in _root:
        shutil.rmtree(root, ignore_errors=True)
