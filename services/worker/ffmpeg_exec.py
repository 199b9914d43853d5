"""The thin edge that runs ffmpeg and ffprobe.

Every command gets the same safety and reporting flags:

- inputs are opened with ``-protocol_whitelist file``: a media file can name other
  resources (an HLS or DASH playlist, a concat list), and without the whitelist
  ffmpeg would fetch them, which turns a media job into an SSRF probe;
- untrusted inputs are also limited to a list of ordinary media demuxers
  (``-format_whitelist``), so playlist demuxers (hls, dash, concat…) never run,
  not even against local ``file:`` segments (which would read arbitrary files);
- ``-progress pipe:1 -nostats``: a machine-readable key=value progress stream on
  stdout, parsed here into a percentage;
- ``-nostdin``: ffmpeg must never wait for, or eat, terminal input.

Every pool runs ffmpeg and ffprobe through here: ``run_ffmpeg`` (outputs to
files, progress on stdout), ``stream_ffmpeg`` (raw frames or PCM streamed on
stdout, the GPU pools' pipes) and ``probe``. Each takes ``should_stop`` (the
job's cancel check), polled on a thread while the process runs, so a cancelled
job's ffmpeg is killed even when it is stalled and writes nothing.

The parser is a pure function (``parse_progress_lines``); the process handling
around it is the imperative shell.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Sequence

import ffmpeg

from renderfarm.core.tracing import traced
from renderfarm.worker.errors import InvalidMedia, JobCancelled

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"

GLOBAL_ARGS: tuple[str, ...] = ("-nostdin", "-hide_banner", "-loglevel", "error", "-progress", "pipe:1", "-nostats")
# For commands whose stdout carries the media itself (raw frames, PCM): no progress stream.
PIPE_GLOBAL_ARGS: tuple[str, ...] = ("-nostdin", "-hide_banner", "-loglevel", "error", "-nostats")

PROTOCOL_WHITELIST = "file"

# Demuxers an uploaded media file may be read with. Playlist and list demuxers
# (hls, dash, concat, image2 patterns, ffmetadata…) are deliberately absent.
# ffmpeg matches each comma-separated part of a demuxer's name, so "mov" covers
# "mov,mp4,m4a,3gp,3g2,mj2" and "matroska" covers "matroska,webm".
MEDIA_DEMUXERS: tuple[str, ...] = (
    "mov", "matroska", "webm", "avi", "mpegts", "mpeg", "mpegvideo", "flv", "asf", "mxf", "gxf", "lxf",
    "ogg", "nut", "rm", "wtv", "dv", "ivf", "obu", "av1", "h264", "hevc", "m4v", "vc1", "dirac", "dnxhd",
    "mjpeg", "gif", "yuv4mpegpipe",
    "wav", "w64", "mp3", "flac", "aac", "loas", "ac3", "eac3", "dts", "truehd", "mlp", "aiff", "caf",
    "amr", "amrnb", "amrwb", "wv", "ape", "tta",
)
FORMAT_WHITELIST = ",".join(MEDIA_DEMUXERS)

# How long ffmpeg gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE_S = 2.0
# How often a running ffmpeg/ffprobe asks whether its job was cancelled.
CANCEL_POLL_S = 0.5

# stderr phrases that mean "this input cannot be read as media" (not a bug here,
# not worth a retry).
_INVALID_MEDIA_PATTERNS = (
    "invalid data found when processing input",
    "moov atom not found",
    "no such file or directory",
    "not on whitelist",
    "could not find codec parameters",
    "matches no streams",
    "does not contain any stream",
    "error opening input",
    "end of file",
)


def input_kwargs(*, trusted: bool = False) -> dict[str, str]:
    """Options for an ``ffmpeg.input``: the whitelists. ``trusted`` is for files this
    worker wrote itself (image sequences for a sprite sheet), which need the image2
    demuxer; the protocol whitelist applies to every input."""
    options = {"protocol_whitelist": PROTOCOL_WHITELIST}
    if not trusted:
        options["format_whitelist"] = FORMAT_WHITELIST
    return options


def file_url(path: Path | str) -> str:
    """``file:`` + absolute path: a colon in a file name can never select a protocol."""
    return "file:" + str(Path(path).absolute())


def input_args(path: Path | str, *, trusted: bool = False) -> list[str]:
    """``-i`` with the whitelists, for argv built by hand (the GPU pools' commands)."""
    options = [item for name, value in input_kwargs(trusted=trusted).items() for item in (f"-{name}", value)]
    return [*options, "-i", file_url(path)]


def ffmpeg_argv(*args: str) -> list[str]:
    """An ffmpeg command writing files, with the global flags (progress on stdout) and -y."""
    return [FFMPEG, *GLOBAL_ARGS, "-y", *args]


def pipe_argv(*args: str) -> list[str]:
    """An ffmpeg command whose stdout is the output (``... -f rawvideo pipe:1``)."""
    return [FFMPEG, *PIPE_GLOBAL_ARGS, *args]


def compile_command(stream_spec) -> list[str]:
    """The argv for an ffmpeg-python output spec, with the global flags up front."""
    argv = ffmpeg.compile(stream_spec, cmd=FFMPEG, overwrite_output=True)
    return [argv[0], *GLOBAL_ARGS, *argv[1:]]


# --- progress (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressUpdate:
    """One ``-progress`` block: output time reached (None before the first packet),
    whether ffmpeg said it is done, and the first video output's frame count so far
    (None without video)."""

    out_time_s: float | None
    ended: bool
    frames: int | None = None


def _parse_out_time(block: dict[str, str]) -> float | None:
    # out_time_us is the documented key; ffmpeg also writes out_time_ms which, for
    # historical reasons, is in microseconds too. out_time is HH:MM:SS.micro.
    for key in ("out_time_us", "out_time_ms"):
        raw = block.get(key)
        if raw is not None and raw != "N/A":
            try:
                return max(0.0, int(raw) / 1_000_000)
            except ValueError:
                pass
    raw = block.get("out_time")
    if raw:
        match = re.fullmatch(r"(-?)(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", raw.strip())
        if match:
            sign, hours, minutes, seconds = match.groups()
            if sign:
                return 0.0
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


class ProgressParser:
    """Incremental parser of ffmpeg's ``-progress`` stream: feed it lines, it returns
    a ProgressUpdate at the end of each block (the ``progress=`` line)."""

    def __init__(self) -> None:
        self._block: dict[str, str] = {}
        self.last_time_s: float | None = None
        self.ended = False

    def feed(self, line: str) -> ProgressUpdate | None:
        line = line.strip()
        if not line or "=" not in line:
            return None
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key != "progress":
            self._block[key] = value
            return None
        out_time = _parse_out_time(self._block)
        raw_frames = self._block.get("frame", "")
        self._block = {}
        if out_time is not None:
            self.last_time_s = out_time
        self.ended = value == "end"
        return ProgressUpdate(out_time_s=out_time, ended=self.ended,
                              frames=int(raw_frames) if raw_frames.isdigit() else None)


def parse_progress_lines(lines: Iterable[str]) -> list[ProgressUpdate]:
    """Every complete block in ``lines``, in order."""
    parser = ProgressParser()
    updates = []
    for line in lines:
        update = parser.feed(line)
        if update is not None:
            updates.append(update)
    return updates


def progress_percent(update: ProgressUpdate, duration_s: float | None, previous: float = 0.0) -> float:
    """Percent done for one update; never goes backwards, 100 only at the end."""
    if update.ended:
        return 100.0
    if update.out_time_s is None or not duration_s or duration_s <= 0:
        return previous
    # Capped below 100: output time can overshoot the probed duration slightly,
    # and "done" is said by progress=end, not by the clock.
    return max(previous, min(99.9, 100.0 * update.out_time_s / duration_s))


# --- errors (pure) ---------------------------------------------------------------------


def is_invalid_media(stderr: str) -> bool:
    text = stderr.lower()
    return any(pattern in text for pattern in _INVALID_MEDIA_PATTERNS)


def _stderr_tail(stderr: str, limit: int = 2000) -> str:
    stderr = stderr.strip()
    return stderr[-limit:] if len(stderr) > limit else stderr


def failure(what: str, returncode: int, stderr: str) -> Exception:
    """The exception for a failed ffmpeg/ffprobe run."""
    tail = _stderr_tail(stderr)
    if is_invalid_media(stderr):
        return InvalidMedia(f"{what}: unreadable or invalid media: {tail or f'exit status {returncode}'}")
    return RuntimeError(f"{what} failed with exit status {returncode}: {tail}")


# --- processes (imperative shell) ------------------------------------------------------


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _CancelWatch:
    """Asks ``should_stop`` every CANCEL_POLL_S while ``proc`` runs and stops the process
    when it says so. On a thread, so a stalled ffmpeg (no output, no progress) is
    stopped too; ``fired`` tells the caller to raise JobCancelled."""

    def __init__(self, proc: subprocess.Popen, should_stop: Callable[[], bool] | None, grace_s: float,
                 interval_s: float = CANCEL_POLL_S):
        self.fired = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if should_stop is None:
            return

        def watch() -> None:
            while not self._done.wait(interval_s) and proc.poll() is None:
                try:
                    stop = should_stop()
                except Exception:  # a failed check (Redis blip) is not a cancel
                    continue
                if stop:
                    self.fired = True
                    _stop(proc, grace_s)
                    return

        self._thread = threading.Thread(target=watch, name="ffmpeg-cancel-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _drain(stream: IO[bytes], into: deque[str]) -> threading.Thread:
    # stderr is drained on a thread: a chatty ffmpeg must never block on a full pipe.
    def read() -> None:
        for line in stream:
            into.append(line.decode("utf-8", "replace") if isinstance(line, bytes) else line)

    thread = threading.Thread(target=read, name="ffmpeg-stderr", daemon=True)
    thread.start()
    return thread


@traced("ffmpeg")
def run_ffmpeg(
    argv: Sequence[str],
    *,
    duration_s: float | None = None,
    on_progress: Callable[[float], None] | None = None,
    what: str = "ffmpeg",
    grace_s: float = TERMINATE_GRACE_S,
    should_stop: Callable[[], bool] | None = None,
) -> ProgressUpdate | None:
    """Run an ffmpeg command to the end, calling ``on_progress(percent)`` for every
    progress block; returns the last block (its ``frames`` is what the first video
    output got), or None if ffmpeg wrote none.

    If ``on_progress`` raises (JobCancelled, typically) — or anything else
    interrupts the wait, such as Celery's soft time limit — ffmpeg is stopped
    (SIGTERM, then SIGKILL after ``grace_s``) and the exception propagates. When
    ``should_stop()`` turns true, ffmpeg is stopped and JobCancelled raised.
    A non-zero exit raises InvalidMedia when stderr says the input is unreadable,
    otherwise RuntimeError with the end of stderr.
    """
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1,
    )
    stderr_lines: deque[str] = deque(maxlen=200)
    reader = _drain(proc.stderr, stderr_lines)
    watch = _CancelWatch(proc, should_stop, grace_s)
    parser = ProgressParser()
    percent, last = 0.0, None
    try:
        for line in proc.stdout:
            update = parser.feed(line)
            if update is None:
                continue
            last = update
            percent = progress_percent(update, duration_s, percent)
            if on_progress is not None:
                on_progress(percent)
        returncode = proc.wait()
    except BaseException:
        _stop(proc, grace_s)
        raise
    finally:
        watch.close()
        proc.stdout.close()
        reader.join(timeout=5)
        proc.stderr.close()
    if watch.fired:
        raise JobCancelled(f"{what}: stopped, the job was cancelled")
    if returncode != 0:
        raise failure(what, returncode, "".join(stderr_lines))
    return last


@contextmanager
def stream_ffmpeg(
    argv: Sequence[str],
    *,
    what: str = "ffmpeg",
    grace_s: float = TERMINATE_GRACE_S,
    should_stop: Callable[[], bool] | None = None,
    failure_is_invalid_media: bool = False,
) -> Iterator[IO[bytes]]:
    """Run an ffmpeg command whose stdout is its output (raw frames, PCM) and hand
    that stdout to the caller, who reads it to the end inside the ``with``.

    Leaving the block by an exception stops ffmpeg. ``should_stop`` is polled as in
    ``run_ffmpeg``: when it turns true ffmpeg is stopped (the caller's read ends)
    and JobCancelled is raised at the end of the block. A non-zero exit raises as
    in ``run_ffmpeg``, or always InvalidMedia with ``failure_is_invalid_media``.
    """
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr_lines: deque[str] = deque(maxlen=200)
    reader = _drain(proc.stderr, stderr_lines)
    watch = _CancelWatch(proc, should_stop, grace_s)
    try:
        yield proc.stdout
        returncode = proc.wait()
    except BaseException:
        _stop(proc, grace_s)
        raise
    finally:
        watch.close()
        proc.stdout.close()
        reader.join(timeout=5)
        proc.stderr.close()
    if watch.fired:
        raise JobCancelled(f"{what}: stopped, the job was cancelled")
    if returncode != 0:
        stderr = "".join(stderr_lines)
        if failure_is_invalid_media:
            raise InvalidMedia(f"{what}: unreadable or invalid media: {_stderr_tail(stderr) or f'exit status {returncode}'}")
        raise failure(what, returncode, stderr)


# --- concat of our own chunks --------------------------------------------------------------

# The concat demuxer is never allowed on an uploaded file. chunk_concat needs it for a
# list that the worker itself writes, naming copies of the chunks (each probed with
# the ordinary whitelists first) in the list's own folder: ``-safe 1`` refuses
# absolute paths, protocols and "..", the protocol whitelist stays "file", and the
# files it opens may only be Matroska (concat copies its whitelists to them).
CONCAT_CHILD_DEMUXERS: tuple[str, ...] = ("matroska",)
_CONCAT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def concat_list(names: Sequence[str]) -> str:
    """An ffconcat list of plain file names (beside the list), in order."""
    for name in names:
        if not _CONCAT_NAME.match(name) or ".." in name:
            raise ValueError(f"not a plain file name for a concat list: {name!r}")
    return "ffconcat version 1.0\n" + "".join(f"file {name}\n" for name in names)


def concat_input_args(list_path: Path | str) -> list[str]:
    """``-i`` for a concat list this worker wrote (see CONCAT_CHILD_DEMUXERS)."""
    return ["-f", "concat", "-safe", "1", "-protocol_whitelist", PROTOCOL_WHITELIST,
            "-format_whitelist", ",".join(("concat", *CONCAT_CHILD_DEMUXERS)), "-i", file_url(list_path)]


def probe_packets_argv(path: Path | str, stream_index: int) -> list[str]:
    options = [item for name, value in input_kwargs().items() for item in (f"-{name}", value)]
    return [FFPROBE, "-v", "error", *options, "-select_streams", str(stream_index),
            "-show_entries", "packet=pts_time,dts_time,flags", "-of", "csv=p=0", file_url(path)]


def parse_packet_lines(text: str) -> list[tuple[float, bool]]:
    """(presentation time, is keyframe) per packet from ``probe_packets_argv``'s CSV; the
    decode time stands in where a packet has no presentation time."""
    packets = []
    for line in text.splitlines():
        fields = line.strip().split(",")
        if len(fields) < 3:
            continue
        pts, dts, flags = fields[0], fields[1], fields[2]
        raw = pts if pts not in ("", "N/A") else dts
        if raw in ("", "N/A"):
            continue
        packets.append((float(raw), "K" in flags))
    return packets


@traced("ffprobe")
def probe_packets(path: Path | str, stream_index: int, *, should_stop: Callable[[], bool] | None = None,
                  grace_s: float = TERMINATE_GRACE_S) -> list[tuple[float, bool]]:
    """Every packet of one stream as (time, is keyframe), in file order; no decoding."""
    proc = subprocess.Popen(probe_packets_argv(path, stream_index), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watch = _CancelWatch(proc, should_stop, grace_s)
    try:
        out, err = proc.communicate()
    except BaseException:
        _stop(proc, grace_s)
        raise
    finally:
        watch.close()
    if watch.fired:
        raise JobCancelled("ffprobe: stopped, the job was cancelled")
    if proc.returncode != 0:
        stderr = err.decode("utf-8", "replace")
        raise InvalidMedia(f"cannot read the packets of {Path(path).name!r}: {_stderr_tail(stderr) or 'ffprobe failed'}")
    return parse_packet_lines(out.decode("utf-8", "replace"))


def probe_argv(path: Path | str) -> list[str]:
    options = [item for name, value in input_kwargs().items() for item in (f"-{name}", value)]
    return [FFPROBE, "-v", "error", *options, "-show_format", "-show_streams", "-of", "json", file_url(path)]


@traced("ffprobe")
def probe(path: Path | str, *, should_stop: Callable[[], bool] | None = None,
          grace_s: float = TERMINATE_GRACE_S) -> dict:
    """ffprobe's JSON (format and streams) for a local file, with the same input
    whitelists as ffmpeg. Any ffprobe failure means the media is unusable: InvalidMedia."""
    proc = subprocess.Popen(probe_argv(path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    watch = _CancelWatch(proc, should_stop, grace_s)
    try:
        out, err = proc.communicate()
    except BaseException:
        _stop(proc, grace_s)
        raise
    finally:
        watch.close()
    if watch.fired:
        raise JobCancelled("ffprobe: stopped, the job was cancelled")
    name = Path(path).name
    if proc.returncode != 0:
        stderr = err.decode("utf-8", "replace")
        raise InvalidMedia(f"cannot read {name!r} as media: {_stderr_tail(stderr) or 'ffprobe failed'}")
    try:
        return json.loads(out)
    except ValueError as exc:  # ffprobe printed something that is not JSON
        raise InvalidMedia(f"cannot read {name!r} as media: {exc}") from None
