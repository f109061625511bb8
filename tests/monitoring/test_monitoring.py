"""The alert rules and the Grafana dashboard vastops ships (vastops/watchdog/monitoring.py), written by `vastops monitoring DIR`.

The rules pass ``promtool check rules`` and ``promtool test rules`` (vastops-alerts.test.yml
here: every alert fires when it should and not before); a copy broken on purpose fails each.
The dashboard is JSON Grafana can import; every metric the rules and the dashboard query
exists in a real scrape of a running watchdog and a running wake proxy. promtool comes from
scripts/install-tools (conftest.py: missing, the test fails; it never skips).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from helpers import CONTROL_KEY, clean_process_env, exposed_names, free_port, metric_families, start_watchdog
from vastops.cli import main
from vastops.watchdog.monitoring import ALERTS, DASHBOARD, FILES, shipped

HERE = Path(__file__).parent
UNIT_TESTS = HERE / "vastops-alerts.test.yml"
PROMETHEUS_OWN = {"up"}  # what Prometheus adds to every scrape itself
METRIC = re.compile(r"\b(?:vastops|process|python)_[a-z0-9_]+\b|\bup\b")


@pytest.fixture
def written(tmp_path) -> Path:
    folder = tmp_path / "monitoring"
    assert main(["monitoring", str(folder)]) == 0
    return folder


def alerts(text: str) -> list[dict]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"] if "alert" in rule]


def expressions(value) -> list[str]:
    """Every PromQL expression in a dashboard: targets' ``expr`` and the variables' queries."""
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k in ("expr", "definition") and isinstance(v, str)]
        if isinstance(value.get("query"), dict) and isinstance(value["query"].get("query"), str):
            found.append(value["query"]["query"])
        return found + [e for v in value.values() for e in expressions(v)]
    if isinstance(value, list):
        return [e for v in value for e in expressions(v)]
    return []


def queried(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC.findall(expr)}


# -- vastops monitoring DIR ------------------------------------------------------------------


def test_monitoring_writes_the_shipped_files(tmp_path, capsys):
    written = tmp_path / "new" / "folder"
    assert main(["monitoring", str(written)]) == 0
    assert sorted(p.name for p in written.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (written / name).read_text(encoding="utf-8") == shipped(name)
        assert (written / name).stat().st_mode & 0o777 == 0o644
    out = capsys.readouterr().out
    assert f"wrote {written / ALERTS}" in out and "rule_files" in out


def test_monitoring_refuses_to_overwrite_without_the_option(written, capsys):
    (written / DASHBOARD).write_text("mine", encoding="utf-8")
    capsys.readouterr()
    assert main(["monitoring", str(written)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ALERTS in err and DASHBOARD in err and "--overwrite" in err
    assert (written / DASHBOARD).read_text(encoding="utf-8") == "mine", "nothing was written"
    assert main(["monitoring", str(written), "--overwrite"]) == 0
    assert (written / DASHBOARD).read_text(encoding="utf-8") == shipped(DASHBOARD)


def test_monitoring_into_a_file_or_an_unwritable_place_is_one_line(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    assert main(["monitoring", str(tmp_path / "a-file")]) == 2
    assert main(["monitoring", str(tmp_path / "a-file" / "below")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err


def test_monitoring_json_lists_the_files(tmp_path, capsys):
    assert main(["monitoring", str(tmp_path / "m"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [str(tmp_path / "m" / name) for name in FILES]


# -- the rules, with promtool -----------------------------------------------------------------


def test_promtool_checks_the_rules(promtool, written):
    result = subprocess.run([promtool, "check", "rules", str(written / ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts(shipped(ALERTS)))} rules found" in result.stdout + result.stderr


def test_a_broken_rule_fails_promtool_check(promtool, written):
    broken = shipped(ALERTS).replace("vastops_agent_reachable == 0", "vastops_agent_reachable == (0")
    (written / ALERTS).write_text(broken, encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(written / ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout


def test_every_alert_is_unit_tested(written):
    tested = {case["alertname"] for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for case in test.get("alert_rule_test", [])}
    assert {rule["alert"] for rule in alerts(shipped(ALERTS))} == tested


def test_promtool_unit_tests_each_alert(promtool, written):
    shutil.copy(UNIT_TESTS, written)
    result = subprocess.run([promtool, "test", "rules", str(written / UNIT_TESTS.name)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_rule_changed_on_purpose_fails_its_unit_test(promtool, written):
    shutil.copy(UNIT_TESTS, written)
    changed = shipped(ALERTS).replace("vastops_budget_limit_usd > 0.8", "vastops_budget_limit_usd > 0.9")
    assert changed != shipped(ALERTS)
    (written / ALERTS).write_text(changed, encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(written / UNIT_TESTS.name)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "VastopsBudgetOver80Percent" in result.stdout + result.stderr


# -- the dashboard, and the metrics everything queries ----------------------------------------


def test_the_dashboard_is_grafana_json_with_its_datasource_chosen_on_import():
    board = json.loads(shipped(DASHBOARD))
    assert board["title"] == "vastops" and board["uid"] == "vastops" and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 20 and len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_every_metric_the_rules_and_the_dashboard_query_exists_in_a_real_scrape(tmp_path, processes, sim_proc):
    _, base, _ = start_watchdog(processes, tmp_path, sim_proc)
    proxy = f"http://127.0.0.1:{free_port()}"
    env = clean_process_env(CONTROL_API_KEY=CONTROL_KEY, VASTOPS_WATCHDOG_URL=base)
    processes.start("proxy", "--port", proxy.rsplit(":", 1)[1], env=env, ready_url=proxy + "/healthz")
    watchdog_scrape = metric_families(requests.get(base.removesuffix("/infra/vast") + "/metrics", timeout=10).text)
    proxy_scrape = metric_families(requests.get(proxy + "/metrics", timeout=10).text)
    exposed = exposed_names(watchdog_scrape) | exposed_names(proxy_scrape) | PROMETHEUS_OWN
    board = queried(expressions(json.loads(shipped(DASHBOARD))))
    rules = queried([rule["expr"] for rule in alerts(shipped(ALERTS))])
    assert board - exposed == set(), "the dashboard queries metrics no scrape has"
    assert rules - exposed == set(), "the rules query metrics no scrape has"
    # what the board shows of each process, and what the rules watch
    assert {n for n in board if n.startswith("vastops_proxy_")} and {n for n in board if n.startswith("process_")}
    assert {"vastops_problem", "vastops_next_stop_timestamp_seconds", "vastops_budget_spent_usd", "vastops_agent_reachable",
            "vastops_reconciliation_flagged_days", "up"} <= rules  # fmt: skip
