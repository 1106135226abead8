"""What the record holds: a model call's served rows as they go in; a labelled row, and a
row both the champion and a shadow answered, as the store gives them back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson
import pydantic_core


@dataclass(frozen=True)
class Call:
    """What the record keeps of a model call beside its rows.

    Attributes:
        role: ``champion`` (the answer the client got) or ``shadow``.
        model: the model version that answered (the BentoML tag's version).
        endpoint: ``predict`` or ``explain``.
        source: ``api`` or ``ui``.
        served_at: when, in Unix seconds.
        names: the features, in the order of each row's values.
    """

    role: str
    model: str
    endpoint: str
    source: str
    served_at: float
    names: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Served(Call):
    """One model call's answered rows, as the model call hands them over: encoded at once
    (:meth:`encoded`) into a record per request (its rows' features and answers as JSON
    arrays), so that the writer thread and the database work per request, not per row,
    and what waits to be written is text.

    Attributes:
        rows: the validated rows (:class:`~tabserve.core.schema.SchemaRow`, or mappings).
        answers: each row's answer, with its ``id`` (``<request id>-<index>``).
        features: whether to keep the rows' features (a shadow's records hold answers
            only: the champion's hold the same rows).
    """

    rows: Sequence[Mapping[str, Any]]
    answers: Sequence[dict[str, Any]]
    features: bool = True

    def __len__(self) -> int:
        return len(self.answers)

    @property
    def ids(self) -> list[str]:
        """Each row's id (read from its answer in the writer thread, not the model call)."""
        return [str(answer["id"]) for answer in self.answers]

    def outputs(self) -> list[str] | None:
        """How the call's answers are kept: a prediction as a list read with these keys
        (:func:`compact`), or None for answers kept whole (explanations)."""
        return outputs_of(self.answers[0]) if self.answers else None

    def requests(self) -> list[tuple[str, int, int, str, str]]:
        """The call's rows by request (adaptive batching merges requests, each kept whole
        and in order): ``(request id, first row index, rows, features JSON, answers
        JSON)``, the features a list of values in ``names``' order, the answers
        :func:`compact`; one JSON encoding each."""
        names = self.names
        answers = (
            self.answers if self.outputs() is None else [compact(answer) for answer in self.answers]
        )
        values = [
            getattr(row, "values_in_order", None) or [row.get(n) for n in names]
            for row in (self.rows if self.features else ())
        ]
        ids = self.ids
        groups: list[tuple[str, int, int, str, str]] = []
        start = 0
        while start < len(ids):
            request, _, first = ids[start].rpartition("-")
            end = start + 1
            while end < len(ids) and ids[end].rpartition("-")[0] == request:
                end += 1
            groups.append(
                (
                    request,
                    int(first),
                    end - start,
                    _json(values[start:end]) if self.features else "[]",
                    _json(answers[start:end]),
                )
            )
            start = end
        return groups

    def encoded(self) -> Recorded:
        """The call as the record keeps it: its requests' JSON texts, and nothing that
        holds the rows or answers (what waits for the writer is text, which the garbage
        collector never walks)."""
        call = {field.name: getattr(self, field.name) for field in fields(Call)}
        return Recorded(**call, outputs=self.outputs(), requests=self.requests(), rows=len(self))


@dataclass(frozen=True, kw_only=True)
class Recorded(Call):
    """A model call's rows encoded for the record (:meth:`Served.encoded`): each request's
    ``(request id, first row index, rows, features JSON, answers JSON)``; ``outputs``
    the keys of its compact predictions (:func:`outputs_of`)."""

    outputs: list[str] | None
    requests: list[tuple[str, int, int, str, str]]
    rows: int

    def __len__(self) -> int:
        return self.rows


# A regression answer's compact form: [value, low, high, coverage].
REGRESSION_OUTPUTS = ["value", "low", "high", "coverage"]


def outputs_of(answer: Mapping[str, Any]) -> list[str] | None:
    """The keys of a prediction's compact form: its classes' (the probabilities' keys) or a
    regression's parts; None for another answer (an explanation, kept whole)."""
    if "probabilities" in answer:
        return list(answer["probabilities"])
    if "interval" in answer:
        return REGRESSION_OUTPUTS
    return None


def compact(answer: Mapping[str, Any]) -> list[Any]:
    """A prediction as a list: ``[label, p1, p2, ...]`` or ``[value, low, high,
    coverage]`` (its id is the record's; a fraction of the JSON to write)."""
    if "probabilities" in answer:
        return [answer["label"], *answer["probabilities"].values()]
    interval = answer["interval"]
    return [answer["value"], interval["low"], interval["high"], interval["coverage"]]


def expand(item: Any, outputs: list[str] | None) -> Any:
    """The answer :func:`compact` kept (an answer kept whole as it is)."""
    if not isinstance(item, list) or outputs is None:
        return item
    if outputs == REGRESSION_OUTPUTS:
        low, high, coverage = item[1:]
        return {"value": item[0], "interval": {"low": low, "high": high, "coverage": coverage}}
    return {"label": item[0], "probabilities": dict(zip(outputs, item[1:], strict=False))}


def _text(value: Any) -> str:
    """What JSON has no type for: a time in ISO 8601 (as pydantic-core writes it), else
    its text."""
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else str(value)


_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _json(value: Any) -> str:
    """``value`` as JSON text, NaN and infinities as null: orjson (twice pydantic-core's
    speed on rows of floats, done in the model call for every recorded request), or
    pydantic-core for what orjson refuses (an integer beyond 64 bits, say)."""
    try:
        return orjson.dumps(value, default=_text, option=_ORJSON).decode()
    except TypeError:
        return pydantic_core.to_json(value, fallback=str, inf_nan_mode="null").decode()


@dataclass(frozen=True)
class LabelledRow:
    """A served row whose ground truth came back."""

    id: str
    role: str
    model: str
    served_at: float
    received_at: float
    features: dict[str, Any]
    answer: dict[str, Any]
    actual: Any


@dataclass(frozen=True)
class Pair:
    """A row both the champion and a shadow answered (``actual`` None: no truth yet)."""

    id: str
    champion_model: str
    shadow_model: str
    champion: dict[str, Any]
    shadow: dict[str, Any]
    actual: Any
