"""The head of a Matroska file, read in Python (pure): its doc type, duration and
tracks, from the EBML elements before the first cluster.

The chunked-transcode steps pass Matroska chunks between them. Checking a chunk
with this costs microseconds, where one ffprobe process costs ~80 ms of CPU to
start; with a dozen chunks per workflow that was ~5 % of the whole encode.
Anything this reader does not understand is a ``NotMatroska``: the caller falls
back to ffprobe or refuses the file, never guesses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Element ids (with their length-marker bits, as the Matroska spec writes them).
EBML = 0x1A45DFA3
DOC_TYPE = 0x4282
SEGMENT = 0x18538067
INFO = 0x1549A966
TIMESTAMP_SCALE = 0x2AD7B1
DURATION = 0x4489
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_TYPE = 0x83
CODEC_ID = 0x86
VIDEO = 0xE0
PIXEL_WIDTH = 0xB0
PIXEL_HEIGHT = 0xBA
CLUSTER = 0x1F43B675

TRACK_TYPES = {1: "video", 2: "audio", 17: "subtitle"}
# CodecID -> the name ffprobe gives (and chunk_encode's video_codec).
VIDEO_CODECS = {"V_MPEG4/ISO/AVC": "h264", "V_MPEGH/ISO/HEVC": "hevc"}
# Enough for the header of any file ffmpeg writes (seek head, void, info, tracks, tags).
HEAD_BYTES = 256 * 1024


class NotMatroska(ValueError):
    """The bytes are not the head of a Matroska file this reader can vouch for."""


@dataclass(frozen=True)
class Track:
    type: str  # video, audio, subtitle or other
    codec_id: str
    width: int | None = None
    height: int | None = None

    @property
    def codec(self) -> str | None:
        return VIDEO_CODECS.get(self.codec_id)


@dataclass(frozen=True)
class MatroskaHead:
    doc_type: str
    duration_s: float | None
    tracks: list[Track] = field(default_factory=list)


def _vint(data: bytes, at: int, *, keep_marker: bool) -> tuple[int, int, bool]:
    """(value, next offset, all value bits set) of the variable-length integer at ``at``."""
    if at >= len(data):
        raise NotMatroska("truncated element")
    first = data[at]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8 or at + length > len(data):
        raise NotMatroska("bad variable-length integer")
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[at + 1:at + length]:
        value = (value << 8) | byte
    unknown = not keep_marker and value == (1 << (7 * length)) - 1
    return value, at + length, unknown


def _elements(data: bytes, start: int, end: int):
    """(id, payload start, payload end) of each element in data[start:end]; an element
    of unknown size (live-written segment) runs to ``end``."""
    at = start
    while at < end:
        element_id, at, _ = _vint(data, at, keep_marker=True)
        size, at, unknown = _vint(data, at, keep_marker=False)
        stop = end if unknown else at + size
        yield element_id, at, min(stop, end), stop > end
        at = stop


def _uint(payload: bytes) -> int:
    return int.from_bytes(payload, "big") if payload else 0


def _float(payload: bytes) -> float:
    if len(payload) == 4:
        return struct.unpack(">f", payload)[0]
    if len(payload) == 8:
        return struct.unpack(">d", payload)[0]
    raise NotMatroska("bad float element")


def _track(data: bytes, start: int, end: int) -> Track:
    kind, codec, width, height = 0, "", None, None
    for element_id, a, b, _ in _elements(data, start, end):
        if element_id == TRACK_TYPE:
            kind = _uint(data[a:b])
        elif element_id == CODEC_ID:
            codec = data[a:b].rstrip(b"\0").decode("ascii", "replace")
        elif element_id == VIDEO:
            for child, c, d, _ in _elements(data, a, b):
                if child == PIXEL_WIDTH:
                    width = _uint(data[c:d])
                elif child == PIXEL_HEIGHT:
                    height = _uint(data[c:d])
    return Track(type=TRACK_TYPES.get(kind, "other"), codec_id=codec, width=width, height=height)


def read_head(data: bytes) -> MatroskaHead:
    """The doc type, duration and tracks of a Matroska (or WebM) file from its first
    bytes (``HEAD_BYTES`` is enough for what ffmpeg writes). Raises NotMatroska when
    the EBML header is missing or the tracks are not all there before a cluster."""
    if data[:4] != EBML.to_bytes(4, "big"):
        raise NotMatroska("no EBML header")
    doc_type, segment = "", None
    for element_id, a, b, cut in _elements(data, 0, len(data)):
        if element_id == EBML and not cut:
            for child, c, d, _ in _elements(data, a, b):
                if child == DOC_TYPE:
                    doc_type = data[c:d].rstrip(b"\0").decode("ascii", "replace")
        elif element_id == SEGMENT:
            segment = (a, b)
            break
    if doc_type not in ("matroska", "webm") or segment is None:
        raise NotMatroska(f"doc type {doc_type!r}" if segment else "no segment")
    scale, duration, tracks, seen_tracks = 1_000_000, None, [], False
    for element_id, a, b, cut in _elements(data, *segment):
        if element_id == CLUSTER:
            break
        if cut:
            raise NotMatroska("header longer than the bytes read")
        if element_id == INFO:
            for child, c, d, _ in _elements(data, a, b):
                if child == TIMESTAMP_SCALE:
                    scale = _uint(data[c:d]) or scale
                elif child == DURATION:
                    duration = _float(data[c:d])
        elif element_id == TRACKS:
            seen_tracks = True
            tracks = [_track(data, c, d) for child, c, d, _ in _elements(data, a, b) if child == TRACK_ENTRY]
    if not seen_tracks:
        raise NotMatroska("no tracks before the first cluster")
    return MatroskaHead(doc_type=doc_type, duration_s=None if duration is None else duration * scale / 1e9,
                        tracks=tracks)


def read_file_head(path) -> MatroskaHead:
    with open(path, "rb") as handle:
        return read_head(handle.read(HEAD_BYTES))
