"""The monitoring files as data: the alert rules and the metrics their PromQL reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import promql_parser
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (parsed with ``promql-parser``).

    Raises:
        ValueError: if ``expr`` is not valid PromQL, or selects series by a matcher on
            ``__name__`` only (the metric it reads cannot be checked then).
    """
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if not node.name:
                raise ValueError(f"a selector without a metric name in {expr!r}")
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    """Every rule of a Prometheus rule file, across its groups."""
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]
