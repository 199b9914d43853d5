"""Alert rules and Grafana dashboards of the farm, as code (DESIGN.md §7).

``python -m renderfarm.monitoring.generate --write`` renders them into the chart
(helm/renderfarm/files/) and into plain files under monitoring/; a test fails when
the rendered files are stale.
"""
