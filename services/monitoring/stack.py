"""Configuration of a plain Prometheus and Alertmanager for a farm outside
Kubernetes (``renderfarm local --monitoring`` and the live tests): pure functions
from ports and paths to config dicts, written as YAML by the caller."""

from __future__ import annotations

import shutil


def alertmanager_binary() -> str | None:
    """Debian names it prometheus-alertmanager; upstream archives, alertmanager."""
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def prometheus_config(targets: dict[str, list[str]], rules_file: str, alertmanager: str,
                      interval: str = "5s") -> dict:
    """``targets``: job name -> ``host:port`` list; ``alertmanager``: ``host:port``."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [rules_file],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": hosts}]}
                           for job, hosts in targets.items()],
    }


def alertmanager_config(webhook_url: str | None = None) -> dict:
    """One route; with ``webhook_url`` every alert (and its resolution) is posted there,
    without it alerts are only shown in Alertmanager's UI and API."""
    receiver: dict = {"name": "farm"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    return {
        "route": {"receiver": "farm", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [receiver],
    }
