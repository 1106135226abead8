"""The monitoring files hold together: Prometheus config, alert rules, Grafana dashboard.

Offline, like ``test_deploy.py``: promtool (Debian's ``prometheus`` package, installed by
``make system-deps``) checks the config and the rules and runs the rules' unit tests
(``deploy/prometheus/alerts.test.yml``: synthetic series, expected alerts); the
Kubernetes ``PrometheusRule`` is shown to hold exactly the rules of alerts.yml; every
query of the Grafana dashboard is parsed by promtool and by ``promql-parser``, and may
only read the metrics the service publishes. A missing promtool fails, never skips.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring import (
    ALERTS,
    DASHBOARD,
    DATASOURCES,
    DEPLOY,
    alert_rules,
    dashboard_queries,
    load_dashboard,
    metric_names,
    panels,
    promtool_rule_file,
    substitute,
    variable_queries,
)

PROMETHEUS = DEPLOY / "prometheus"
PROMETHEUS_RULE = DEPLOY / "k8s" / "prometheusrule.yaml"
GRAFANA = DEPLOY / "grafana"

# The metrics the dashboard and the rules may read. Histograms also have their _bucket,
# _sum and _count series.
TABSERVE_METRICS = {
    "tabserve_predictions_total",
    "tabserve_model_info",
    "tabserve_ready",
    "tabserve_feature_drift_psi",
    "tabserve_feature_missing_delta",
    "tabserve_prediction_drift_psi",
    "tabserve_drift_window_rows",
    "tabserve_login_attempts_total",
    "tabserve_unknown_category_total",
    "tabserve_feature_new_category_share",
    "tabserve_live_quality",
    "tabserve_live_labelled_rows",
    "tabserve_test_quality",
    "tabserve_feedback_rows_total",
    "tabserve_recorded_rows_total",
    "tabserve_record_dropped_rows_total",
    "tabserve_shadow_agreement",
    "tabserve_shadow_paired_quality",
    "tabserve_shadow_rows_total",
}
TABSERVE_HISTOGRAMS = {
    "tabserve_batch_rows",
    "tabserve_predicted_value",
    "tabserve_feedback_delay_seconds",
}
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
# What the issue asks the dashboard to show, as metrics its queries must read.
PANEL_METRICS = {
    "request rate and errors by status": "bentoml_service_request_total",
    "latency quantiles": "bentoml_service_request_duration_seconds_bucket",
    "batch size": "tabserve_batch_rows_bucket",
    "predictions by class": "tabserve_predictions_total",
    "drift per feature": "tabserve_feature_drift_psi",
    "model version": "tabserve_model_info",
    "readiness": "tabserve_ready",
    "login failures": "tabserve_login_attempts_total",
    "live quality": "tabserve_live_quality",
    "test quality beside it": "tabserve_test_quality",
    "labelled rows": "tabserve_live_labelled_rows",
    "feedback delay": "tabserve_feedback_delay_seconds_bucket",
    "shadow agreement": "tabserve_shadow_agreement",
}
ALERTS_WANTED = {
    "TabserveDown",
    "TabserveNotReady",
    "TabserveHighErrorRate",
    "TabserveHighLatencyP99",
    "TabserveFeatureDrift",
    "TabservePredictionDrift",
    "TabserveNewCategories",
    "TabserveQualityDrop",
    "TabserveLoginFailureSpike",
}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: `make system-deps` installs Debian's prometheus package")
    return subprocess.run(
        [found, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@cache
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def visible_panels() -> list[dict[str, Any]]:
    return [p for p in panels(dashboard()) if p["type"] != "row"]


# --- Prometheus ---------------------------------------------------------------------


def test_prometheus_config_and_rules_pass_promtool_check() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "alerts.yml" in config.stdout  # the rule file is loaded (and checked with it)
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # TabserveQualityDrop is two rules: a classifier's accuracy, a regression's RMSE.
    assert f"{len(ALERTS_WANTED) + 1} rules found" in rules.stdout


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


# --- Grafana ------------------------------------------------------------------------


def test_datasource_is_the_compose_prometheus() -> None:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["uid"]
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["global"]
    assert datasource["jsonData"]["timeInterval"] == scrape["scrape_interval"]


def test_dashboard_provider_loads_the_mounted_dashboards() -> None:
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False  # the JSON in git is the source
    from tests.unit.test_deploy import compose

    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert (DEPLOY / mounts[provider["options"]["path"]] / DASHBOARD.name).is_file()


def test_dashboard_identity_and_variables() -> None:
    board = dashboard()
    assert board["uid"] == "tabserve"
    assert board["title"]
    assert "id" not in board or board["id"] is None  # Grafana assigns it on provisioning
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    variables = board["templating"]["list"]
    assert {v["name"] for v in variables} == {"job", "instance"}
    for variable in variables:
        assert variable["datasource"]["uid"] == uid
    for query in variable_queries():
        match = re.fullmatch(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)", query)
        assert match, query
        assert metric_names(substitute(match["selector"], {}, "1m")) <= KNOWN_METRICS


def test_every_panel_has_the_datasource_queries_and_a_unique_id() -> None:
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    ids = [p["id"] for p in panels(dashboard())]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in visible_panels():
        name = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, name
        assert panel["targets"], f"{name} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{name}: duplicate refIds"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, name
            assert target["expr"].strip(), f"{name} {target['refId']} has no expr"
        assert panel.get("description"), f"{name} has no description"


def test_panels_sit_on_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard()):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_dashboard_queries_read_only_known_metrics_and_cover_the_issue() -> None:
    queries = dashboard_queries()
    assert len(queries) == sum(len(p["targets"]) for p in visible_panels())
    read: set[str] = set()
    for query in queries:
        assert "$" not in query.expr, query
        names = metric_names(query.expr)
        assert names, f"{query.panel}: reads no metric"
        assert names <= KNOWN_METRICS, f"{query.panel}: unknown metrics {names - KNOWN_METRICS}"
        read |= names
    missing = {what for what, metric in PANEL_METRICS.items() if metric not in read}
    assert not missing, f"no panel for: {sorted(missing)}"


def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    exprs = [query.expr for query in dashboard_queries()]
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text(promtool_rule_file(exprs))
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout
    # promtool is not lenient: a broken query fails the same check.
    rules.write_text(promtool_rule_file(["sum(rate(tabserve_predictions_total[1m])"]))
    assert promtool("check", "rules", str(rules)).returncode == 1


def test_substitute_fills_grafana_variables() -> None:
    expr = 'sum(rate(x{job=~"$job", instance=~"${instance}"}[$__rate_interval]))'
    assert substitute(expr, {"job": "tabserve"}, "2m") == (
        'sum(rate(x{job=~"tabserve", instance=~".+"}[2m]))'
    )


def test_metric_names_reads_every_selector() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) / on() group_left "
        'max(b{c="d"}) or vector(0)'
    )
    assert metric_names(expr) == {"a_bucket", "b"}
    with pytest.raises(ValueError, match="without a metric name"):
        metric_names('{__name__=~"tabserve_.*"}')
