"""The expiry index's bounded pass plan and the queue message rebuilt from a job's stamp (pure)."""

from __future__ import annotations

import json

import pytest

from renderfarm.core.expiry import PTTL_GONE, PTTL_PERSISTENT, ExpiredJob, expiry_member, parse_expiry_member, plan_expiry
from renderfarm.core.kinds import get_kind
from renderfarm.core.messages import job_task_message, message_from_record, message_stamp
from renderfarm.core.store import compact_fields


def test_an_expiry_member_round_trips_even_with_a_space_in_the_tenant():
    member = expiry_member("abc", "failed", "probe", "team a")
    assert parse_expiry_member(member) == ExpiredJob("abc", "failed", "probe", "team a")
    assert parse_expiry_member("garbage") is None


def test_the_plan_cleans_gone_records_rescored_live_ones_and_forgets_persisted_ones():
    due = [expiry_member("gone", "succeeded", "probe", "t"), expiry_member("live", "failed", "probe", "t"),
           expiry_member("kept", "cancelled", "probe", "t"), "unreadable"]
    plan = plan_expiry(due, [PTTL_GONE, 2500, PTTL_PERSISTENT, PTTL_GONE], now=100.0)
    assert plan.gone == [ExpiredJob("gone", "succeeded", "probe", "t")]
    assert plan.rescore == {due[1]: 102.5}  # looked at again when Redis expires it
    assert plan.forget == [due[0], due[2], "unreadable"]


def test_the_plan_handles_exactly_what_it_was_given():
    """Bounded: the pass plans only the due entries it read, whatever else exists."""
    due = [expiry_member(f"j{i}", "succeeded", "probe", "t") for i in range(7)]
    plan = plan_expiry(due, [PTTL_GONE] * 7, now=0.0)
    assert len(plan.gone) == 7 and len(plan.forget) == 7
    with pytest.raises(ValueError):
        plan_expiry(due, [PTTL_GONE] * 6, now=0.0)  # a PTTL per entry, or nothing


@pytest.mark.parametrize("trace", [None, {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}])
def test_a_message_is_rebuilt_byte_for_byte_from_the_stamp_on_its_job(trace):
    kind = get_kind("probe")
    message = job_task_message(kind, "f" * 32, "cpu.low", 1796170032.644295, trace)
    record = {"id": "f" * 32, "kind": "probe", "queue": "cpu.high"} | message_stamp(message)  # aged since
    assert message_from_record(kind, record) == message
    assert message_from_record(kind, {"id": "f" * 32}) is None


def test_the_message_is_a_celery_protocol_2_json_message_without_base64():
    message = json.loads(job_task_message(get_kind("probe"), "a" * 32, "cpu.normal", 1.5))
    assert message["content-type"] == "application/json" and "body_encoding" not in message["properties"]
    assert json.loads(message["body"])[0] == ["a" * 32]
    assert message["headers"]["task"] == "renderfarm.kind.probe" and message["headers"]["id"] == "a" * 32
    assert message["properties"]["delivery_info"] == {"exchange": "cpu.normal", "routing_key": "cpu.normal"}
    assert len(json.dumps(message)) < 600  # the bulk of a queued job's memory


def test_a_new_job_hash_leaves_out_what_reads_back_as_its_default():
    fields = {"id": "x", "stage": "", "labels": "{}", "params": "{}", "progress": "0.0", "attempts": "0",
              "priority": "low", "webhook_url": ""}
    assert compact_fields(fields) == {"id": "x", "priority": "low"}
    assert compact_fields({"progress": "12.5", "attempts": "2"}) == {"progress": "12.5", "attempts": "2"}
