"""Alert rules and dashboards are code: the rendered files in the repository are
what the code renders, every alert has a runbook section, and the dashboards keep
the promised variables and no job-id panels."""

from __future__ import annotations

import json
import re
from pathlib import Path

from renderfarm.api.metrics import outcome_counts
from renderfarm.core.kinds import KINDS
from renderfarm.monitoring import alerts, dashboards, generate

ROOT = Path(__file__).resolve().parents[2]


def test_generated_files_are_up_to_date():
    assert generate.stale(ROOT) == [], "run: python -m renderfarm.monitoring.generate --write"


def test_stale_detects_an_edited_rule_file(tmp_path: Path):
    generate.write(tmp_path)
    assert generate.stale(tmp_path) == []
    rules = tmp_path / generate.PLAIN_RULES
    rules.write_text(rules.read_text().replace("for: 5m", "for: 1h", 1))
    (tmp_path / generate.CHART_DASHBOARDS / "old-starter.json").write_text("{}")
    assert generate.stale(tmp_path) == [str(generate.PLAIN_RULES),
                                        str(generate.CHART_DASHBOARDS / "old-starter.json")]


def test_every_alert_has_a_runbook_section_its_url_points_at():
    headings = set(re.findall(r"^## (\w+)$", (ROOT / "docs/runbooks.md").read_text(), re.M))
    for alert in alerts.ALERTS:
        assert alert.name in headings, f"docs/runbooks.md has no section for {alert.name}"
        assert alert.runbook_url.endswith(f"docs/runbooks.md#{alert.name.lower()}")
    assert headings == {a.name for a in alerts.ALERTS}, "a runbook section for an alert that does not exist"


def test_annotations_never_use_value():
    """promtool tests state annotations exactly; $value would make them depend on floats."""
    for alert in alerts.ALERTS:
        assert "$value" not in alert.summary + alert.description, alert.name


def test_for_override_shortens_only_named_alerts():
    groups = alerts.rule_groups({"RenderfarmBeatDown": "5s"})["groups"][0]["rules"]
    fors = {rule["alert"]: rule["for"] for rule in groups}
    assert fors["RenderfarmBeatDown"] == "5s"
    assert fors["RenderfarmRedisUnreadable"] == "2m"


def test_dashboards_have_the_variables_and_no_job_id_panels():
    for name, build in dashboards.DASHBOARDS.items():
        data = json.loads(dashboards.render(build()))
        variables = [v["name"] for v in data["templating"]["list"]]
        assert variables == ["datasource", "namespace", "pool", "kind"], name
        queries = dashboards.panel_queries(data)
        assert queries, name
        for title, expr in queries:
            assert "job_id" not in expr and "tenant" not in expr, (name, title)
            assert "$namespace" in expr, (name, title, "every query follows the namespace variable")
        for panel in data["panels"]:
            assert panel["datasource"] == "${datasource}", (name, panel["title"])


def test_outcome_counts_start_every_registered_series_at_zero():
    counts = outcome_counts({"transcode|cpu.normal|failed": "2"})
    assert counts[("transcode", "cpu.normal", "failed")] == 2.0
    assert counts[("transcode", "cpu.high", "succeeded")] == 0.0
    assert len(counts) == sum(4 * 3 for _ in KINDS.values())
