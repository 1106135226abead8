"""What the record holds, as the store gives it back: a served row, a labelled row, and a
row both the champion and a shadow answered."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServedRow:
    """One answered row, as the record keeps it.

    Attributes:
        id: the row's id (``<request id>-<index>``).
        role: ``champion`` (the answer the client got) or ``shadow``.
        model: the model version that answered (the BentoML tag's version).
        served_at: when, in Unix seconds.
        endpoint: ``predict`` or ``explain``.
        source: ``api`` or ``ui``.
        features: the validated row, feature name to value.
        answer: the answer.
    """

    id: str
    role: str
    model: str
    served_at: float
    endpoint: str
    source: str
    features: dict[str, Any]
    answer: dict[str, Any]

    def as_params(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.role,
            self.model,
            self.served_at,
            self.endpoint,
            self.source,
            json.dumps(self.features, default=str, allow_nan=False),
            json.dumps(self.answer, allow_nan=False),
        )


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
