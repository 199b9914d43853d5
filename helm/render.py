"""Render the chart with the project's pinned helm; write or check the plain manifests in k8s/.

    python helm/render.py --write    # regenerate k8s/renderfarm.yaml (make manifests)
    python helm/render.py --check    # exit 1 when k8s/ differs from the chart

k8s/renderfarm.yaml is `helm template` of helm/renderfarm with default values
(release "renderfarm", namespace "renderfarm"), without the helm test and without
the Redis password Secret, which the chart fills with a random password: users
without Helm create that Secret themselves (see k8s/README.md). The CRD stays in
the chart's crds/ (one copy): apply it first.
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART = REPO_ROOT / "helm" / "renderfarm"
PLAIN = REPO_ROOT / "k8s" / "renderfarm.yaml"
RELEASE = "renderfarm"
NAMESPACE = "renderfarm"
GENERATED_SECRET = f"{RELEASE}-redis-auth"

HEADER = f"""\
# renderfarm, rendered from helm/renderfarm with its default values (release
# "{RELEASE}", namespace "{NAMESPACE}") for clusters without Helm. Do not edit:
# `make manifests` regenerates it and a test fails when it differs from the chart.
# Before applying it (see k8s/README.md):
#   kubectl apply --server-side -f helm/renderfarm/crds/
#   kubectl create namespace {NAMESPACE}
#   kubectl -n {NAMESPACE} create secret generic {GENERATED_SECRET} --from-literal=password="$(openssl rand -hex 24)"
#   kubectl -n {NAMESPACE} apply -f k8s/renderfarm.yaml
"""


def helm_binary() -> Path:
    """The project's pinned helm (built into the tool cache when missing); never one from PATH."""
    sys.path.insert(0, str(REPO_ROOT / "k8s" / "dev"))
    from localkube import ensure_tools

    return ensure_tools() / "helm"


def helm_template(helm: Path, *args: str, release: str = RELEASE, namespace: str = NAMESPACE,
                  chart: Path = CHART) -> str:
    proc = subprocess.run([str(helm), "template", release, str(chart), "--namespace", namespace, *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"helm template failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def plain_manifests(helm: Path) -> str:
    rendered = helm_template(helm, "--skip-tests")
    kept = []
    for chunk in rendered.split("\n---\n"):
        doc = yaml.safe_load(chunk)
        if not doc:
            continue
        if doc.get("kind") == "Secret" and doc["metadata"]["name"] == GENERATED_SECRET:
            continue  # random per render; created by the user
        kept.append(chunk.strip("\n").removeprefix("---\n"))
    return HEADER + "---\n" + "\n---\n".join(kept) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    expected = plain_manifests(helm_binary())
    if args.write:
        PLAIN.write_text(expected)
        print(f"wrote {PLAIN.relative_to(REPO_ROOT)}")
        return 0
    actual = PLAIN.read_text() if PLAIN.exists() else ""
    if actual == expected:
        return 0
    sys.stdout.writelines(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                               str(PLAIN.relative_to(REPO_ROOT)), "helm template"))
    print("k8s/ differs from the chart: run `make manifests`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
