"""The one registry of named workflow templates. The API (POST /v1/workflows with a
template, GET /v1/workflow-templates), the CLI and the docs all read it.

A template turns its params (a model, like a kind's) into a workflow spec. A step
whose kind is not registered in a build is left out of the spec; only leaf steps may
be such, so what is left is still a whole workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from renderfarm.core.kinds import KINDS
from renderfarm.core.params import Chunking, Rendition, default_hls_ladder
from renderfarm.core.workflows import FailurePolicy, WorkflowSpec


class _TemplateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failure_policy: FailurePolicy = FailurePolicy.continue_


class VideoAnalysisParams(_TemplateParams):
    height: int = Field(default=360, ge=16, le=4320, multiple_of=2, description="height of the working rendition")
    thumbnails: int = Field(default=5, ge=1, le=200, description="evenly spaced thumbnails")
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$", description="speech language; omitted: detected")
    contact_sheet: bool = Field(default=False, description="vision also writes a contact sheet of the keyframes")


class PublishParams(_TemplateParams):
    heights: list[Annotated[int, Field(ge=16, le=4320, multiple_of=2)]] = Field(default_factory=lambda: [360, 720], min_length=1, max_length=8,
                               description="the ladder's rendition heights (even)")
    thumbnails: int = Field(default=10, ge=1, le=200)
    sprite: bool = Field(default=True, description="a sprite sheet of the thumbnails (player scrubbing)")
    sprite_columns: int = Field(default=5, ge=1, le=20)


class ChunkedTranscodeParams(_TemplateParams):
    renditions: list[Rendition] = Field(default_factory=lambda: [Rendition(height=720)], min_length=1, max_length=8,
                                        description="as transcode's renditions; each is one <name>.mp4")
    chunking: Chunking = Field(default_factory=Chunking)


def _chunked_transcode(p: ChunkedTranscodeParams) -> list[dict[str, Any]]:
    """Per rendition: a split (stream copy, so cheap) fanning out into one chunk_encode
    step per chunk, and a concat that muxes the source's audio once. One split per
    rendition keeps each fan-out a plain split -> encodes -> concat; the engine expands
    each split on its own."""
    steps: list[dict[str, Any]] = []
    split = {"chunk_duration_s": p.chunking.chunk_duration_s, "split_on": p.chunking.split_on,
             "min_duration_s": p.chunking.min_duration_s, "max_chunks": p.chunking.max_chunks}
    for i, rendition in enumerate(p.renditions):
        encode = rendition.model_dump(mode="json", exclude={"audio_bitrate_kbps"}) | {
            "threads": p.chunking.threads or rendition.threads}
        steps.append({"name": f"split-{i}", "kind": "chunk_split", "params": split, "each_chunk": encode})
        steps.append({"name": f"concat-{i}", "kind": "chunk_concat", "needs": [f"split-{i}"],
                      "params": {"name": rendition.name, "audio_bitrate_kbps": rendition.audio_bitrate_kbps}})
    return steps


def _video_analysis(p: VideoAnalysisParams) -> list[dict[str, Any]]:
    working = {"from": "transcode", "output": f"{p.height}p.mp4"}
    transcribe = {"formats": ["json", "srt", "vtt", "txt"]} | ({"language": p.language} if p.language else {})
    return [
        {"name": "probe", "kind": "probe"},
        {"name": "transcode", "kind": "transcode", "needs": ["probe"],
         "params": {"renditions": [{"height": p.height}]}},
        {"name": "thumbnail", "kind": "thumbnail", "needs": ["transcode"], "input": working,
         "params": {"count": p.thumbnails}},
        {"name": "extract_audio", "kind": "extract_audio", "needs": ["transcode"], "input": working},
        {"name": "transcribe", "kind": "transcribe", "needs": ["extract_audio"],
         "input": {"from": "extract_audio", "output": "audio.wav"}, "params": transcribe},
        {"name": "vision", "kind": "vision", "needs": ["transcode"], "input": working,
         "params": {"contact_sheet": p.contact_sheet}},
        # The document export: input = the source video, params = references to the
        # JSON outputs of the analysis steps.
        {"name": "report", "kind": "report", "needs": ["probe", "thumbnail", "transcribe", "vision"],
         "params": {"probe": {"from": "probe", "output": "probe.json"},
                    "transcript": {"from": "transcribe", "output": "transcript.json"},
                    "shots": {"from": "vision", "output": "shots.json"}}},
    ]


def hls_ladder(heights: list[int]) -> list[dict[str, Any]]:
    """The HLS rungs for ``heights``: the default ladder's bitrates where it has the
    height, otherwise scaled by pixel count from the nearest rung below or above."""
    rungs = {r.height: r for r in default_hls_ladder()}
    ladder = []
    for height in heights:
        rung = rungs.get(height)
        if rung is None:
            near = min(rungs, key=lambda h: abs(h - height))
            scale = (height / near) ** 2
            rung = rungs[near].model_copy(update={"height": height, "name": f"{height}p",
                                                  "video_bitrate_kbps": max(50, round(rungs[near].video_bitrate_kbps * scale))})
        ladder.append({"height": rung.height, "video_bitrate_kbps": rung.video_bitrate_kbps,
                       "audio_bitrate_kbps": rung.audio_bitrate_kbps})
    return ladder


def _publish(p: PublishParams) -> list[dict[str, Any]]:
    heights = sorted(set(p.heights))
    top = {"from": "transcode", "output": f"{heights[-1]}p.mp4"}
    return [
        {"name": "transcode", "kind": "transcode", "params": {"renditions": [{"height": h} for h in heights]}},
        {"name": "thumbnails", "kind": "thumbnail", "needs": ["transcode"], "input": top,
         "params": {"count": p.thumbnails, "sprite": p.sprite, "sprite_columns": p.sprite_columns}},
        # The HLS package encodes its own ladder from the source (segment-aligned keyframes
        # need their own encode); it waits for the MP4 ladder only so a failed source fails once.
        {"name": "package", "kind": "package_hls", "needs": ["transcode"],
         "params": {"renditions": hls_ladder(heights)}},
    ]


@dataclass(frozen=True)
class WorkflowTemplate:
    name: str
    description: str
    params_model: type[_TemplateParams]
    steps: Callable[[Any], list[dict[str, Any]]]

    def build(self, input: str, params: dict[str, Any] | BaseModel | None = None, *,
              priority: str = "normal", kinds: dict | None = None) -> WorkflowSpec:
        """The workflow spec for ``input`` (params validated by the template's model)."""
        kinds = KINDS if kinds is None else kinds
        model = params if isinstance(params, self.params_model) else self.params_model.model_validate(params or {})
        steps = available_steps(self.steps(model), kinds)
        return WorkflowSpec.model_validate({"input": input, "steps": steps, "priority": priority,
                                           "failure_policy": model.failure_policy})

    def left_out(self, kinds: dict | None = None) -> list[str]:
        """Steps (with defaults) whose kind this build does not have."""
        kinds = KINDS if kinds is None else kinds
        return [step["name"] for step in self.steps(self.params_model()) if step["kind"] not in kinds]


def available_steps(steps: list[dict[str, Any]], kinds: dict) -> list[dict[str, Any]]:
    """The steps whose kind is registered. Leaving out a step that others need would
    change what the workflow means: that is an error in the template."""
    missing = {step["name"] for step in steps if step["kind"] not in kinds}
    for step in steps:
        if step["name"] not in missing and missing & set(step.get("needs", [])):
            raise ValueError(f"template step {step['name']!r} needs a step whose kind is not registered")
    return [step for step in steps if step["name"] not in missing]


_TEMPLATES: tuple[WorkflowTemplate, ...] = (
    WorkflowTemplate("video-analysis",
                     "probe -> transcode -> [thumbnail, extract_audio -> transcribe, vision] -> report",
                     VideoAnalysisParams, _video_analysis),
    WorkflowTemplate("publish", "transcode ladder -> [HLS package, thumbnails and sprite sheet]",
                     PublishParams, _publish),
    WorkflowTemplate("chunked-transcode", "per rendition: chunk_split -> one chunk_encode per chunk (longest first) "
                     "-> chunk_concat with the source's audio", ChunkedTranscodeParams, _chunked_transcode),
)

TEMPLATES: dict[str, WorkflowTemplate] = {template.name: template for template in _TEMPLATES}


def get_template(name: str) -> WorkflowTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown workflow template {name!r}; known: {', '.join(TEMPLATES)}") from None
