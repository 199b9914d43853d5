"""The Helm chart for tests: render it with the project's pinned helm (helm/render.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "renderfarm"
CRD_FILE = CHART / "crds" / "workerpool.yaml"

_spec = importlib.util.spec_from_file_location("renderfarm_helm_render", REPO_ROOT / "helm" / "render.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

helm_template = render.helm_template
documents = render.documents
plain_manifests = render.plain_manifests


def render_docs(helm: Path, *args: str, namespace: str = render.NAMESPACE, release: str = render.RELEASE) -> list[dict]:
    return documents(helm_template(helm, *args, namespace=namespace, release=release))


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc.get("kind") == kind}
