"""The estimate maths: learning a kind's overhead and rate, and the start/critical-path arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from renderfarm.core.estimate_model import (
    Fit,
    critical_path,
    media_seconds,
    predict,
    running_duration,
    shape_of,
    start_in,
    update,
)


def learned(samples, decay=0.95):
    fit = None
    for media_s, seconds in samples:
        fit = update(fit, media_s, seconds, decay)
    return fit


def test_nothing_learned_predicts_nothing():
    assert predict(None, 10) is None
    assert predict(Fit(), 10) is None


def test_a_line_with_overhead_is_recovered_from_exact_samples():
    fit = learned([(d, 0.5 + 0.2 * d) for d in (2, 4, 6, 8, 2, 4)])
    assert predict(fit, 20) == pytest.approx(0.5 + 0.2 * 20, rel=1e-6)
    assert predict(fit, 1) == pytest.approx(0.7, rel=1e-6)


def test_one_media_length_scales_its_mean_by_length():
    fit = learned([(4, 2.0), (4, 2.2), (4, 1.8)], decay=1.0)
    assert predict(fit, 8) == pytest.approx(4.0, rel=1e-3)


def test_jobs_without_media_learn_the_mean_job():
    fit = learned([(None, 1.0), (None, 3.0)], decay=1.0)
    assert predict(fit, None) == pytest.approx(2.0)
    assert predict(fit, 100) == pytest.approx(2.0)  # no rate learned: length does not matter


def test_old_behaviour_decays_away():
    fit = learned([(5, 10.0)] * 30 + [(5, 2.0)] * 100)
    assert predict(fit, 5) == pytest.approx(2.0, rel=0.1)


def test_a_negative_overhead_falls_back_to_a_line_through_the_origin():
    fit = learned([(2, 0.1), (10, 5.0)], decay=1.0)
    assert predict(fit, 10) > 0
    assert predict(fit, 1) > 0


def test_unreadable_record_is_none_and_a_record_round_trips():
    fit = learned([(3, 1.5)])
    assert Fit.from_json(fit.to_json()) == fit
    assert Fit.from_json("{not json") is None
    assert Fit.from_json(None) is None


@given(st.lists(st.tuples(st.floats(0.5, 600), st.floats(0.01, 3600)), min_size=1, max_size=40),
       st.floats(0.5, 600))
def test_predictions_are_never_negative(samples, media_s):
    assert predict(learned(samples), media_s) >= 0


def test_shapes_bucket_transcodes_by_renditions_and_tallest_output():
    assert shape_of("transcode", {"renditions": [{"height": 240}, {"height": 720}]}) == "2xh720"
    assert shape_of("transcode", {"renditions": [{"height": 1080}]}) == "1xh1080"
    assert shape_of("chunk_encode", {"height": 480}) == "h720"
    assert shape_of("probe", {}) == "*"


def test_media_seconds_reads_each_kinds_metadata():
    assert media_seconds({"input": {"duration": 6.0}, "renditions": []}) == 6.0  # transcode
    assert media_seconds({"duration": 3.5}) == 3.5  # probe, extract_audio, chunk kinds
    assert media_seconds({"duration_s": 12.0}) == 12.0  # transcribe
    assert media_seconds({"times": [1, 2]}) is None  # thumbnail
    assert media_seconds({"duration": None}) is None
    assert media_seconds(None) is None


def test_running_job_moves_from_prior_to_its_progress():
    assert running_duration(10.0, 1.0, 0) == 10.0
    assert running_duration(10.0, 12.0, 2) == 12.0  # never less than elapsed
    assert running_duration(10.0, 10.0, 50) == pytest.approx(0.5 * 20 + 0.5 * 10)
    assert running_duration(None, 5.0, 50) == pytest.approx(10.0)
    assert running_duration(None, 5.0, 0) is None


def test_start_grows_with_the_work_ahead_and_shrinks_with_slots():
    assert start_in(0, 0, 1, 4.0) == 0.0
    assert start_in(0, 1, 2, 4.0) == 0.0  # a slot is free
    starts = [start_in(n, 1, 1, 4.0) for n in range(5)]
    assert starts == sorted(starts) and starts[0] < starts[-1]
    assert start_in(4, 1, 2, 4.0) == pytest.approx(start_in(4, 1, 1, 4.0) / 2)
    assert start_in(3, 1, 0, 4.0) is None  # no live worker
    assert start_in(3, 1, 1, None) is None


def test_critical_path_is_the_longest_chain():
    steps = {"probe": ([], 1.0), "transcode": (["probe"], 10.0), "thumb": (["probe"], 2.0),
             "report": (["transcode", "thumb"], 1.0)}
    assert critical_path(steps) == 12.0
    assert critical_path({"a": ([], 1.0), "b": ([], None)}) is None
    assert critical_path({}) == 0.0
