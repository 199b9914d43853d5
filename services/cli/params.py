"""Turning command-line text into a submit body: pure functions, no I/O.

``--param k=v``       a JSON value when it parses (``240``, ``true``, ``[1,2]``), text otherwise;
                      dotted keys nest (``a.b=1`` gives ``{"a": {"b": 1}}``).
``--params-json``     a JSON object, the base the ``--param`` values are merged into.
``--rendition``       ``height=240,crf=23`` (or ``240`` / ``240p`` for just a height),
                      appended to ``params.renditions``.
``--label k=v``       plain text values.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any


class ParamError(ValueError):
    """Command-line text that cannot be turned into parameters."""


def parse_value(text: str) -> Any:
    """A JSON scalar, array or object when ``text`` parses as one; the text itself otherwise."""
    stripped = text.strip()
    if not stripped:
        return text
    try:
        return json.loads(stripped)
    except ValueError:
        return text


def split_assignment(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamError(f"expected KEY=VALUE, got {item!r}")
    return key, value


def set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "a.b", 1)`` sets ``d["a"]["b"] = 1``, creating ``d["a"]`` if needed."""
    parts = key.split(".")
    if any(not part for part in parts):
        raise ParamError(f"empty segment in key {key!r}")
    node = target
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ParamError(f"{'.'.join(parts[:depth + 1])!r} is already set to a value, cannot set {key!r}")
        node = child
    leaf = parts[-1]
    if isinstance(node.get(leaf), dict) and not isinstance(value, dict):
        raise ParamError(f"{key!r} already holds nested keys, cannot set it to a value")
    if isinstance(node.get(leaf), dict) and isinstance(value, dict):
        deep_merge(node[leaf], value)
    else:
        node[leaf] = value


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Merge ``overlay`` into ``base`` (in place; nested dicts merge, anything else replaces)."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["height=240", "times=[1,2]", "a.b=x"]`` -> ``{"height": 240, "times": [1, 2], "a": {"b": "x"}}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, value = split_assignment(item)
        set_dotted(out, key, parse_value(value))
    return out


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets, braces and quotes: ``a=1,b=[1,2]`` -> ``["a=1", "b=[1,2]"]``."""
    parts: list[str] = []
    depth = 0
    quote = ""
    current: list[str] = []
    escaped = False
    for char in text:
        if quote:
            current.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
            continue
        if char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(0, depth - 1)
        elif char == sep and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


_HEIGHT_ONLY = re.compile(r"^(\d+)p?$")


def parse_rendition(text: str) -> dict[str, Any]:
    """``"height=240,crf=23"`` -> ``{"height": 240, "crf": 23}``; ``"720p"`` / ``"720"`` -> ``{"height": 720}``."""
    text = text.strip()
    if not text:
        raise ParamError("empty rendition")
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ParamError(f"rendition is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ParamError("a JSON rendition must be an object")
        return value
    match = _HEIGHT_ONLY.match(text)
    if match:
        return {"height": int(match.group(1))}
    return parse_params(split_top_level(text))


def parse_labels(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, value = split_assignment(item)
        out[key] = value
    return out


def build_params(param_items: list[str] | None = None, params_json: str | None = None,
                 renditions: list[str] | None = None) -> dict[str, Any]:
    """The ``params`` object: ``--params-json`` first, ``--param`` merged over it, ``--rendition`` appended."""
    params: dict[str, Any] = {}
    if params_json:
        try:
            base = json.loads(params_json)
        except ValueError as exc:
            raise ParamError(f"--params-json is not valid JSON: {exc}") from None
        if not isinstance(base, dict):
            raise ParamError("--params-json must be a JSON object")
        params = base
    deep_merge(params, parse_params(param_items))
    if renditions:
        existing = params.get("renditions", [])
        if not isinstance(existing, list):
            raise ParamError("params.renditions is set to something other than a list")
        params["renditions"] = [*existing, *(parse_rendition(text) for text in renditions)]
    return params


_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def input_uri(text: str, cwd: str | None = None) -> str:
    """A URL stays as given; a local path becomes an absolute ``file://`` URI."""
    text = text.strip()
    if not text:
        raise ParamError("input is empty")
    if _URL_SCHEME.match(text):
        return text
    path = os.path.expanduser(text)
    if not os.path.isabs(path):
        path = os.path.join(cwd or os.getcwd(), path)
    # normpath folds "a/../b" (the API refuses ".." in input paths); symlinks are
    # left for the server to resolve against its allowed roots.
    return Path(os.path.normpath(path)).as_uri()
