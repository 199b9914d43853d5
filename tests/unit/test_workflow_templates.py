"""The workflow template registry (pure): every template builds a valid workflow from this build's kinds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from renderfarm.core.kinds import KINDS
from renderfarm.core.workflow_templates import TEMPLATES, get_template
from renderfarm.core.workflows import validate_spec


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_builds_a_valid_workflow_with_its_defaults(name):
    spec = get_template(name).build("file:///data/inputs/clip.mp4")
    assert validate_spec(spec) == []
    assert {step.kind for step in spec.steps} <= set(KINDS)


def test_video_analysis_has_the_documented_shape():
    spec = get_template("video-analysis").build("file:///in.mp4", {"height": 240})
    needs = {step.name: step.needs for step in spec.steps}
    assert needs["transcode"] == ["probe"]
    assert needs["transcribe"] == ["extract_audio"]
    assert needs["thumbnail"] == needs["extract_audio"] == needs["vision"] == ["transcode"]
    assert spec.step("thumbnail").input.output == "240p.mp4"
    if "report" in KINDS:
        assert set(needs["report"]) == {"probe", "thumbnail", "transcribe", "vision"}


def test_a_step_whose_kind_is_not_registered_is_left_out_only_if_nothing_needs_it():
    without_thumbnail = {name: kind for name, kind in KINDS.items() if name != "thumbnail"}
    publish = get_template("publish").build("file:///in.mp4", kinds=without_thumbnail)
    assert "thumbnails" not in {step.name for step in publish.steps}
    assert "thumbnails" in get_template("publish").left_out(without_thumbnail)
    if "report" in KINDS:  # the report needs the thumbnail step: leaving that out is an error
        with pytest.raises(ValueError):
            get_template("video-analysis").build("file:///in.mp4", kinds=without_thumbnail)


def test_template_params_are_checked_like_kind_params():
    with pytest.raises(ValidationError):
        get_template("publish").build("file:///in.mp4", {"heights": [241]})
    with pytest.raises(ValidationError):
        get_template("video-analysis").build("file:///in.mp4", {"bogus": 1})
    with pytest.raises(KeyError):
        get_template("nope")


def test_the_readme_lists_exactly_the_registered_templates():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("| template | steps |", 1)[1].split("\n\n", 1)[0]
    listed = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert listed == set(TEMPLATES)
