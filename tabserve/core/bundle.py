"""The model bundle: the files a served model is made of, and their integrity check.

The `train` stage writes the model files into ``models/bundle/`` (they travel to MLflow
as the registered model's artifacts); the `import` stage copies them into a BentoML
model directory and adds the lineage and examples; the service, the UI and the MLflow
model read them back. Layout (all plain files, no pickle):

- ``model.ubj``: the XGBoost booster in its native UBJSON format;
- ``schema.json``: the :class:`~tabserve.core.schema.FeatureSchema`;
- regression only: ``quantiles.ubj``, the booster of the prediction interval's two
  ends, and ``intervals.json``, how they are calibrated (:class:`Interval`);
- ``reference.json``: the training data's profile, the reference of the service's
  drift gauges (:class:`tabserve.core.drift.Reference`);
- ``lineage.json``: where the model came from (:class:`Lineage`), with the sha256 of
  the model and of every other model file, checked whenever the bundle is read;
- ``examples.json``: a sample of rows from the frozen test split, with labels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from tabserve.core.drift import Reference

from tabserve.core.schema import FeatureSchema

MODEL_FILE = "model.ubj"
SCHEMA_FILE = "schema.json"
LINEAGE_FILE = "lineage.json"
EXAMPLES_FILE = "examples.json"
QUANTILES_FILE = "quantiles.ubj"
INTERVAL_FILE = "intervals.json"
REFERENCE_FILE = "reference.json"
# Model files beside model.ubj and schema.json, each sha256-checked through the lineage.
EXTRA_FILES = (QUANTILES_FILE, INTERVAL_FILE, REFERENCE_FILE)


class Interval(BaseModel):
    """How a regression bundle's prediction interval is made (``intervals.json``).

    ``quantiles.ubj`` predicts the ``quantiles`` of the target; each end is then moved
    out by ``offset`` (negative: in), calibrated on ``rows`` validation targets so that
    the interval holds ``coverage`` of them (see ``training/modeling.fit_interval``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    coverage: float
    quantiles: tuple[float, float]
    offset: float
    rows: int


class BundleIntegrityError(RuntimeError):
    """The bundle on disk does not match its lineage (corrupt or tampered)."""


class Lineage(BaseModel):
    """Everything needed to trace a served model back to its data, code and run."""

    model_config = ConfigDict(extra="allow")

    model_name: str
    registry_version: str
    mlflow_run_id: str
    data_md5: dict[str, str] = Field(description="md5 of each prepared split, as DVC records it")
    git_commit: str
    params: dict[str, Any]
    metrics: dict[str, float]
    model_sha256: str
    created_at: str
    # sha256 of every model file besides model.ubj (``EXTRA_FILES`` that the model has).
    files_sha256: dict[str, str] = Field(default_factory=dict)
    # Set by the pipeline's import stage: where in the MLflow registry the model came from.
    registry_alias: str | None = None
    mlflow_model_uri: str | None = None


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def md5_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file (the hash DVC records for a file output)."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def write_bundle(
    directory: str | Path,
    *,
    model_file: str | Path,
    schema: FeatureSchema,
    lineage: Lineage,
    examples: list[dict[str, Any]],
    extra_files: Mapping[str, str | Path] | None = None,
) -> None:
    """Write a bundle into ``directory`` (which must exist).

    Args:
        directory: where the bundle goes (a BentoML model's directory).
        model_file: the booster.
        schema: its schema.
        lineage: its lineage, with the sha256 of ``model_file`` and of each extra file.
        examples: sample test rows.
        extra_files: the other model files by bundle name (``EXTRA_FILES``).

    Raises:
        BundleIntegrityError: if a file does not hash to what ``lineage`` records.
    """
    directory = Path(directory)
    expected = {MODEL_FILE: lineage.model_sha256, **lineage.files_sha256}
    sources = {MODEL_FILE: Path(model_file), **{k: Path(v) for k, v in (extra_files or {}).items()}}
    if set(sources) != set(expected):
        raise BundleIntegrityError(
            f"the model files {sorted(sources)} are not the ones the lineage records "
            f"({sorted(expected)})"
        )
    for name, source in sources.items():
        actual = sha256_file(source)
        if actual != expected[name]:
            raise BundleIntegrityError(
                f"model file {source} has sha256 {actual}, lineage says {expected[name]}"
            )
        (directory / name).write_bytes(source.read_bytes())
    schema.save(directory / SCHEMA_FILE)
    (directory / LINEAGE_FILE).write_text(lineage.model_dump_json(indent=2) + "\n")
    (directory / EXAMPLES_FILE).write_text(json.dumps(examples, indent=1) + "\n")


def read_lineage(directory: str | Path) -> Lineage:
    """Read ``lineage.json`` from a bundle directory."""
    return Lineage.model_validate_json((Path(directory) / LINEAGE_FILE).read_text())


def read_schema(directory: str | Path) -> FeatureSchema:
    """Read ``schema.json`` from a bundle directory."""
    return FeatureSchema.load(Path(directory) / SCHEMA_FILE)


def read_examples(directory: str | Path) -> list[dict[str, Any]]:
    """Read the sample test rows of a bundle (empty if the file is absent)."""
    path = Path(directory) / EXAMPLES_FILE
    return json.loads(path.read_text()) if path.exists() else []


def verify_bundle(directory: str | Path) -> Lineage:
    """Check that the model file hashes to what its lineage says; return the lineage.

    Raises:
        BundleIntegrityError: on a missing file or a hash mismatch.
    """
    directory = Path(directory)
    for name in (MODEL_FILE, SCHEMA_FILE, LINEAGE_FILE):
        if not (directory / name).is_file():
            raise BundleIntegrityError(f"bundle {directory} lacks {name}")
    lineage = read_lineage(directory)
    for name, recorded in {MODEL_FILE: lineage.model_sha256, **lineage.files_sha256}.items():
        path = directory / name
        if not path.is_file():
            raise BundleIntegrityError(f"bundle {directory} lacks {name}")
        actual = sha256_file(path)
        if actual != recorded:
            raise BundleIntegrityError(
                f"{path} has sha256 {actual}, but its lineage records "
                f"{recorded}: the file is corrupt or was replaced"
            )
    return lineage


def model_files_sha256(directory: str | Path) -> dict[str, str]:
    """sha256 of the extra model files a training bundle folder holds (for the lineage)."""
    directory = Path(directory)
    return {
        name: sha256_file(directory / name) for name in EXTRA_FILES if (directory / name).exists()
    }


def read_interval(directory: str | Path) -> Interval | None:
    """The interval's calibration (``intervals.json``), or None for a classifier."""
    path = Path(directory) / INTERVAL_FILE
    return Interval.model_validate_json(path.read_text()) if path.exists() else None


def read_reference(directory: str | Path) -> Reference | None:
    """The drift reference (``reference.json``), or None for a bundle made without one."""
    from tabserve.core.drift import Reference

    path = Path(directory) / REFERENCE_FILE
    return Reference.model_validate_json(path.read_text()) if path.exists() else None
