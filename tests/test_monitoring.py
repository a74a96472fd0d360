"""The alerts (deploy/kubernetes/monitoring/prometheusrule.yaml) and the Grafana dashboard
(deploy/grafana/reward-server.json) query what the server exports.

Every PromQL expression parses (promql-parser, the Rust PromQL parser's Python binding); every metric
it selects is one a real server's /metrics exposes after a scored request (or one of the few named
series Prometheus and kube-state-metrics make); every label it matches, groups by or joins on exists on
those metrics or is a target label Prometheus adds to each scrape. The PrometheusRule's CRD schema is
not available offline: its structure is checked explicitly (groups, alerts, severity, annotations, the
runbook entry each alert names).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from helpers import CHAT_1, add_model, config_text, serve_repo
from reward_client import InvalidArgumentError, RewardClient
from test_docs import anchors

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "kubernetes" / "monitoring"
RULE = MONITORING / "prometheusrule.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "reward-server.json"
OPERATIONS = ROOT / "docs" / "operations.md"
# Labels Prometheus puts on every series of a PodMonitor's targets (and `le`, a histogram bucket's).
TARGET_LABELS = {"job", "namespace", "pod", "container", "endpoint", "instance"}
# Series the queries read that the server does not export, with their labels: Prometheus' own per
# target, and kube-state-metrics' for the Deployment (it also counts the pods nothing scrapes).
EXTERNAL = {
    "up": set(),
    "kube_deployment_status_replicas_unavailable": {"deployment"},
}
SEVERITIES = {"warning", "critical"}


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory) -> dict[str, set[str]]:
    """Sample name -> its label names, from a real server's /metrics after one scored request and one
    refused (a labelled counter has no sample before its first increment)."""
    repo = tmp_path_factory.mktemp("repo")
    add_model(repo, "rm", tiny_checkpoint, config_text("rm"))
    with serve_repo(repo, metrics_port=0) as server, RewardClient(server.target, model="rm") as client:
        client.get_score(CHAT_1, timeout=60)
        with pytest.raises(InvalidArgumentError):
            client.score([[]])
        url = f"http://127.0.0.1:{server.running.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def alerts() -> list[dict]:
    rule = yaml.safe_load(RULE.read_text())
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    """Each panel's PromQL, and the model variable's selector, with Grafana's variables given values."""
    board = dashboard()
    queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            (selector,) = re.fullmatch(r"label_values\((.+), \w+\)", variable["definition"]).groups()
            queries.append(selector)
    return [q.replace("$__rate_interval", "5m").replace("$model", ".*") for q in queries]


def expressions() -> list[str]:
    return [a["expr"] for a in alerts()] + dashboard_queries()


