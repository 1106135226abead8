"""What was measured on what: the machine, the libraries and the model."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from load_tests.bench.common import NONE, T
from load_tests.payloads import bundle_dir
from tabserve.core.bundle import REFERENCE_FILE

MEASURED_LIBRARIES = ("xgboost-cpu", "bentoml", "numpy", "pydantic")


def cpu_text(
    cpuinfo: Path = Path("/proc/cpuinfo"),
    caches: Path = Path("/sys/devices/system/cpu/cpu0/cache"),
) -> str:
    """The CPU model and its L2 and L3 sizes, as Linux reports them ('' elsewhere).

    The heavy profile's results depend on them: its 3.5 MB of trees fit in no L2, so
    how far batching is ahead differs between machines (docs/benchmark.md, issue 16)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            if not line.strip():
                break  # the first CPU's block is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    text = fields.get("model name", "")
    if fields.get("cpu family") and fields.get("model"):
        text += f" (family {fields['cpu family']}, model {fields['model']})"
    sizes = []
    with contextlib.suppress(OSError):
        for index in sorted(caches.glob("index*")):
            level = (index / "level").read_text().strip()
            if level in ("2", "3"):
                size = (index / "size").read_text().strip()
                shared = (index / "shared_cpu_list").read_text().strip()
                sizes.append(f"L{level} {size} (CPUs {shared})")
    return ", ".join(part for part in (text.strip(), *sizes) if part)


def machine_text() -> str:
    """The machine and the versions of the libraries the servers run on, for the report."""
    libraries = []
    for name in MEASURED_LIBRARIES:
        try:
            libraries.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            libraries.append(f"{name} not installed")
    parts = [platform.machine(), cpu_text(), f"{os.cpu_count()} CPUs"]
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(part for part in [*parts, *libraries] if part)


def model_identity(model_tag: str, bentoml_home: Path) -> dict[str, str]:
    """The BentoML model served, whether it has a drift reference, and the registry
    version behind ``@champion``."""
    identity = {"bentoml_tag": model_tag}
    with contextlib.suppress(Exception):
        directory = bundle_dir(bentoml_home, model_tag)
        identity["drift_reference"] = "yes" if (directory / REFERENCE_FILE).is_file() else NONE
        lineage = json.loads((directory / "lineage.json").read_text())
        identity["bentoml_tag"] = f"{model_tag.split(':')[0]}:{directory.name}"
        identity["bentoml_registry_version"] = str(lineage.get("registry_version"))
    with contextlib.suppress(Exception):
        from mlflow import MlflowClient

        version = MlflowClient().get_model_version_by_alias("tabserve", "champion")
        identity["mlflow_champion_version"] = str(version.version)
    return identity


def round_order(contenders: Sequence[T], round_: int) -> list[T]:
    """The order contenders run in, in round ``round_`` (from 1): every other round reversed.

    Each pair of contenders swaps places from one round to the next, so no ratio carries
    the bias of one contender always running first, or always just after the other.
    """
    return list(contenders) if round_ % 2 else list(reversed(contenders))
