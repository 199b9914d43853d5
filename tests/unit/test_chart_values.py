"""The chart's inputs that need no helm: the pool list comes from the registry, every value is documented."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from renderfarm.core.kinds import KINDS
from renderfarm.core.pool_catalog import pool_catalog, render
from renderfarm.core.queues import WorkloadClass

CHART = Path(__file__).resolve().parents[2] / "helm" / "renderfarm"


def test_chart_pools_file_is_the_registry():
    # Fails when a pool, queue or kind is added to renderfarm.core without
    # regenerating it: python -m renderfarm.core.pool_catalog > helm/renderfarm/files/pools.json
    assert (CHART / "files" / "pools.json").read_text() == render()


def test_catalog_has_every_pool_and_kind_once():
    catalog = pool_catalog()
    assert [pool["name"] for pool in catalog] == [w.value for w in WorkloadClass]
    assert sorted(kind for pool in catalog for kind in pool["kinds"]) == sorted(KINDS)
    assert {pool["name"]: pool["gpu"] for pool in catalog} == {"cpu": False, "gpu-transcribe": True, "gpu-vision": True}


def _schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


def test_default_values_satisfy_the_schema():
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), _schema())


def _leaves(values: dict, schema: dict, path: str = ""):
    """Every value with the schema node that documents it."""
    for key, value in values.items():
        node = (schema.get("properties") or {}).get(key)
        if node is None and isinstance(schema.get("additionalProperties"), dict):
            node = schema["additionalProperties"]
        yield f"{path}{key}", value, node
        if isinstance(value, dict) and node is not None and node.get("properties"):
            yield from _leaves(value, node, f"{path}{key}.")


def test_every_value_is_documented_in_the_schema():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [path for path, _, node in _leaves(values, _schema()) if node is None or not node.get("description")]
    assert not missing, f"values without a documented schema entry: {missing}"


def test_schema_refuses_typos_and_bad_types():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for bad in ({"workers": {**values["workers"], "defualts": {}}},
                {"images": {**values["images"], "pullPolicy": "Sometimes"}},
                {"apiKeys": {"hashes": ["not-a-digest"], "existingSecret": ""}}):
        try:
            jsonschema.validate({**values, **bad}, _schema())
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {bad}")


def test_crd_queue_pattern_admits_exactly_the_registry_queues():
    import re

    from renderfarm.core.queues import Priority, all_queues

    crd = yaml.safe_load((CHART / "crds" / "workerpool.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    pattern = re.compile(spec["properties"]["queues"]["items"]["properties"]["name"]["pattern"])
    assert all(pattern.match(queue) for queue in all_queues())
    classes, priorities = re.match(r"^\^\(([^)]*)\)\\\.\(([^)]*)\)\$$", pattern.pattern).groups()
    assert sorted(classes.split("|")) == sorted(w.value for w in WorkloadClass)
    assert sorted(priorities.split("|")) == sorted(p.value for p in Priority)