def used(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, labels the expression needs it to have) for each selector in `expr`: its matchers, and
    the labels of every `by (...)`, `on (...)` and `group_left (...)` above it."""
    promql = pytest.importorskip("promql_parser", reason="promql-parser is in the test extra")
    found: list[tuple[str, set[str]]] = []

    def visit(node, needed: set[str]) -> None:
        if isinstance(node, promql.MatrixSelector):
            node = node.vector_selector
        if isinstance(node, promql.VectorSelector):
            labels = {m.name for m in node.matchers.matchers} - {"__name__"}
            found.append((node.name, labels | needed))
        elif isinstance(node, promql.AggregateExpr):
            by = node.modifier is not None and node.modifier.type == promql.AggModifierType.By
            visit(node.expr, set(node.modifier.labels) if by else set())  # only `by`'s labels survive it
        elif isinstance(node, promql.BinaryExpr):
            joined = set()
            if node.modifier is not None:
                if node.modifier.matching is not None:
                    joined |= set(node.modifier.matching.labels)
                joined |= set(node.modifier.group_labels or ())
            visit(node.lhs, needed | joined)
            visit(node.rhs, needed | joined)
        elif isinstance(node, promql.Call):
            for arg in node.args:
                visit(arg, needed)
        elif isinstance(node, promql.ParenExpr | promql.UnaryExpr | promql.SubqueryExpr):
            visit(node.expr, needed)

    visit(promql.parse(expr), set())
    return found


def test_every_query_parses_as_promql_and_selects_metrics():
    for expr in expressions():
        assert used(expr), expr  # parse() raises on a syntax error; each query reads some series


def test_every_metric_and_label_the_alerts_and_dashboard_read_is_one_the_server_exports(exported):
    assert {"reward_request_duration_seconds_bucket", "reward_request_success_total"} <= exported.keys()
    wrong = []
    for expr in expressions():
        for metric, labels in used(expr):
            has = EXTERNAL[metric] if metric in EXTERNAL else exported.get(metric)
            if has is None:
                wrong.append(f"{metric}: not exported ({expr})")
            elif missing := labels - has - TARGET_LABELS:
                wrong.append(f"{metric} has no label {sorted(missing)} ({expr})")
    assert wrong == [], wrong


def test_label_check_catches_a_made_up_metric_and_a_made_up_label(exported):
    # The check above can fail: a name the server does not export, and a label it does not put on one.
    (bad_name,) = used('rate(reward_request_succes_total{job="reward-server"}[5m])')
    assert bad_name[0] not in exported
    (bad_label,) = used("sum by (code) (rate(reward_request_success_total[5m]))")
    assert bad_label[1] - exported[bad_label[0]] == {"code"}


def test_prometheus_rule_alerts_carry_severity_annotations_and_a_runbook_entry():
    rule = yaml.safe_load(RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["name"]
    headings = anchors(OPERATIONS)
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)) >= 5
    for alert in alerts():
        assert set(alert) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, alert
        assert re.fullmatch(r"Reward[A-Za-z]+", alert["alert"])
        assert re.fullmatch(r"\d+[smh]", alert["for"]), alert["alert"]
        assert alert["labels"]["severity"] in SEVERITIES, alert["alert"]
        notes = alert["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, alert["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor == alert["alert"].lower(), notes["runbook_url"]
        assert anchor in headings, f"docs/operations.md has no section {alert['alert']}"
        # Per-model alerts name the model they fire for.
        if "model" in {label for _, labels in used(alert["expr"]) for label in labels}:
            assert "{{ $labels.model }}" in notes["summary"] + notes["description"], alert["alert"]


def test_dashboard_has_datasource_and_model_variables_and_every_panel_reads_through_them():
    board = dashboard()
    assert board["schemaVersion"] >= 39 and board["uid"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    assert variables["model"]["type"] == "query"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            unlabelled = ("reward_pending_requests", "reward_server_ready")  # per server, not per model
            if "reward_" in target["expr"] and not any(name in target["expr"] for name in unlabelled):
                assert 'model=~"$model"' in target["expr"], (panel["title"], target["expr"])


def test_monitoring_component_ships_the_rule_and_the_dashboard_to_grafanas_sidecar():
    component = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert "prometheusrule.yaml" in component["resources"]
    (generator,) = component["configMapGenerator"]
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}
    (source,) = generator["files"]
    key, _, path = source.partition("=")
    # kustomize reads files inside the component's folder only: deploy/grafana links to that one copy.
    assert (MONITORING / path).resolve() == DASHBOARD.resolve() and key.endswith(".json")


def test_kustomize_builds_the_base_with_the_monitoring_component(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (its built-in kustomize) is not installed")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy", symlinks=True)
    overlay = tmp_path / "deploy" / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../kubernetes]\ncomponents: [../kubernetes/monitoring]\n"
    )
    done = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    built = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(done.stdout) if d}
    assert built["PrometheusRule", "reward-server"]["metadata"]["namespace"] == "reward"
    assert built["PodMonitor", "reward-server"]["metadata"]["namespace"] == "reward"
    config_map = built["ConfigMap", "reward-server-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["reward-server.json"]) == dashboard()
