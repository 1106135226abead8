"""Write deploy/k8s/prometheusrule.yaml: the alert rules of alerts.yml as a PrometheusRule.

The Prometheus Operator reads alert rules from ``PrometheusRule`` objects, whose
``spec`` has exactly the shape of a Prometheus rule file (``groups:``). The object is
built from the text of alerts.yml (indented under ``spec:``), so its rules, comments
included, are those of alerts.yml and nothing is edited twice::

    python deploy/prometheus/prometheusrule.py           # or: make prometheus-rule
    python deploy/prometheus/prometheusrule.py --check   # exit 1 if the file is stale

Standard library only: it runs before ``make setup``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALERTS = HERE / "alerts.yml"
TARGET = HERE.parent / "k8s" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by `make prometheus-rule`: edit that file,
# then regenerate (tests/unit/test_monitoring.py fails while the two differ).
#
# The tabserve alert rules for the Prometheus Operator (kube-prometheus-stack). It is
# not listed in kustomization.yaml: clusters without the operator's CRDs would refuse
# the whole `kubectl apply -k`. Where the operator runs:
#   kubectl apply -n <ns> -f deploy/k8s/prometheusrule.yaml
# and give it the label your Prometheus's ruleSelector matches (kube-prometheus-stack:
# `release: <helm release name>`), e.g. `kubectl label -n <ns> prometheusrule tabserve
# release=kube-prometheus-stack`. The rules expect the scrape job "tabserve": the
# default job of a ServiceMonitor that selects the `tabserve` Service.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: tabserve
  labels:
    app.kubernetes.io/name: tabserve
    app.kubernetes.io/component: alerts
spec:
"""


def render(alerts_text: str) -> str:
    """The PrometheusRule document for the rule file text ``alerts_text``.

    The rule file's leading comment block (which describes the file itself) is left
    out; everything from ``groups:`` on is indented two spaces under ``spec:``.
    """
    lines = alerts_text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("groups:")), None)
    if start is None:
        raise ValueError("the rule file has no top-level `groups:`")
    body = "\n".join(f"  {line}" if line.strip() else "" for line in lines[start:])
    return HEADER + body + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) deploy/k8s/prometheusrule.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    wanted = render(ALERTS.read_text())
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != wanted:
            print(f"{TARGET} is stale: run `make prometheus-rule`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(wanted)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
