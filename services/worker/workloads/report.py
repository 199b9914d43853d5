"""``report``: the document export of an analysis workflow.

Input: the source video. Params ``probe``, ``transcript`` and ``shots`` are media
references to the JSON that probe, transcribe and vision jobs published (each
optional; without ``probe`` the input is probed here). Keyframes are read beside
shots.json under the names it lists. Writes report.json (the content),
report.html (self-contained) and report.pdf, each published from a temporary name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from renderfarm.core.jobs import JobResult
from renderfarm.core.params import ReportParams
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import InvalidInput, InvalidMedia
from renderfarm.worker.ffmpeg_exec import probe
from renderfarm.worker.media_refs import local_reference, read_json_reference, sibling_reference
from renderfarm.worker.workloads.cpu import media_summary
from renderfarm.worker.workloads.report_docs import build_report, image_kind, render_html, render_pdf, sample_evenly

MAX_KEYFRAME_BYTES = 16 << 20


def _refs(ctx: JobContext) -> dict:
    """Whose references these are: an s3:// output is readable by its own tenant only."""
    return {"tenant": ctx.job.tenant, "should_stop": ctx.is_cancelled}


OUTPUTS = (("report.json", "application/json"), ("report.html", "text/html"), ("report.pdf", "application/pdf"))


def _document(value: Any, what: str, required_key: str, kind: type) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get(required_key), kind):
        raise InvalidInput(f"{what} is not what that step writes (no {required_key!r} {kind.__name__})")
    return value


def _keyframes(ctx: JobContext, shots_uri: str, shots: dict[str, Any], limit: int) -> dict[str, bytes]:
    names = [s.get("keyframe") for s in shots["shots"] if isinstance(s, dict) and s.get("keyframe")]
    images: dict[str, bytes] = {}
    for name in sample_evenly(names, limit):
        path = local_reference(sibling_reference(shots_uri, str(name)), ctx.settings, ctx.work_dir, f"keyframe {name}",
                               tenant=ctx.job.tenant, should_stop=ctx.is_cancelled)
        if path.stat().st_size > MAX_KEYFRAME_BYTES:
            raise InvalidInput(f"keyframe {name} is larger than {MAX_KEYFRAME_BYTES} bytes")
        data = path.read_bytes()
        if image_kind(data) is None:
            raise InvalidInput(f"keyframe {name} is not a JPEG or PNG image")
        images[str(name)] = data
        ctx.raise_if_cancelled()
    return images


def report(ctx: JobContext) -> JobResult:
    params: ReportParams = ctx.params  # type: ignore[assignment]
    ctx.progress(0, "reading inputs", "")
    if params.probe:
        media = _document(read_json_reference(params.probe, ctx.settings, ctx.work_dir, "probe", **_refs(ctx)), "probe",
                          "streams", list)
    else:
        if not ctx.input_path.is_file():
            raise InvalidMedia(f"input file {ctx.input_path.name!r} is missing")
        media = media_summary(probe(ctx.input_path, should_stop=ctx.is_cancelled))
    transcript = None
    if params.transcript:
        transcript = _document(read_json_reference(params.transcript, ctx.settings, ctx.work_dir, "transcript", **_refs(ctx)),
                               "transcript", "segments", list)
    shots, keyframes = None, {}
    if params.shots:
        shots = _document(read_json_reference(params.shots, ctx.settings, ctx.work_dir, "shots", **_refs(ctx)), "shots",
                          "shots", list)
        ctx.progress(20, "reading keyframes", "")
        keyframes = _keyframes(ctx, params.shots, shots, params.max_keyframes)

    ctx.progress(40, "writing report", "")
    source_name = Path(ctx.job.input).name or ctx.input_path.name
    document = build_report(title=params.title or source_name, source={"name": source_name, "uri": ctx.job.input},
                            media=media, transcript=transcript, shots=shots, keyframes=keyframes,
                            summary_sentences=params.summary_sentences)
    rendered = {
        "report.json": json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8"),
        "report.html": render_html(document, keyframes).encode("utf-8"),
    }
    ctx.progress(60, "writing report", "pdf")
    rendered["report.pdf"] = render_pdf(document, keyframes)

    outputs = []
    for name, media_type in OUTPUTS:
        temp = ctx.temp_output(name)
        temp.write_bytes(rendered[name])
        outputs.append(ctx.publish(temp, name, media_type))
    ctx.progress(100, "report", "done")
    return JobResult(outputs=outputs, metadata={
        "title": document["title"],
        "shots": len(document["shots"]) if document["shots"] is not None else None,
        "keyframes": len(document["keyframes"]),
        "transcript_segments": len(document["transcript"]["segments"]) if document["transcript"] else None,
        "summary_sentences": len(document["summary"]["sentences"]) if document["summary"] else None,
        "sizes": {name: len(data) for name, data in rendered.items()},
    })


HANDLERS = {"report": report}
