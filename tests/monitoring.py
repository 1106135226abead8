"""The monitoring files as data: the Grafana dashboard's PromQL queries and the alert rules.

Shared by the offline checks (``tests/unit/test_monitoring.py``) and by tests that run
the queries against a real Prometheus: :func:`dashboard_queries` gives every query of
the dashboard with Grafana's variables replaced, ready for Prometheus's HTTP API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "tabserve.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

# Grafana's own variables: `$__rate_interval` is at least four scrape intervals.
GRAFANA_INTERVALS = ("__rate_interval", "__interval", "__range")
# `$name` or `${name}` / `${name:format}` (Grafana's variable syntax).
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::\w+)?\}|(?P<plain>\w+))")


@dataclass(frozen=True)
class Query:
    """One PromQL query of a dashboard panel."""

    panel: str  # the panel's title
    ref_id: str  # the query's refId within its panel
    expr: str  # with the variables replaced
    instant: bool  # an instant query (tables, bar gauges), else a range query


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    """The dashboard JSON."""
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included (rows themselves too)."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str, variables: Mapping[str, str], interval: str) -> str:
    """``expr`` with Grafana's variables replaced: ``$__rate_interval`` and friends by
    ``interval``, a dashboard variable by its value in ``variables`` (default ``.+``,
    i.e. "All", which only fits inside a regex matcher ``=~"$name"``)."""

    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        if name in GRAFANA_INTERVALS:
            return interval
        return variables.get(name, ".+")

    return _VARIABLE.sub(value, expr)


def dashboard_queries(
    path: Path = DASHBOARD,
    *,
    variables: Mapping[str, str] | None = None,
    interval: str = "1m",
) -> list[Query]:
    """Every PromQL query of the dashboard, with its variables replaced.

    Args:
        path: the dashboard JSON.
        variables: values of the dashboard variables (``job``, ``instance``); a variable
            not given matches anything (``.+``).
        interval: what ``$__rate_interval`` (and ``$__interval``, ``$__range``) becomes;
            keep it at four scrape intervals or more so ``rate()`` has samples.
    """
    queries = []
    for panel in panels(load_dashboard(path)):
        for target in panel.get("targets", []):
            if "expr" in target:
                queries.append(
                    Query(
                        panel=panel["title"],
                        ref_id=target["refId"],
                        expr=substitute(target["expr"], variables or {}, interval),
                        instant=bool(target.get("instant")) and not target.get("range"),
                    )
                )
    return queries


def variable_queries(path: Path = DASHBOARD) -> list[str]:
    """The ``label_values(...)`` queries of the dashboard's query variables."""
    found = []
    for variable in load_dashboard(path).get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


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


def promtool_rule_file(exprs: list[str]) -> str:
    """A rule file with each of ``exprs`` as a recording rule, for ``promtool check rules``:
    a way to have Prometheus's own parser check PromQL offline."""
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    return yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False)
