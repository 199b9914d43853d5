"""The bench itself works: `bench/run.py --quick --only submit,status` against real
services writes a report with the expected shape. Speed is measured by the bench,
never asserted here."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.support.procs import REPO_ROOT


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-results")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "run.py"), "--quick", "--only", "submit,status",
         "--duration", "2", "--results-dir", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    latest = out / "latest.json"
    assert latest.is_file()
    assert len(list(out.glob("bench-*.json"))) == 1
    data = json.loads(latest.read_text())
    data["_stdout"] = proc.stdout
    return data


def test_report_has_run_metadata(report):
    assert report["schema"] == 1 and report["quick"] is True
    assert report["sections"] == ["submit", "status"]
    assert report["host"]["cpus"] >= 1
    assert report["targets"]["submit_p99_ms"] == 15.0 and report["targets"]["status_p99_ms"] == 5.0
    assert _number(report["elapsed_s"])


@pytest.mark.parametrize("section", ["submit", "status"])
def test_latency_sections_have_numeric_measurements(report, section):
    result = report["results"][section]
    assert "error" not in result, result.get("traceback")
    for key in ("offered_rps", "sent_rps", "achieved_rps", "requests", "ok", "errors", "within_target_pct"):
        assert _number(result[key]), (key, result[key])
    assert result["requests"] > 0 and result["ok"] > 0
    for block in ("latency_ms", "service_ms", "send_lag_ms"):
        for key in ("n", "p50", "p90", "p99", "p99_9", "max", "mean"):
            assert _number(result[block][key]), (block, key, result[block][key])
        assert result[block]["p50"] <= result[block]["p99"] <= result[block]["max"]
    assert result["latency_ms"]["n"] == result["ok"]
    assert _number(result["cpu"]["wall_s"]) and "api" in result["cpu"]["cpu_s"]


def test_submit_created_jobs_that_a_worker_consumed(report):
    worker = report["results"]["submit"]["worker"]
    assert worker["concurrency"] >= 1
    assert _number(worker["probe_jobs_finished_during_phase"]) and _number(worker["queue_depth_after"])


def test_table_rows_cover_each_target(report):
    rows = report["rows"]
    metrics = {(row["section"], row["metric"]) for row in rows}
    assert ("submit", "POST /v1/jobs p99") in metrics and ("status", "GET /v1/jobs/{id} p99") in metrics
    for row in rows:
        assert set(row) == {"section", "metric", "target", "measured", "ratio", "verdict", "note"}
        assert row["verdict"] != "ERROR", row
    verdicts = report["verdicts"]
    assert isinstance(verdicts["submit.POST /v1/jobs p99"]["pass"], bool)
    assert _number(verdicts["status.GET /v1/jobs/{id} p99"]["value"])
    assert "POST /v1/jobs p99" in report["_stdout"]  # the table was printed
