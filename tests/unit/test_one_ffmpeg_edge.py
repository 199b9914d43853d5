"""Every ffmpeg and ffprobe a worker runs goes through renderfarm.worker.ffmpeg_exec
(input whitelists, kill-on-cancel): no other worker module names the binaries or
starts processes of its own for media."""

from __future__ import annotations

import re
from pathlib import Path

from renderfarm.worker.ffmpeg_exec import FORMAT_WHITELIST, input_args, pipe_argv, probe_argv

WORKER = Path(__file__).resolve().parents[2] / "services" / "worker"


def test_no_worker_module_but_the_edge_names_ffmpeg_or_ffprobe_as_a_command():
    offenders = []
    for path in sorted(WORKER.rglob("*.py")):
        if path.name == "ffmpeg_exec.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(r"""["'](ffmpeg|ffprobe)["']""", line):
                offenders.append(f"{path.relative_to(WORKER)}:{number}: {line.strip()}")
    assert offenders == []


def test_hand_built_commands_carry_both_whitelists():
    argv = pipe_argv(*input_args("/media/in.mp4"), "-f", "s16le", "pipe:1")
    assert argv[argv.index("-protocol_whitelist") + 1] == "file"
    assert argv[argv.index("-format_whitelist") + 1] == FORMAT_WHITELIST
    assert argv[argv.index("-i") + 1] == "file:/media/in.mp4"
    assert argv.index("-format_whitelist") < argv.index("-i")
    assert "hls" not in FORMAT_WHITELIST.split(",") and "concat" not in FORMAT_WHITELIST.split(",")
    probe = probe_argv("/media/in.mp4")
    assert probe[probe.index("-format_whitelist") + 1] == FORMAT_WHITELIST and probe[-1] == "file:/media/in.mp4"
    trusted = input_args("/work/tile-%04d.jpg", trusted=True)
    assert "-format_whitelist" not in trusted and trusted[:2] == ["-protocol_whitelist", "file"]
