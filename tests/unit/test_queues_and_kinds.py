import pytest
from pydantic import ValidationError

from renderfarm.core.kinds import KINDS, get_kind, kinds_for, longest_time_limit_s
from renderfarm.core.params import ThumbnailParams, TranscodeParams
from renderfarm.core.queues import (
    Priority,
    WorkloadClass,
    all_queues,
    next_priority_up,
    parse_queue_name,
    pool_queues,
    queue_name,
    redis_list_keys,
)


def test_pool_queues_are_in_strict_priority_order():
    assert pool_queues("gpu-transcribe") == [
        "gpu-transcribe.critical", "gpu-transcribe.high", "gpu-transcribe.normal", "gpu-transcribe.low"]


def test_queue_name_round_trip():
    for name in all_queues():
        workload, priority = parse_queue_name(name)
        assert queue_name(workload, priority) == name
    assert len(all_queues()) == 12


@pytest.mark.parametrize("bad", ["cpu", "cpu.urgent", "gpu.high", "", "cpu.high.x"])
def test_unknown_queue_names_are_refused(bad):
    with pytest.raises(ValueError):
        parse_queue_name(bad)


def test_depth_counts_kombu_priority_sublists():
    keys = redis_list_keys("cpu.low")
    assert keys[0] == "cpu.low" and len(keys) == 4
    assert all(key.startswith("cpu.low\x06\x16") for key in keys[1:])


def test_priority_aging_order():
    assert next_priority_up(Priority.low) is Priority.normal
    assert next_priority_up(Priority.critical) is None


def test_every_kind_maps_to_a_pool_and_has_sane_limits():
    assert set(KINDS) == {"probe", "transcode", "thumbnail", "extract_audio", "transcribe", "vision", "package_hls",
                          "report", "chunk_split", "chunk_encode", "chunk_concat"}
    for kind in KINDS.values():
        assert kind.soft_time_limit_s < kind.time_limit_s
        assert kind.task_name == f"renderfarm.kind.{kind.name}"
    assert {k.name for k in kinds_for(WorkloadClass.cpu)} == {"probe", "transcode", "thumbnail", "extract_audio",
                                                              "package_hls", "report", "chunk_split",
                                                              "chunk_encode", "chunk_concat"}
    assert longest_time_limit_s() == max(k.time_limit_s for k in KINDS.values())


def test_unknown_kind_error_lists_the_kinds():
    with pytest.raises(KeyError) as info:
        get_kind("nope")
    assert "transcode" in str(info.value)


def test_transcode_params_validation():
    params = TranscodeParams.model_validate({"renditions": [{"height": 240}]})
    assert params.renditions[0].name == "240p"
    with pytest.raises(ValidationError):
        TranscodeParams.model_validate({"renditions": [{"height": 241}]})
    with pytest.raises(ValidationError):
        TranscodeParams.model_validate({"renditions": [{"height": 240, "crf": 20, "video_bitrate_kbps": 500}]})
    with pytest.raises(ValidationError):
        TranscodeParams.model_validate({"renditions": [{"height": 240}, {"height": 240}]})
    with pytest.raises(ValidationError):
        TranscodeParams.model_validate({"renditions": [{"height": 240, "bogus": 1}]})


def test_thumbnail_defaults_to_five_evenly_spaced():
    assert ThumbnailParams().count == 5
    with pytest.raises(ValidationError):
        ThumbnailParams(times=[1.0], count=2)
