"""The cpu pool's handlers: the ffmpeg basics (``cpu``) and the kinds that build on
them, one module each (HLS packaging, the report, chunked transcode), so no
module grows a second job."""

from __future__ import annotations

from renderfarm.worker.workloads import chunks, cpu, hls, report

HANDLERS = {**cpu.HANDLERS, **hls.HANDLERS, **report.HANDLERS, **chunks.HANDLERS}
