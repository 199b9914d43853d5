"""The analysis report's content and its two renderings, as pure functions.

``build_report`` turns what earlier steps wrote (the probe summary, transcript.json,
shots.json and the keyframes' bytes) into one plain document: that document is
report.json, and ``render_html`` / ``render_pdf`` only lay it out. The HTML is
self-contained (inline CSS, keyframes as data: URIs, no external reference); the
PDF is made with fpdf2 from bytes held in memory (never a path or URL: fpdf2 would
open or fetch those itself).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from typing import Any

from renderfarm.worker.workloads.summary import summarize

SUMMARY_METHOD = "textrank"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    millis = int(round(seconds * 1000))
    whole, fraction = divmod(millis, 1000)
    return f"{whole // 3600:d}:{whole // 60 % 60:02d}:{whole % 60:02d}.{fraction:03d}"


def sample_evenly(items: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items spread over the whole list, first and last included."""
    if limit <= 0:
        return []
    if len(items) <= limit:
        return list(items)
    if limit == 1:
        return [items[0]]
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def image_kind(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return None


def build_report(*, title: str, source: dict[str, Any], media: dict[str, Any], transcript: dict[str, Any] | None,
                 shots: dict[str, Any] | None, keyframes: dict[str, bytes], summary_sentences: int) -> dict[str, Any]:
    """report.json: every fact the HTML and PDF show, nothing they compute themselves."""
    document: dict[str, Any] = {"title": title, "source": source, "media": media,
                                "transcript": None, "summary": None, "shots": None, "keyframes": []}
    if transcript is not None:
        text = str(transcript.get("text") or "")
        document["transcript"] = {
            "language": transcript.get("language"),
            "duration": transcript.get("duration"),
            "text": text,
            "segments": [{"start": s.get("start"), "end": s.get("end"), "text": s.get("text", "")}
                         for s in transcript.get("segments", [])],
        }
        document["summary"] = {"method": SUMMARY_METHOD, "sentences": summarize(text, summary_sentences)}
    if shots is not None:
        fps = shots.get("fps")
        document["shots"] = [
            {key: shot.get(key) for key in ("index", "start_frame", "end_frame", "start_time", "end_time", "keyframe")}
            for shot in shots.get("shots", [])
        ]
        for shot in shots.get("shots", []):
            name = shot.get("keyframe")
            if name in keyframes:
                data = keyframes[name]
                frame = shot.get("keyframe_frame")
                document["keyframes"].append({
                    "shot": shot.get("index"),
                    "name": name,
                    "frame": frame,
                    "time": round(frame / fps, 3) if fps and frame is not None else None,
                    "media_type": image_kind(data),
                    "size_bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                })
    return document


# --- HTML ----------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:.2rem .6rem;text-align:left;border-bottom:1px solid #eee}
.shots{display:grid;grid-template-columns:repeat(auto-fill,minmax(14rem,1fr));gap:1rem}
.shots figure{margin:0}.shots img{width:100%;height:auto;display:block}
.t{color:#777;font-variant-numeric:tabular-nums;margin-right:.5rem}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _media_rows(media: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("Container", media.get("format_name")), ("Duration", _clock(media.get("duration"))),
            ("Size", f"{media['size']:,} bytes" if media.get("size") else None)]
    for stream in media.get("streams", []):
        if stream.get("type") == "video":
            rows.append(("Video", f"{stream.get('codec')} {stream.get('width')}x{stream.get('height')} "
                                  f"@ {stream.get('fps')} fps"))
        elif stream.get("type") == "audio":
            rows.append(("Audio", f"{stream.get('codec')} {stream.get('sample_rate')} Hz, "
                                  f"{stream.get('channels')} channel(s)"))
    return [(label, str(value)) for label, value in rows if value is not None]


def render_html(report: dict[str, Any], keyframes: dict[str, bytes]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{_e(report['title'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(report['title'])}</h1>", "<h2>Media</h2><table>"]
    parts += [f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>" for label, value in _media_rows(report["media"])]
    parts.append("</table>")
    if report["summary"] is not None:
        parts.append("<h2>Summary</h2><ul class=\"summary\">")
        parts += [f"<li>{_e(sentence)}</li>" for sentence in report["summary"]["sentences"]]
        parts.append("</ul>")
    if report["shots"] is not None:
        by_name = {k["name"]: k for k in report["keyframes"]}
        parts.append(f"<h2>Shots ({len(report['shots'])})</h2><div class=\"shots\">")
        for shot in report["shots"]:
            caption = f"Shot {shot['index']}: {_clock(shot['start_time'])} – {_clock(shot['end_time'])}"
            keyframe = by_name.get(shot.get("keyframe"))
            image = ""
            if keyframe is not None:
                data = base64.b64encode(keyframes[keyframe["name"]]).decode("ascii")
                image = (f'<img src="data:{keyframe["media_type"]};base64,{data}" '
                         f'alt="keyframe of shot {_e(shot["index"])}" data-name="{_e(keyframe["name"])}">')
            parts.append(f"<figure>{image}<figcaption>{_e(caption)}</figcaption></figure>")
        parts.append("</div>")
    if report["transcript"] is not None:
        parts.append("<h2>Transcript</h2>")
        for segment in report["transcript"]["segments"]:
            parts.append(f"<p><span class=\"t\">{_e(_clock(segment['start']))}</span>{_e(segment['text'])}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --- PDF -----------------------------------------------------------------------------------


def _latin1(text: Any) -> str:
    # The PDF's built-in fonts cover Latin-1 only; report.json and the HTML keep the exact text.
    return ("" if text is None else str(text)).replace("–", "-").encode("latin-1", "replace").decode("latin-1")


def render_pdf(report: dict[str, Any], keyframes: dict[str, bytes]) -> bytes:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos
    from PIL import Image

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_title(_latin1(report["title"]))
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def heading(text: str, size: int = 13) -> None:
        pdf.set_font("Helvetica", "B", size)
        pdf.multi_cell(width, 8, _latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", "", 10)

    def paragraph(text: str) -> None:
        pdf.multi_cell(width, 5, _latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    heading(report["title"], 16)
    heading("Media")
    for label, value in _media_rows(report["media"]):
        paragraph(f"{label}: {value}")
    if report["summary"] is not None:
        heading("Summary")
        for sentence in report["summary"]["sentences"]:
            paragraph(f"- {sentence}")
    if report["shots"] is not None:
        heading(f"Shots ({len(report['shots'])})")
        by_shot = {k["shot"]: k for k in report["keyframes"]}
        columns, gap = 3, 4
        cell = (width - gap * (columns - 1)) / columns
        for position, shot in enumerate(report["shots"]):
            column = position % columns
            if column == 0:
                row_top = pdf.get_y()
            keyframe = by_shot.get(shot["index"])
            height = 0.0
            if keyframe is not None:
                data = keyframes[keyframe["name"]]
                with Image.open(io.BytesIO(data)) as image:
                    height = cell * image.height / max(1, image.width)
                if column == 0 and row_top + height + 10 > pdf.h - pdf.b_margin:
                    pdf.add_page()
                    row_top = pdf.get_y()
                pdf.image(io.BytesIO(data), x=pdf.l_margin + column * (cell + gap), y=row_top, w=cell, h=height)
            pdf.set_xy(pdf.l_margin + column * (cell + gap), row_top + height + 1)
            pdf.set_font("Helvetica", "", 8)
            pdf.cell(cell, 4, _latin1(f"Shot {shot['index']}: {_clock(shot['start_time'])} - {_clock(shot['end_time'])}"))
            pdf.set_font("Helvetica", "", 10)
            if column == columns - 1 or position == len(report["shots"]) - 1:
                pdf.set_xy(pdf.l_margin, row_top + height + 8)
    if report["transcript"] is not None:
        heading("Transcript")
        for segment in report["transcript"]["segments"]:
            paragraph(f"[{_clock(segment['start'])}] {segment['text']}")
    return bytes(pdf.output())
