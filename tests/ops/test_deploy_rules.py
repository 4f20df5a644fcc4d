"""The dashboard and the alert rules in ``deploy/`` name only metrics the server exports,
and the rules are valid Prometheus (``promtool check rules``) and fire when they should
(``promtool test rules`` on synthetic series)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import LiveServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "companion.json"
METRIC = re.compile(r"\b(companion_[a-z0-9_]+)")
SUFFIXES = ("_bucket", "_count", "_sum")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is missing (apt-get install -y prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query: Any = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def exported_families(text: str) -> set[str]:
    """The metric names of ``# HELP`` / ``# TYPE`` lines."""
    return {line.split()[2] for line in text.splitlines() if line.startswith(("# HELP", "# TYPE"))}


def family_of(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


async def test_every_metric_the_dashboard_and_the_rules_name_is_exported(
    live_server: LiveServer,
) -> None:
    async with live_server.http() as http:
        families = exported_families((await http.get("/metrics")).text)
    named = {m for e in rule_expressions() + dashboard_expressions() for m in METRIC.findall(e)}
    assert len(named) > 25  # the extraction found the metrics (not an empty pass)
    missing = sorted(n for n in named if n not in families and family_of(n) not in families)
    assert missing == []


def test_the_dashboard_has_the_fleet_views_and_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    for view in (
        "Nodes up",
        "Nodes down",
        "Connections by device kind",
        "Deltas per second",
        "Push latency (commit to socket)",
        "Frames per second",
        "Ack latency (submit to durable)",
        "Analyses per second",
        "Analysis queue depth",
        "LLM spend (USD per hour)",
        "Avatar cache hit ratio",
        "Dead letters (avatar failures, 24 h)",
        "Store errors by operation",
        "Errors logged by source",
    ):
        assert view in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"


def test_the_rules_pass_promtool_check() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 16 rules found" in result.stdout


def test_the_example_prometheus_config_is_valid_and_loads_the_rules() -> None:
    config = DEPLOY / "prometheus" / "prometheus.yml"
    result = subprocess.run(
        [promtool(), "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 16 rules found" in result.stdout


def annotations(alert: str, summary: str, description: str | None = None) -> dict[str, str]:
    """What ``alert`` should say: ``summary``, and its description as the rule file has it
    (or as given, where the description itself is a template)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule = next(r for g in groups for r in g["rules"] if r["alert"] == alert)
    return {"summary": summary, "description": description or rule["annotations"]["description"]}


def test_the_rules_fire_on_the_series_they_are_about(tmp_path: Path) -> None:
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # a node whose heartbeat to Redis stopped 10 minutes ago
                    {
                        "series": 'companion_cluster_heartbeat_age_seconds{instance="n1"}',
                        "values": "1 1 1 60+60x10",
                    },
                    # push latency: all observations between 100 and 250 ms
                    *[
                        {
                            "series": f'companion_push_latency_seconds_bucket{{le="{le}"}}',
                            "values": values,
                        }
                        for le, values in (("0.05", "0+0x30"), ("0.1", "0+0x30"))
                    ],
                    {
                        "series": 'companion_push_latency_seconds_bucket{le="0.25"}',
                        "values": "0+100x30",
                    },
                    {
                        "series": 'companion_push_latency_seconds_bucket{le="+Inf"}',
                        "values": "0+100x30",
                    },
                    # users hit their LLM budget
                    {
                        "series": 'companion_llm_fallbacks_total{reason="budget"}',
                        "values": "0 0 3 5 8",
                    },
                    # a healthy store that never fails
                    {"series": 'companion_store_up{instance="n1"}', "values": "1x30"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "12m",
                        "alertname": "CompanionNodeDeafToRedis",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "page", "instance": "n1"},
                                "exp_annotations": annotations(
                                    "CompanionNodeDeafToRedis",
                                    "n1 has not reached Redis for 10m 0s",
                                ),
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "CompanionPushLatencyHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "page"},
                                "exp_annotations": annotations(
                                    "CompanionPushLatencyHigh",
                                    "push p99 is 248.5ms (target 50 ms)",
                                ),
                            }
                        ],
                    },
                    {
                        "eval_time": "4m",
                        "alertname": "CompanionLLMBudgetExhausted",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "ticket"},
                                "exp_annotations": annotations(
                                    "CompanionLLMBudgetExhausted",
                                    "users hit their daily LLM budget: the rules answer for them",
                                    "8 analyses in 15 minutes fell back to the rules because the"
                                    " user's daily budget (COMPANION_LLM_DAILY_BUDGET_USD) was"
                                    " spent.",
                                ),
                            }
                        ],
                    },
                    {"eval_time": "20m", "alertname": "CompanionStoreDown", "exp_alerts": []},
                ],
            }
        ],
    }
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
