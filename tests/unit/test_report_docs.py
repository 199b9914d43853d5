"""The report's content (report.json) and its HTML and PDF renderings, from plain data."""

from __future__ import annotations

import base64
import hashlib
import io
import re

from PIL import Image
from pypdf import PdfReader

from renderfarm.worker.workloads.report_docs import build_report, render_html, render_pdf, sample_evenly

MEDIA = {"format_name": "mov,mp4", "duration": 4.0, "size": 1000,
         "streams": [{"type": "video", "codec": "h264", "width": 64, "height": 36, "fps": 25.0}]}
TRANSCRIPT = {"language": "en", "duration": 4.0, "text": "Keepers light lamps. Lamps guide ships <home>.",
              "segments": [{"id": 0, "start": 0.0, "end": 2.0, "text": "Keepers light lamps."},
                           {"id": 1, "start": 2.0, "end": 4.0, "text": "Lamps guide ships <home>."}]}
SHOTS = {"fps": 25.0, "shots": [
    {"index": 1, "start_frame": 0, "end_frame": 49, "start_time": 0.0, "end_time": 2.0, "keyframe_frame": 24,
     "keyframe": "keyframe-0001.jpg"},
    {"index": 2, "start_frame": 50, "end_frame": 99, "start_time": 2.0, "end_time": 4.0, "keyframe_frame": 74,
     "keyframe": "keyframe-0002.jpg"}]}


def jpeg(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 36), colour).save(out, "JPEG")
    return out.getvalue()


KEYFRAMES = {"keyframe-0001.jpg": jpeg("red"), "keyframe-0002.jpg": jpeg("blue")}


def report() -> dict:
    return build_report(title="Clip <1>", source={"name": "clip.mp4", "uri": "file:///x/clip.mp4"}, media=MEDIA,
                        transcript=TRANSCRIPT, shots=SHOTS, keyframes=KEYFRAMES, summary_sentences=1)


def test_report_json_carries_transcript_shots_and_keyframe_digests():
    document = report()
    assert document["transcript"]["text"] == TRANSCRIPT["text"]
    assert [s["text"] for s in document["transcript"]["segments"]] == ["Keepers light lamps.", "Lamps guide ships <home>."]
    assert document["summary"]["method"] == "textrank" and len(document["summary"]["sentences"]) == 1
    assert [(s["index"], s["start_time"], s["keyframe"]) for s in document["shots"]] == [
        (1, 0.0, "keyframe-0001.jpg"), (2, 2.0, "keyframe-0002.jpg")]
    assert [(k["shot"], k["time"], k["sha256"]) for k in document["keyframes"]] == [
        (1, 0.96, hashlib.sha256(KEYFRAMES["keyframe-0001.jpg"]).hexdigest()),
        (2, 2.96, hashlib.sha256(KEYFRAMES["keyframe-0002.jpg"]).hexdigest())]


def test_a_report_without_transcript_or_shots_says_so():
    document = build_report(title="t", source={}, media=MEDIA, transcript=None, shots=None, keyframes={},
                            summary_sentences=3)
    assert (document["transcript"], document["summary"], document["shots"], document["keyframes"]) == (None, None, None, [])
    assert "<h2>Shots" not in render_html(document, {}) and len(PdfReader(io.BytesIO(render_pdf(document, {}))).pages) == 1


def test_html_is_self_contained_with_the_keyframes_inline_and_text_escaped():
    page = render_html(report(), KEYFRAMES)
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert [base64.b64decode(s.split(",", 1)[1]) for s in sources] == list(KEYFRAMES.values())
    assert all(s.startswith("data:image/jpeg;base64,") for s in sources)
    assert not re.search(r'(src|href)="(?!data:)', page), "no external references"
    assert "ships &lt;home&gt;" in page and "<home>" not in page
    assert "<title>Clip &lt;1&gt;</title>" in page


def test_pdf_parses_and_holds_the_text_and_the_images():
    reader = PdfReader(io.BytesIO(render_pdf(report(), KEYFRAMES)))
    text = "".join(page.extract_text() for page in reader.pages)
    assert "Keepers light lamps." in text and "Shot 2" in text
    assert sum(len(page.images) for page in reader.pages) == 2


def test_keyframes_are_sampled_evenly_including_first_and_last():
    assert sample_evenly(list(range(10)), 4) == [0, 3, 6, 9]
    assert sample_evenly([1, 2], 5) == [1, 2] and sample_evenly([1, 2], 0) == []


def test_times_read_as_clock_times_rounded_to_the_millisecond():
    from renderfarm.worker.workloads.report_docs import _clock

    assert _clock(1.9996) == "0:00:02.000"
    assert _clock(3725.25) == "1:02:05.250"
    assert _clock(None) == "-"
