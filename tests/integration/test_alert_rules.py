"""The farm's alert rules under `promtool check rules` and `promtool test rules`
(Debian's prometheus package): every alert has at least one case where it fires
and one where it does not, on synthetic series shaped like the farm's.

The cases are data below; the promtool test file is built from them, with the
expected annotations rendered from the rule (annotations only use $labels, never
$value, so they can be stated exactly).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from renderfarm.monitoring import alerts
from renderfarm.monitoring.generate import rules_yaml

PROMTOOL = shutil.which("promtool")
NS = 'namespace="rf"'


@dataclass
class Case:
    alert: str
    why: str
    series: dict[str, str]
    eval_time: str
    fires: list[dict[str, str]] = field(default_factory=list)  # labels of each expected alert; [] = silent


CASES: list[Case] = [
    Case("RenderfarmPoolBacklogGrowingAtCapacity", "backlog grows, desired replicas flat (at maxReplicas)",
         {f'renderfarm_pool_backlog{{{NS},pool="cpu",queue="cpu.normal"}}': "0+2x40",
          f'renderfarm_pool_replicas_desired{{{NS},pool="cpu"}}': "5x40"},
         "30m", [{"namespace": "rf", "pool": "cpu"}]),
    Case("RenderfarmPoolBacklogGrowingAtCapacity", "backlog grows while CapacityLimited holds the pool",
         {f'renderfarm_pool_backlog{{{NS},pool="cpu",queue="cpu.normal"}}': "0+2x40",
          f'renderfarm_pool_replicas_desired{{{NS},pool="cpu"}}': "1+1x40",
          f'renderfarm_scaling_decisions_total{{{NS},pool="cpu",reason="CapacityLimited"}}': "0+6x40"},
         "30m", [{"namespace": "rf", "pool": "cpu"}]),
    Case("RenderfarmPoolBacklogGrowingAtCapacity", "backlog grows and the pool keeps scaling up",
         {f'renderfarm_pool_backlog{{{NS},pool="cpu",queue="cpu.normal"}}': "0+2x40",
          f'renderfarm_pool_replicas_desired{{{NS},pool="cpu"}}': "1+1x40"},
         "30m"),
    Case("RenderfarmPoolBacklogGrowingAtCapacity", "at maximum but the backlog shrinks",
         {f'renderfarm_pool_backlog{{{NS},pool="cpu",queue="cpu.normal"}}': "100-2x40",
          f'renderfarm_pool_replicas_desired{{{NS},pool="cpu"}}': "5x40"},
         "30m"),

    Case("RenderfarmOldestWaitAboveTarget", "a critical job waits past 60 s",
         {f'renderfarm_queue_oldest_age_seconds{{{NS},queue="cpu.critical",pool="cpu",priority="critical",instance="a"}}': "0+60x20",
          f'renderfarm_queue_paused{{{NS},queue="cpu.critical",pool="cpu",priority="critical",instance="a"}}': "0x20"},
         "10m", [{"namespace": "rf", "queue": "cpu.critical", "pool": "cpu", "priority": "critical"}]),
    Case("RenderfarmOldestWaitAboveTarget", "the same wait on a paused queue, and a low job within its 2 h",
         {f'renderfarm_queue_oldest_age_seconds{{{NS},queue="cpu.critical",pool="cpu",priority="critical"}}': "0+60x20",
          f'renderfarm_queue_paused{{{NS},queue="cpu.critical",pool="cpu",priority="critical"}}': "1x20",
          f'renderfarm_queue_oldest_age_seconds{{{NS},queue="cpu.low",pool="cpu",priority="low"}}': "0+300x20",
          f'renderfarm_queue_paused{{{NS},queue="cpu.low",pool="cpu",priority="low"}}': "0x20"},
         "10m"),

    Case("RenderfarmFailureRateHigh", "half the jobs of a kind fail",
         {f'renderfarm_job_outcomes_total{{{NS},kind="transcode",queue="cpu.normal",status="failed"}}': "0+3x30",
          f'renderfarm_job_outcomes_total{{{NS},kind="transcode",queue="cpu.normal",status="succeeded"}}': "0+3x30"},
         "20m", [{"namespace": "rf", "kind": "transcode"}]),
    Case("RenderfarmFailureRateHigh", "one in ten fails; another kind is idle (0/0)",
         {f'renderfarm_job_outcomes_total{{{NS},kind="transcode",queue="cpu.normal",status="failed"}}': "0+1x30",
          f'renderfarm_job_outcomes_total{{{NS},kind="transcode",queue="cpu.normal",status="succeeded"}}': "0+9x30",
          f'renderfarm_job_outcomes_total{{{NS},kind="thumbnail",queue="cpu.normal",status="failed"}}': "0x30",
          f'renderfarm_job_outcomes_total{{{NS},kind="thumbnail",queue="cpu.normal",status="succeeded"}}': "0x30"},
         "20m"),

    Case("RenderfarmDeadLetterGrowing", "a job lands in the dead-letter list",
         {f"renderfarm_dead_letter_size{{{NS}}}": "0 0 0 1 1 1 1"}, "5m", [{"namespace": "rf"}]),
    Case("RenderfarmDeadLetterGrowing", "a dead-letter list that stays as it is",
         {f"renderfarm_dead_letter_size{{{NS}}}": "3x40"}, "35m"),

    Case("RenderfarmNoWorkersForBacklog", "jobs wait and no cpu worker reports",
         {f'renderfarm_queue_depth{{{NS},queue="cpu.normal",pool="cpu",priority="normal"}}': "4x30",
          f'renderfarm_queue_paused{{{NS},queue="cpu.normal",pool="cpu",priority="normal"}}': "0x30"},
         "15m", [{"namespace": "rf", "pool": "cpu"}]),
    Case("RenderfarmNoWorkersForBacklog", "jobs wait and a worker reports",
         {f'renderfarm_queue_depth{{{NS},queue="cpu.normal",pool="cpu",priority="normal"}}': "4x30",
          f'renderfarm_queue_paused{{{NS},queue="cpu.normal",pool="cpu",priority="normal"}}': "0x30",
          f'renderfarm_workers{{{NS},pool="cpu"}}': "1x30"},
         "15m"),
    Case("RenderfarmNoWorkersForBacklog", "jobs wait in a paused queue and no worker runs",
         {f'renderfarm_queue_depth{{{NS},queue="cpu.normal",pool="cpu",priority="normal"}}': "4x30",
          f'renderfarm_queue_paused{{{NS},queue="cpu.normal",pool="cpu",priority="normal"}}': "1x30"},
         "15m"),

    Case("RenderfarmOperatorNotReconciling", "operator runs but no replica reads the queues (no leader)",
         {f"renderfarm_operator_redis_read_seconds_count{{{NS},instance=\"op-0\"}}": "5x20",
          f"renderfarm_operator_leader{{{NS},instance=\"op-0\"}}": "0x20"},
         "15m", [{"namespace": "rf"}]),
    Case("RenderfarmOperatorNotReconciling", "the operator's series vanish (operator gone)",
         {f"renderfarm_operator_leader{{{NS},instance=\"op-0\"}}": "1x4 _x30",
          f"renderfarm_operator_redis_read_seconds_count{{{NS},instance=\"op-0\"}}": "0+10x4 _x30"},
         "25m", [{"namespace": "rf"}]),
    Case("RenderfarmOperatorNotReconciling", "the leader reads every tick",
         {f"renderfarm_operator_redis_read_seconds_count{{{NS},instance=\"op-0\"}}": "0+30x30",
          f"renderfarm_operator_leader{{{NS},instance=\"op-0\"}}": "1x30"},
         "20m"),

    Case("RenderfarmBacklogUnknown", "the operator cannot read the pool's queues",
         {f'renderfarm_pool_backlog_known{{{NS},pool="gpu-vision"}}': "0x10"}, "5m",
         [{"namespace": "rf", "pool": "gpu-vision"}]),
    Case("RenderfarmBacklogUnknown", "the backlog is known",
         {f'renderfarm_pool_backlog_known{{{NS},pool="gpu-vision"}}': "1x10"}, "5m"),

    Case("RenderfarmRedisUnreadable", "one API replica cannot read Redis",
         {f'renderfarm_redis_up{{{NS},instance="a"}}': "0x10", f'renderfarm_redis_up{{{NS},instance="b"}}': "1x10"},
         "5m", [{"namespace": "rf"}]),
    Case("RenderfarmRedisUnreadable", "both read it; a one-scrape blip stays silent",
         {f'renderfarm_redis_up{{{NS},instance="a"}}': "1x10", f'renderfarm_redis_up{{{NS},instance="b"}}': "1 1 0 1 1 1 1"},
         "5m"),

    Case("RenderfarmBeatDown", "beat's heartbeat is gone",
         {f"renderfarm_beat_up{{{NS}}}": "0x10"}, "5m", [{"namespace": "rf"}]),
    Case("RenderfarmBeatDown", "beat runs", {f"renderfarm_beat_up{{{NS}}}": "1x10"}, "5m"),

    Case("RenderfarmWebhooksFailing", "most deliveries are retried",
         {f'renderfarm_webhook_deliveries_total{{{NS},result="retry"}}': "0+5x30",
          f'renderfarm_webhook_deliveries_total{{{NS},result="given_up"}}': "0+1x30",
          f'renderfarm_webhook_deliveries_total{{{NS},result="delivered"}}': "0+1x30"},
         "25m", [{"namespace": "rf"}]),
    Case("RenderfarmWebhooksFailing", "most deliveries succeed",
         {f'renderfarm_webhook_deliveries_total{{{NS},result="retry"}}': "0+1x30",
          f'renderfarm_webhook_deliveries_total{{{NS},result="given_up"}}': "0x30",
          f'renderfarm_webhook_deliveries_total{{{NS},result="delivered"}}': "0+10x30"},
         "25m"),

    Case("RenderfarmRetriesHigh", "three retries for every two finished jobs of a kind",
         {f'renderfarm_job_retries_total{{{NS},kind="transcode",pool="cpu",error_type="transient"}}': "0+2x40",
          f'renderfarm_job_retries_total{{{NS},kind="transcode",pool="cpu",error_type="timeout"}}': "0+1x40",
          f'renderfarm_job_outcomes_total{{{NS},kind="transcode",queue="cpu.normal",status="succeeded",error_type="none"}}': "0+2x40",
          f'renderfarm_job_outcomes_total{{{NS},kind="transcode",queue="cpu.normal",status="failed",error_type="timeout"}}': "0x40"},
         "30m", [{"namespace": "rf", "kind": "transcode"}]),
    Case("RenderfarmRetriesHigh", "retries while nothing of the kind finishes",
         {f'renderfarm_job_retries_total{{{NS},kind="vision",pool="gpu-vision",error_type="out_of_memory"}}': "0+1x40",
          f'renderfarm_job_outcomes_total{{{NS},kind="vision",queue="gpu-vision.normal",status="succeeded",error_type="none"}}': "0x40"},
         "30m", [{"namespace": "rf", "kind": "vision"}]),
    Case("RenderfarmRetriesHigh", "one retry in ten finished jobs; an idle kind (0/0)",
         {f'renderfarm_job_retries_total{{{NS},kind="transcode",pool="cpu",error_type="transient"}}': "0+1x40",
          f'renderfarm_job_outcomes_total{{{NS},kind="transcode",queue="cpu.normal",status="succeeded",error_type="none"}}': "0+10x40",
          f'renderfarm_job_retries_total{{{NS},kind="probe",pool="cpu",error_type="transient"}}': "0x40",
          f'renderfarm_job_outcomes_total{{{NS},kind="probe",queue="cpu.normal",status="succeeded",error_type="none"}}': "0x40"},
         "30m"),

    Case("RenderfarmQueueWaitHigh", "critical jobs start about two minutes after they were queued",
         {f'renderfarm_queue_wait_seconds_bucket{{{NS},queue="cpu.critical",pool="cpu",priority="critical",le="{le}"}}': v
          for le, v in (("1.0", "0x40"), ("60.0", "0x40"), ("300.0", "0+4x40"), ("+Inf", "0+4x40"))},
         "30m", [{"namespace": "rf", "queue": "cpu.critical", "pool": "cpu", "priority": "critical"}]),
    Case("RenderfarmQueueWaitHigh", "the same two minutes at normal priority (target 30 min); critical starts at once",
         {**{f'renderfarm_queue_wait_seconds_bucket{{{NS},queue="cpu.normal",pool="cpu",priority="normal",le="{le}"}}': v
             for le, v in (("1.0", "0x40"), ("60.0", "0x40"), ("300.0", "0+4x40"), ("+Inf", "0+4x40"))},
          **{f'renderfarm_queue_wait_seconds_bucket{{{NS},queue="cpu.critical",pool="cpu",priority="critical",le="{le}"}}': v
             for le, v in (("1.0", "0+4x40"), ("60.0", "0+4x40"), ("300.0", "0+4x40"), ("+Inf", "0+4x40"))}},
         "30m"),

    Case("RenderfarmPoolScaleNotApplied", "the Deployment stays below the decision",
         {f'renderfarm_pool_replicas_desired{{{NS},pool="cpu"}}': "3x30",
          f'renderfarm_pool_replicas_current{{{NS},pool="cpu"}}': "1x30"}, "20m", [{"namespace": "rf", "pool": "cpu"}]),
    Case("RenderfarmPoolScaleNotApplied", "the Deployment follows",
         {f'renderfarm_pool_replicas_desired{{{NS},pool="cpu"}}': "3x30",
          f'renderfarm_pool_replicas_current{{{NS},pool="cpu"}}': "3x30"}, "20m"),
]

BY_NAME = {alert.name: alert for alert in alerts.ALERTS}


def _render(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)


def _promtool_tests() -> dict:
    tests = []
    for case in CASES:
        alert = BY_NAME[case.alert]
        rule = alert.rule()
        expected = [{"exp_labels": labels | rule["labels"],
                     "exp_annotations": {k: _render(v, labels) for k, v in rule["annotations"].items()}}
                    for labels in case.fires]
        tests.append({
            "name": f"{case.alert}: {case.why}",
            "interval": "1m",
            "input_series": [{"series": series, "values": values} for series, values in case.series.items()],
            "alert_rule_test": [{"eval_time": case.eval_time, "alertname": case.alert, "exp_alerts": expected}],
        })
    return {"rule_files": ["alerts.yaml"], "evaluation_interval": "1m", "tests": tests}


def test_every_alert_has_a_firing_and_a_silent_case():
    firing = {case.alert for case in CASES if case.fires}
    silent = {case.alert for case in CASES if not case.fires}
    assert set(BY_NAME) - firing == set(), "alerts without a firing case"
    assert set(BY_NAME) - silent == set(), "alerts without a not-firing case"
    assert {case.alert for case in CASES} <= set(BY_NAME), "a case names an alert that does not exist"


@pytest.fixture
def rule_dir(tmp_path: Path) -> Path:
    if PROMTOOL is None:
        pytest.fail("promtool is missing: `make system-deps` installs Debian's prometheus package")
    (tmp_path / "alerts.yaml").write_text(rules_yaml())
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(_promtool_tests(), sort_keys=False))
    return tmp_path


def test_promtool_check_rules(rule_dir: Path):
    result = subprocess.run([PROMTOOL, "check", "rules", "alerts.yaml"], cwd=rule_dir, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in result.stdout


def test_promtool_test_rules(rule_dir: Path):
    result = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yaml"], cwd=rule_dir,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
