"""Command-line text to submit parameters (pure functions, no farm needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from renderfarm.cli.client import iter_sse, resolve_api_key
from renderfarm.cli.params import (
    ParamError,
    build_params,
    input_uri,
    parse_labels,
    parse_params,
    parse_rendition,
    parse_value,
    split_top_level,
)
from renderfarm.core.params import ThumbnailParams, TranscodeParams


@pytest.mark.parametrize("text, expected", [
    ("240", 240),
    ("0.5", 0.5),
    ("true", True),
    ("false", False),
    ("null", None),
    ("[1,2]", [1, 2]),
    ("[1.5, 3]", [1.5, 3]),
    ('{"a": 1}', {"a": 1}),
    ('"240"', "240"),
    ("en", "en"),
    ("720p", "720p"),
    ("hello world", "hello world"),
    ("", ""),
    ("[1,2", "[1,2"),
])
def test_values_are_json_when_they_parse(text, expected):
    assert parse_value(text) == expected


def test_params_parse_scalars_arrays_and_strings():
    assert parse_params(["height=240", "times=[1,2]", "sprite=true", "language=en", "format=jpg"]) == {
        "height": 240, "times": [1, 2], "sprite": True, "language": "en", "format": "jpg"}


def test_value_may_contain_equals_signs():
    assert parse_params(["query=a=b"]) == {"query": "a=b"}


def test_dotted_keys_nest():
    assert parse_params(["a.b=1", "a.c=x", "d=2"]) == {"a": {"b": 1, "c": "x"}, "d": 2}


def test_later_param_replaces_earlier():
    assert parse_params(["crf=20", "crf=23"]) == {"crf": 23}


@pytest.mark.parametrize("items", [["novalue"], ["=1"], ["a..b=1"], ["a=1", "a.b=2"], ["a.b=2", "a=1"]])
def test_bad_params_are_refused(items):
    with pytest.raises(ParamError):
        parse_params(items)


def test_split_top_level_respects_brackets_and_quotes():
    assert split_top_level('a=1,b=[1,2],c="x,y", d={"e":1,"f":2}') == ["a=1", "b=[1,2]", 'c="x,y"', 'd={"e":1,"f":2}']


@pytest.mark.parametrize("text, expected", [
    ("height=240,crf=23", {"height": 240, "crf": 23}),
    ("height=480, video_codec=hevc, name=sd", {"height": 480, "video_codec": "hevc", "name": "sd"}),
    ("720p", {"height": 720}),
    ("1080", {"height": 1080}),
    ('{"height": 360, "preset": "fast"}', {"height": 360, "preset": "fast"}),
])
def test_renditions(text, expected):
    assert parse_rendition(text) == expected


@pytest.mark.parametrize("text", ["", "height", "[1,2]", "{not json"])
def test_bad_renditions_are_refused(text):
    with pytest.raises(ParamError):
        parse_rendition(text)


def test_build_params_renditions_make_a_valid_transcode_body():
    params = build_params(renditions=["height=240,crf=23", "720p"])
    assert params == {"renditions": [{"height": 240, "crf": 23}, {"height": 720}]}
    model = TranscodeParams.model_validate(params)
    assert [r.name for r in model.renditions] == ["240p", "720p"]


def test_build_params_merges_json_then_params_then_renditions():
    params = build_params(
        param_items=["sprite=true", "opts.a=1"],
        params_json='{"count": 3, "opts": {"b": 2}, "renditions": [{"height": 120}]}',
        renditions=["height=240"],
    )
    assert params == {"count": 3, "sprite": True, "opts": {"a": 1, "b": 2},
                      "renditions": [{"height": 120}, {"height": 240}]}


def test_build_params_thumbnail_times_validate():
    params = build_params(param_items=["times=[1,2.5]", "sprite=true", "width=160"])
    model = ThumbnailParams.model_validate(params)
    assert model.times == [1, 2.5] and model.sprite and model.count is None


@pytest.mark.parametrize("kwargs", [
    {"params_json": "{bad"},
    {"params_json": "[1, 2]"},
    {"params_json": '{"renditions": 5}', "renditions": ["240"]},
])
def test_build_params_refuses_bad_json(kwargs):
    with pytest.raises(ParamError):
        build_params(**kwargs)


def test_build_params_empty():
    assert build_params() == {}


def test_labels_stay_text():
    assert parse_labels(["team=media", "n=5", "url=a=b"]) == {"team": "media", "n": "5", "url": "a=b"}
    with pytest.raises(ParamError):
        parse_labels(["nolabel"])


def test_input_local_paths_become_absolute_file_uris(tmp_path):
    assert input_uri("clip.mp4", cwd=str(tmp_path)) == (tmp_path / "clip.mp4").as_uri()
    assert input_uri(str(tmp_path / "a b.mp4")) == (tmp_path / "a b.mp4").as_uri()
    assert "%20" in input_uri(str(tmp_path / "a b.mp4"))
    # ".." is folded away (the API refuses it in paths)
    assert input_uri("sub/../clip.mp4", cwd=str(tmp_path)) == (tmp_path / "clip.mp4").as_uri()
    assert input_uri("~/x.mp4") == (Path.home() / "x.mp4").as_uri()


@pytest.mark.parametrize("url", ["https://example.com/a.mp4?x=1", "http://h:8080/v", "file:///data/inputs/a.mp4",
                                 "s3://bucket/key"])
def test_input_urls_pass_through(url):
    assert input_uri(url) == url


def test_input_empty_is_refused():
    with pytest.raises(ParamError):
        input_uri("  ")


def test_sse_parser():
    lines = ["event: job", 'data: {"status": "queued"}', "", ": keep-alive", "", "event: progress",
             'data: {"progress": 50}', "", "data: a", "data: b", ""]
    events = list(iter_sse(iter(lines)))
    assert [(e.event, e.data) for e in events] == [
        ("job", '{"status": "queued"}'), ("progress", '{"progress": 50}'), ("message", "a\nb")]
    assert events[1].json() == {"progress": 50}


def test_api_key_from_option_or_local_key_file(tmp_path):
    key_file = tmp_path / ".api-key"
    assert resolve_api_key(None, key_file) is None
    key_file.write_text("rf_local\n")
    assert resolve_api_key(None, key_file) == "rf_local"
    assert resolve_api_key("explicit", key_file) == "explicit"
