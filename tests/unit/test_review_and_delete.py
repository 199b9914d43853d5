"""Pure parts of delete and manual review: output folder confinement, requeue fields,
bounded metric labels, review cursors."""

from __future__ import annotations

from datetime import datetime, timezone

import pydantic
import pytest

from renderfarm.core.storage import delete_job_outputs
from renderfarm.core.storage.keys import job_output_dir
from renderfarm.core.jobs import Job
from renderfarm.core.queues import Priority
from renderfarm.core.review import OTHER, Actor, action_record, bounded_backlog, requeue_fields
from renderfarm.core.store import decode_review_cursor, encode_review_cursor


def a_job(**extra) -> Job:
    fields = {"id": "abc123", "kind": "thumbnail", "input": "file:///x.mp4", "params": {"times": [50.0]},
              "queue": "cpu.normal", "created_at": datetime.now(timezone.utc)}
    return Job(**(fields | extra))


@pytest.mark.parametrize("job_id", ["..", ".", "", "../etc", "a/../../b", "/etc"])
def test_an_output_folder_outside_the_outputs_root_is_refused(tmp_path, job_id):
    assert job_output_dir(tmp_path / "outputs", job_id) is None


def test_output_deletion_removes_only_the_jobs_folder_and_follows_no_symlink_out(tmp_path):
    root = tmp_path / "outputs"
    (root / "abc123").mkdir(parents=True)
    (root / "abc123" / "thumb-0001.jpg").write_bytes(b"x")
    (root / "other").mkdir()
    (root / "other" / "keep.jpg").write_bytes(b"y")
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("z")
    (root / "escape").symlink_to(outside)
    assert delete_job_outputs(a_job().id, a_job().tenant, outputs_dir=root) == 1
    assert not (root / "abc123").exists() and (root / "other" / "keep.jpg").exists()
    assert delete_job_outputs("escape", "default", outputs_dir=root) == 0 and (outside / "keep.txt").exists()
    assert delete_job_outputs(a_job().id, a_job().tenant, outputs_dir=root) == 0  # already gone: not an error


def test_requeue_with_new_params_validates_them_and_records_the_change():
    fields, changes = requeue_fields(a_job(), {"times": [0.5]}, None)
    assert fields["params"]["times"] == [0.5] and changes == {"params": fields["params"]}
    assert fields["error"] is None and fields["result"] is None and "queue" not in fields
    with pytest.raises(pydantic.ValidationError):
        requeue_fields(a_job(), {"times": [0.5], "bogus": 1}, None)


def test_requeue_with_a_new_priority_moves_the_job_to_that_queue_of_its_class():
    fields, changes = requeue_fields(a_job(), None, Priority.critical)
    assert fields["queue"] == "cpu.critical" and fields["priority"] == "critical" and changes == {"priority": "critical"}
    fields, changes = requeue_fields(a_job(), None, Priority.normal)  # unchanged: nothing to record
    assert "queue" not in fields and changes == {}


def test_an_action_record_says_who_when_and_what():
    at = datetime(2026, 1, 2, tzinfo=timezone.utc)
    record = action_record("requeue", Actor(key_id="k1", tenant="t"), {"priority": "high"}, at=at)
    assert record == {"action": "requeue", "by": "k1", "tenant": "t", "at": at.isoformat(),
                      "changes": {"priority": "high"}}


def test_backlog_labels_stay_within_the_registry():
    counts = {("probe", "transient"): 2, ("no-such-kind", "transient"): 1, ("probe", "made-up"): 4,
              ("gone", "weird"): 5}
    assert bounded_backlog(counts) == {("probe", "transient"): 2, (OTHER, "transient"): 1, ("probe", OTHER): 4,
                                       (OTHER, OTHER): 5}


def test_review_cursor_round_trips_float_scores_exactly():
    score = 1764633600.123456
    assert decode_review_cursor(encode_review_cursor(score, "job-1")) == (score, "job-1")
    with pytest.raises(ValueError):
        decode_review_cursor("!!!")
