"""Alert rules and dashboards are code: the rendered files in the repository are
what the code renders, every alert has a runbook section, and the dashboards keep
the promised variables and no job-id panels."""

from __future__ import annotations

import json
import re
from pathlib import Path

from renderfarm.api.metrics import outcome_counts, retry_counts
from renderfarm.core.kinds import KINDS
from renderfarm.core.metrics_store import (FAILURE_TYPES, QUEUE_WAIT_BUCKETS_S, OutcomeKey, bucket_for,
                                           cumulative_buckets, error_label, finished_by_queue, parse_outcomes)
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
    counts = outcome_counts({"transcode|cpu.normal|failed|timeout": "2", "probe|cpu.high|succeeded|none": "5"})
    assert counts[OutcomeKey("transcode", "cpu.normal", "failed", "timeout")] == 2.0
    assert counts[OutcomeKey("probe", "cpu.high", "succeeded")] == 5.0
    assert counts[OutcomeKey("transcode", "cpu.high", "succeeded")] == 0.0
    assert counts[OutcomeKey("transcode", "cpu.high", "failed", "invalid_media")] == 0.0
    # bounded: every kind x its 4 queues x (succeeded, cancelled, one failed series per error type)
    assert len(counts) == len(KINDS) * 4 * (2 + len(FAILURE_TYPES))
    assert {key.error_type for key in counts} == set(FAILURE_TYPES) | {"none"}


def test_outcomes_from_before_error_types_read_as_none_and_add_up():
    counts = outcome_counts({"transcode|cpu.normal|failed": "2", "transcode|cpu.normal|failed|none": "1"})
    assert counts[OutcomeKey("transcode", "cpu.normal", "failed", "none")] == 3.0


def test_retry_counts_are_bounded_by_the_registry_and_carry_the_pool():
    counts = retry_counts({"transcode|timeout": "3", "no-such-kind|transient": "9"})
    assert counts[("transcode", "cpu", "timeout")] == 3.0
    assert counts[("transcribe", "gpu-transcribe", "worker_lost")] == 0.0
    assert not any(kind == "no-such-kind" for kind, _, _ in counts)


def test_error_labels_are_the_enum_or_internal():
    assert error_label("out_of_memory") == "out_of_memory"
    assert error_label(None) == "none"
    assert error_label("some exception text") == "internal"  # never an unbounded label value


def test_one_parser_for_outcomes_serves_api_and_operator():
    raw = {"probe|cpu.high|succeeded|none": "7", "probe|cpu.high|failed|invalid_media": "1",
           "probe|cpu.low|succeeded": "2", "garbage": "1", "probe|cpu.low|failed|timeout": "x"}
    assert parse_outcomes(raw) == {OutcomeKey("probe", "cpu.high", "succeeded"): 7,
                                   OutcomeKey("probe", "cpu.high", "failed", "invalid_media"): 1,
                                   OutcomeKey("probe", "cpu.low", "succeeded"): 2}
    assert finished_by_queue(raw) == {"cpu.high": 8, "cpu.low": 2}


def test_queue_wait_is_bucketed_on_its_own_bounds():
    assert bucket_for(0.05, QUEUE_WAIT_BUCKETS_S) == "0.1"
    assert bucket_for(0.05) == "0.5"  # run-time buckets start higher
    pairs = cumulative_buckets({"0.1": "2", "5.0": "1", "+Inf": "1"}, QUEUE_WAIT_BUCKETS_S)
    assert pairs[0] == ("0.1", 2.0) and pairs[-1] == ("+Inf", 4.0) and len(pairs) == len(QUEUE_WAIT_BUCKETS_S) + 1
