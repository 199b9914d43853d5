"""Media references in a job's params (the report's probe/transcript/shots, the chunk
list of ``chunk_concat``): the URIs of earlier jobs' outputs, brought onto local disk
under the same rules as a job's input.

A ``file:`` reference may point under the allowed input roots or under the farm's
own outputs folder (where earlier steps published); symlinks are followed before
that check. Anything else (http(s), and whatever schemes the input edge learns)
goes through ``fetch.local_input`` with its address rules and size limit.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin

from renderfarm.core.inputs import InputError, confine_path, file_path, input_scheme
from renderfarm.core.settings import Settings
from renderfarm.worker.errors import InvalidInput
from renderfarm.worker.fetch import local_input, readable_roots

# Names a reference may use to reach a file beside it (keyframes beside shots.json).
_SIBLING_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


def local_reference(uri: str, settings: Settings, work_dir: Path, what: str = "reference", *,
                    tenant: str = "default", should_stop: Callable[[], bool] = lambda: False) -> Path:
    """The local file a reference names (downloaded into ``work_dir`` when remote, with
    the job's tenant: an ``s3://`` output is readable by its own tenant only)."""
    if input_scheme(uri) != "file":
        # A folder per reference: outputs of the same name (every encoded chunk is
        # encoded.mkv) would otherwise download onto one path, over each other.
        folder = Path(tempfile.mkdtemp(prefix="ref-", dir=work_dir))
        return local_input(uri, settings, folder, tenant=tenant, should_stop=should_stop)
    try:
        path = confine_path(file_path(uri), readable_roots(settings))
    except InputError as exc:
        raise InvalidInput(f"{what}: {exc}") from None
    if not path.is_file():
        raise InvalidInput(f"{what}: {str(file_path(uri))!r} does not exist")
    return path


def read_json_reference(uri: str, settings: Settings, work_dir: Path, what: str, max_bytes: int = 64 << 20, *,
                        tenant: str = "default", should_stop: Callable[[], bool] = lambda: False) -> Any:
    path = local_reference(uri, settings, work_dir, what, tenant=tenant, should_stop=should_stop)
    if path.stat().st_size > max_bytes:
        raise InvalidInput(f"{what}: {path.name} is larger than {max_bytes} bytes")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{what}: {path.name} is not a JSON document: {exc}") from None


def sibling_reference(uri: str, name: str) -> str:
    """The reference of file ``name`` in the same folder as ``uri`` (a bare file name
    only: a document cannot send the worker elsewhere with ``../`` or a scheme)."""
    if not _SIBLING_NAME.match(name) or ".." in name:
        raise InvalidInput(f"file name {name!r} is not a plain file name")
    if uri.startswith("/"):
        return str(Path(uri).parent / name)
    return urljoin(uri, name)
