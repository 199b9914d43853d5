"""Lint of the Dockerfiles (no hadolint here): the rules our images promise.

- the base is a build argument (BASE_IMAGE) with a pinned, non-`latest` default,
  and every FROM uses it or an earlier stage;
- the final stage runs as a numeric, non-root USER;
- no `latest` tag anywhere; apt installs take --no-install-recommends and clean their lists;
- ENTRYPOINT in exec form (signals reach the process: warm shutdown on SIGTERM);
- Dockerfile.worker selects its extras with VARIANT (cpu: no torch) and rejects anything else.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(ROOT.glob("Dockerfile*"))


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(instrs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instrs:
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def test_there_are_the_three_dockerfiles() -> None:
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile.api", "Dockerfile.worker", "Dockerfile.redis"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_is_a_pinned_build_argument(path: Path) -> None:
    instrs = instructions(path)
    first = instrs[0]
    assert first[0] == "ARG", f"{path.name}: the first instruction must be ARG BASE_IMAGE=..."
    name, _, default = first[1].partition("=")
    assert name == "BASE_IMAGE", path.name
    assert re.fullmatch(r"[a-z0-9./-]+:[A-Za-z0-9._-]+(@sha256:[0-9a-f]{64})?", default), \
        f"{path.name}: BASE_IMAGE default {default!r} needs an explicit tag"
    assert not default.endswith(":latest")
    seen_stages: set[str] = set()
    for word, args in instrs:
        if word != "FROM":
            continue
        parts = args.split()
        assert parts[0] in ("${BASE_IMAGE}", "$BASE_IMAGE") or parts[0] in seen_stages, \
            f"{path.name}: FROM {parts[0]} is neither the BASE_IMAGE argument nor an earlier stage"
        if len(parts) == 3 and parts[1].upper() == "AS":
            seen_stages.add(parts[2])


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_a_numeric_non_root_user(path: Path) -> None:
    final = stages(instructions(path))[-1]
    users = [args for word, args in final if word == "USER"]
    assert users, f"{path.name}: the final stage sets no USER (it would run as root)"
    user = users[-1]
    uid, _, gid = user.partition(":")
    # numeric, so that Kubernetes' runAsNonRoot can check it
    assert uid.isdigit() and int(uid) != 0, f"{path.name}: USER {user}"
    assert not gid or (gid.isdigit() and int(gid) != 0), f"{path.name}: USER {user}"
    last_user_at = max(i for i, (w, _) in enumerate(final) if w == "USER")
    assert not [w for w, _ in final[last_user_at:] if w == "RUN"], f"{path.name}: RUN after the last USER"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_latest_tags_and_clean_apt(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r":latest\b", text), f"{path.name} mentions a :latest tag"
    for word, args in instructions(path):
        if word == "RUN" and "apt-get install" in args:
            assert "--no-install-recommends" in args, f"{path.name}: {args}"
            assert "rm -rf /var/lib/apt/lists/*" in args, f"{path.name}: apt lists stay in the layer"
            # packages pinned to a Debian version (a minor series at least)
            pkgs = args.split("apt-get install", 1)[1].split("&&")[0].split()
            pkgs = [p for p in pkgs if not p.startswith("-")]
            assert pkgs and all("=" in p for p in pkgs), f"{path.name}: unpinned apt packages {pkgs}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_is_exec_form(path: Path) -> None:
    entry = [args for word, args in stages(instructions(path))[-1] if word == "ENTRYPOINT"]
    assert entry and entry[-1].startswith("["), f"{path.name}: ENTRYPOINT must be a JSON array"


def test_worker_variant_selects_the_extras() -> None:
    text = (ROOT / "Dockerfile.worker").read_text()
    build = stages(instructions(ROOT / "Dockerfile.worker"))[0]
    assert ("ARG", "VARIANT=gpu") in build
    run = next(args for word, args in build if word == "RUN" and "pip install" in args)
    assert re.search(r"cpu\) extras=\"\"", run), "VARIANT=cpu must install no extra (no torch)"
    assert re.search(r"gpu\) extras=\"\[gpu\]\"", run)
    assert "exit 1" in run, "an unknown VARIANT must fail the build"
    assert '".${extras}"' in run
    assert "ffmpeg" in text


def test_api_image_carries_the_operator() -> None:
    build = stages(instructions(ROOT / "Dockerfile.api"))[0]
    run = next(args for word, args in build if word == "RUN" and "pip install" in args)
    assert "'.[operator]'" in run, "the operator Deployment runs `python -m renderfarm.operator` from this image"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_add_and_python_images_use_the_test_pins(path: Path) -> None:
    instrs = instructions(path)
    assert not [args for word, args in instrs if word == "ADD"], f"{path.name}: ADD (use COPY)"
    if any(word == "RUN" and "pip install" in args for word, args in instrs):
        # the same pins as the tests
        assert any(word == "RUN" and "pip install -c constraints.txt" in args for word, args in instrs)
