"""The worker pools as the Helm chart sees them, derived from the one registry.

``python -m renderfarm.core.pool_catalog`` prints the JSON the chart reads
(helm/renderfarm/files/pools.json); tests/unit/test_chart_pools.py fails when the
file and the registry differ, so the chart never keeps a list of its own.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from renderfarm.core.kinds import kinds_for
from renderfarm.core.queues import WorkloadClass, pool_queues


def pool_catalog() -> list[dict[str, Any]]:
    """One entry per workload class: its queues (highest priority first), GPU need and kinds."""
    catalog = []
    for workload in WorkloadClass:
        kinds = kinds_for(workload)
        catalog.append({
            "name": workload.value,
            "gpu": workload.needs_gpu,
            "queues": pool_queues(workload),
            "kinds": [kind.name for kind in kinds],
        })
    return catalog


def render() -> str:
    return json.dumps(pool_catalog(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
