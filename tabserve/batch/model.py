"""The model ``tabserve score`` runs: any MLflow model URI, loaded as a pyfunc.

For a model the pipeline registered (the :class:`~tabserve.mlflow_model.model.TabularModel`
pyfunc) the FeatureSchema it carries is read too, so each row is checked as ``POST
/predict`` checks it and a bad row is rejected alone (:mod:`tabserve.core.frame_checks`).
Any other pyfunc is scored as it is, a batch at a time, with its signature's columns.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tabserve.core.frame_checks import Policy
from tabserve.core.schema import FeatureSchema

UNKNOWN_CATEGORY_ENV = "TABSERVE_UNKNOWN_CATEGORY"
VERSION_COLUMN = "model_version"
_ARROW_TYPES = {
    "double": pa.float64(),
    "float": pa.float32(),
    "long": pa.int64(),
    "integer": pa.int32(),
    "string": pa.string(),
    "boolean": pa.bool_(),
}


class ModelError(ValueError):
    """The model cannot be found, loaded or used for scoring; the message names it."""


@dataclass
class ScoringModel:
    """A loaded model and what scoring needs to know about it.

    Attributes:
        uri: as given.
        version: what the output's ``model_version`` column says: ``<name>/<version>``
            for a registered version (an alias resolved), else the URI.
        pyfunc: the loaded ``mlflow.pyfunc.PyFuncModel``.
        schema: the FeatureSchema of a tabserve model, else None.
        inputs: the columns the model reads.
        outputs: the answer columns and their Arrow types, in order.
        whole: the numeric inputs the signature types as integers (MLflow refuses a
            fraction).
        resolved: the URI loaded: ``models:/<name>/<version>`` for an alias.
        input_types: each input's type in the signature (MLflow's names: ``double``,
            ``long``, ``string``, ``boolean``, ``any``...).
    """

    uri: str
    version: str
    pyfunc: Any
    schema: FeatureSchema | None
    inputs: list[str]
    outputs: list[tuple[str, pa.DataType]]
    whole: frozenset[str] = frozenset()
    resolved: str = ""
    input_types: dict[str, str] = field(default_factory=dict)

    @property
    def output_ddl(self) -> str:
        """The answer columns as a Spark DDL struct (``label string, proba_a double``)."""
        names = {pa.float64(): "double", pa.float32(): "float", pa.int64(): "long"}
        names |= {pa.int32(): "int", pa.string(): "string", pa.bool_(): "boolean"}
        return ", ".join(f"`{name}` {names[kind]}" for name, kind in self.outputs)


def unknown_policy() -> Policy:
    """The unknown-category policy of this process (``TABSERVE_UNKNOWN_CATEGORY``), as the
    service and the MLflow model read it."""
    policy = os.environ.get(UNKNOWN_CATEGORY_ENV, "missing")
    if policy not in ("missing", "refuse"):
        raise ModelError(f"{UNKNOWN_CATEGORY_ENV} must be missing or refuse, not {policy!r}")
    return policy  # type: ignore[return-value]


def registered_version(uri: str) -> str | None:
    """``<name>/<version>`` of a ``models:/name@alias`` or ``models:/name/N`` URI."""
    from mlflow import MlflowClient

    alias = re.fullmatch(r"models:/([^/@]+)@([^/]+)", uri)
    if alias:
        found = MlflowClient().get_model_version_by_alias(alias[1], alias[2])
        return f"{alias[1]}/{found.version}"
    numbered = re.fullmatch(r"models:/([^/@]+)/(\d+)", uri)
    return f"{numbered[1]}/{numbered[2]}" if numbered else None


def load_scoring_model(uri: str) -> ScoringModel:
    """Load ``uri`` (tracking and registry from the usual MLflow settings).

    Raises:
        ModelError: when it cannot be found or loaded, or has no output columns.
    """
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        version = registered_version(uri)
        # An alias resolved once: the run scores one version even if the alias moves.
        resolved = f"models:/{version}" if version else uri
        pyfunc = mlflow.pyfunc.load_model(resolved)
    except MlflowException as exc:
        raise ModelError(f"cannot load the model {uri}: {exc.message}") from None
    except OSError as exc:
        raise ModelError(f"cannot load the model {uri}: {exc}") from None
    schema: FeatureSchema | None = None
    try:
        predictor = getattr(pyfunc.unwrap_python_model(), "predictor", None)
        schema = getattr(predictor, "schema", None)
    except MlflowException:  # not a Python-function model of ours
        schema = None
    signature = pyfunc.metadata.signature
    if schema is not None:
        inputs = schema.feature_names
    elif signature is not None and signature.inputs is not None:
        inputs = list(signature.inputs.input_names())
    else:
        raise ModelError(f"the model {uri} has no input signature: its columns are unknown")
    if signature is None or signature.outputs is None:
        raise ModelError(f"the model {uri} has no output signature: its answers are unknown")
    outputs = []
    for column in signature.outputs.inputs:
        kind = getattr(getattr(column, "type", None), "name", "double")
        outputs.append((str(column.name), _ARROW_TYPES.get(kind, pa.float64())))
    types = {
        str(column.name): getattr(getattr(column, "type", None), "name", "any")
        for column in (signature.inputs.inputs if signature.inputs is not None else [])
    }
    whole = frozenset(
        name
        for name, kind in types.items()
        if kind in ("long", "integer")
        and (schema is None or schema.feature(name).kind == "numeric")
    )
    return ScoringModel(
        uri, version or uri, pyfunc, schema, inputs, outputs, whole, resolved, types
    )
