"""The monitoring files hold together: Prometheus config and alert rules.

Offline, like ``test_deploy.py``: promtool (Debian's ``prometheus`` package, installed by
``make system-deps``) checks the config and the rules and runs the rules' unit tests
(``deploy/prometheus/alerts.test.yml``: synthetic series, expected alerts); the
Kubernetes ``PrometheusRule`` is shown to hold exactly the rules of alerts.yml, and the
rules may only read the metrics the service publishes. A missing promtool fails, never
skips.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.monitoring import ALERTS, DEPLOY, alert_rules, metric_names

PROMETHEUS = DEPLOY / "prometheus"
PROMETHEUS_RULE = DEPLOY / "k8s" / "prometheusrule.yaml"

# The metrics the rules may read. Histograms also have their _bucket, _sum and _count
# series.
TABSERVE_METRICS = {
    "tabserve_predictions_total",
    "tabserve_model_info",
    "tabserve_ready",
    "tabserve_feature_drift_psi",
    "tabserve_feature_missing_delta",
    "tabserve_prediction_drift_psi",
    "tabserve_drift_window_rows",
    "tabserve_login_attempts_total",
}
TABSERVE_HISTOGRAMS = {"tabserve_batch_rows", "tabserve_predicted_value"}
# BentoML 1.4's own, read from a real `bentoml serve` /metrics (labels: endpoint,
# http_response_code, runner_name, service_name, service_version; the batch size
# histogram has method_name and worker_index instead of endpoint).
BENTOML_METRICS = {
    "bentoml_service_request_total",
    "bentoml_service_request_in_progress",
    "bentoml_service_last_request_timestamp_seconds",
}
BENTOML_HISTOGRAMS = {
    "bentoml_service_request_duration_seconds",
    "bentoml_service_adaptive_batch_size",
}
PROMETHEUS_METRICS = {"up"}  # written by Prometheus for every scrape target
KNOWN_METRICS = (
    TABSERVE_METRICS
    | BENTOML_METRICS
    | PROMETHEUS_METRICS
    | {
        f"{family}{suffix}"
        for family in TABSERVE_HISTOGRAMS | BENTOML_HISTOGRAMS
        for suffix in ("_bucket", "_sum", "_count")
    }
)
ALERTS_WANTED = {
    "TabserveDown",
    "TabserveNotReady",
    "TabserveHighErrorRate",
    "TabserveHighLatencyP99",
    "TabserveFeatureDrift",
    "TabservePredictionDrift",
    "TabserveLoginFailureSpike",
}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: `make system-deps` installs Debian's prometheus package")
    return subprocess.run(
        [found, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


# --- Prometheus ---------------------------------------------------------------------


def test_prometheus_config_and_rules_pass_promtool_check() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "alerts.yml" in config.stdout  # the rule file is loaded (and checked with it)
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"{len(ALERTS_WANTED)} rules found" in rules.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_fail_on_a_wrong_expectation(tmp_path: Path) -> None:
    # The unit tests compare labels and annotations exactly: a changed expectation fails.
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text())
    tests = (PROMETHEUS / "alerts.test.yml").read_text()
    assert "(PSI 0.35)" in tests
    (tmp_path / "alerts.test.yml").write_text(tests.replace("(PSI 0.35)", "(PSI 0.50)"))
    result = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TabserveFeatureDrift" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing() -> None:
    document = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    assert document["rule_files"] == ["alerts.yml"]
    firing = {
        case["alertname"]
        for test in document["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in document["tests"]
        for case in test.get("alert_rule_test", [])
        if not case["exp_alerts"]
    }
    names = {rule["alert"] for rule in alert_rules()}
    assert names == ALERTS_WANTED
    assert firing == names, f"never shown firing: {sorted(names - firing)}"
    assert quiet == names, f"never shown quiet: {sorted(names - quiet)}"


def test_alert_rules_read_known_metrics_and_carry_severity_and_text() -> None:
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - KNOWN_METRICS
        assert not unknown, f"{rule['alert']} reads unknown metrics {unknown}"
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert re.fullmatch(r"\d+m", rule["for"]), rule["alert"]


def test_drift_alert_fires_above_psi_0_2_for_5_minutes() -> None:
    (drift,) = [r for r in alert_rules() if r["alert"] == "TabserveFeatureDrift"]
    assert drift["for"] == "5m"
    assert drift["expr"].endswith("(tabserve_feature_drift_psi) > 0.2")


def test_the_kubernetes_prometheus_rule_holds_the_same_rules() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["name"] == "tabserve"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    # And it is exactly what the generator writes now (no hand edit in between).
    check = subprocess.run(
        [sys.executable, str(PROMETHEUS / "prometheusrule.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_the_prometheus_rule_stays_out_of_the_kustomization() -> None:
    # Without the operator's CRD, `kubectl apply -k` would refuse the whole set.
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert PROMETHEUS_RULE.name not in kustomization["resources"]


# --- PromQL helpers ------------------------------------------------------------


def test_metric_names_reads_every_selector() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) / on() group_left "
        'max(b{c="d"}) or vector(0)'
    )
    assert metric_names(expr) == {"a_bucket", "b"}
    with pytest.raises(ValueError, match="without a metric name"):
        metric_names('{__name__=~"tabserve_.*"}')
