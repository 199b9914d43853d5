"""``renderfarm workflow ...`` against a real API process, redis-server and CPU worker."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from renderfarm.cli import app
from renderfarm.cli.workflow import workflow_tree
from tests.support.media import make_clip
from tests.support.procs import start_api, start_worker

KEY = "cli-test-key-0123456789"


@pytest.fixture
def farm(rf_settings_env):
    env = dict(rf_settings_env, RF_API_KEYS=KEY)
    api, base = start_api(env)
    worker = start_worker(env, pool="cpu")
    try:
        yield env, base
    finally:
        worker.stop()
        api.stop()


def cli(base: str, *args: str):
    return CliRunner().invoke(app, list(args), env={"RF_API_URL": base, "RF_API_KEY": KEY, "COLUMNS": "200"},
                              catch_exceptions=False)


def test_workflow_submit_wait_get_cancel_retry_templates(farm, data_dir):
    _, base = farm
    clip = make_clip(data_dir / "inputs" / "clip.mp4", duration=1)
    result = cli(base, "workflow", "submit", "publish", str(clip), "--param", "heights=[120]",
                 "--param", "thumbnails=2", "--wait")
    assert result.exit_code == 0, result.output
    workflow_id = result.stdout.strip().splitlines()[0]
    assert workflow_id.startswith("wf-")
    # The live tree ends showing every step succeeded, the thumbnails under the transcode.
    assert "workflow " + workflow_id in result.output and "succeeded" in result.output
    assert "transcode" in result.output and "thumbnails" in result.output

    flow = json.loads(cli(base, "workflow", "get", workflow_id, "--json").stdout)
    assert flow["status"] == "succeeded" and {s["name"] for s in flow["steps"]} >= {"transcode", "thumbnails"}
    shown = cli(base, "workflow", "get", workflow_id)
    assert shown.exit_code == 0 and "thumbnails" in shown.output and "100%" in shown.output

    # A finished workflow cannot be cancelled, and a succeeded one not retried: API errors (exit 2).
    assert cli(base, "workflow", "cancel", workflow_id).exit_code == 2
    retried = cli(base, "workflow", "retry", workflow_id)
    assert retried.exit_code == 2 and "conflict" in retried.output

    listed = cli(base, "workflow", "templates")
    assert listed.exit_code == 0 and "video-analysis" in listed.output and "publish" in listed.output
    assert "--param heights" in listed.output


def test_an_unknown_template_is_an_api_error(farm, data_dir):
    _, base = farm
    clip = make_clip(data_dir / "inputs" / "clip.mp4", duration=1)
    result = cli(base, "workflow", "submit", "nope", str(clip))
    assert result.exit_code == 2


def test_the_tree_hangs_each_step_under_its_first_need():
    flow = {"id": "wf-1", "status": "running", "progress": 50, "template": None, "steps": [
        {"name": "b", "kind": "probe", "needs": ["a"], "status": "pending", "job_id": None},
        {"name": "a", "kind": "transcode", "needs": [], "status": "started", "job_status": "running",
         "progress": 40, "job_id": "j1"},
        {"name": "c", "kind": "probe", "needs": ["b", "a"], "status": "pending", "job_id": None},
    ]}
    tree = workflow_tree(flow)
    (a,) = tree.children
    assert "a" in str(a.label) and "running" in str(a.label) and "40%" in str(a.label)
    (b,) = a.children
    (c,) = b.children
    assert "also needs a" in str(c.label)
