"""When a transcode runs chunked, and as which workflow (pure).

A ``transcode`` with a ``chunking`` object always runs chunked. Without one, the
setting ``RF_CHUNKING_MIN_DURATION_S`` (off by default) routes it through the same
workflow with that duration as the split's ``min_duration_s``: the API does not read
media (its image has no ffmpeg, and an http input would be fetched twice), so the
duration is only known to the ``chunk_split`` job, which writes one chunk for a
shorter source. The workflow is the ``chunked-transcode`` template of the one registry.
"""

from __future__ import annotations

from renderfarm.core.params import Chunking, TranscodeParams
from renderfarm.core.workflow_templates import ChunkedTranscodeParams, get_template
from renderfarm.core.workflows import WorkflowSpec

TEMPLATE = "chunked-transcode"


def chunking_of(params: TranscodeParams, min_duration_s: float | None, chunk_duration_s: float) -> Chunking | None:
    """The chunking a submitted transcode gets; None: a single-pass job."""
    if params.chunking is False:
        return None  # the client asked for one pass
    if params.chunking is not None:
        return params.chunking
    if min_duration_s is None:
        return None
    return Chunking(chunk_duration_s=chunk_duration_s, min_duration_s=min_duration_s)


def chunked_spec(input: str, params: TranscodeParams, chunking: Chunking, *, priority: str) -> WorkflowSpec:
    template_params = ChunkedTranscodeParams(renditions=params.renditions, chunking=chunking)
    return get_template(TEMPLATE).build(input, template_params, priority=priority)
