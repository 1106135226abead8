"""The model bundle: the files a served model is made of, and their integrity check.

The `import` stage writes a bundle into a BentoML model directory; the service
and the UI read it back. Layout (all plain files, no pickle):

- ``model.ubj``: the XGBoost booster in its native UBJSON format;
- ``schema.json``: the :class:`~tabserve.schema.FeatureSchema`;
- ``lineage.json``: where the model came from (:class:`Lineage`);
- ``examples.json``: a sample of rows from the frozen test split, with labels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tabserve.schema import FeatureSchema

MODEL_FILE = "model.ubj"
SCHEMA_FILE = "schema.json"
LINEAGE_FILE = "lineage.json"
EXAMPLES_FILE = "examples.json"


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
) -> None:
    """Write a bundle into ``directory`` (which must exist).

    Raises:
        BundleIntegrityError: if ``model_file`` does not hash to ``lineage.model_sha256``.
    """
    directory = Path(directory)
    actual = sha256_file(model_file)
    if actual != lineage.model_sha256:
        raise BundleIntegrityError(
            f"model file {model_file} has sha256 {actual}, lineage says {lineage.model_sha256}"
        )
    (directory / MODEL_FILE).write_bytes(Path(model_file).read_bytes())
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
    actual = sha256_file(directory / MODEL_FILE)
    if actual != lineage.model_sha256:
        raise BundleIntegrityError(
            f"{directory / MODEL_FILE} has sha256 {actual}, but its lineage records "
            f"{lineage.model_sha256}: the file is corrupt or was replaced"
        )
    return lineage
