"""Real Prometheus and Alertmanager (Debian's binaries) for live monitoring tests,
each on a free loopback port with its own temporary folder, and a webhook receiver
that records what Alertmanager posts."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

from renderfarm.monitoring.stack import alertmanager_binary, alertmanager_config, prometheus_config
from tests.support.procs import ServiceProcess, free_port, wait_for

ALERTMANAGER = alertmanager_binary()
PROMETHEUS = shutil.which("prometheus")


class AlertReceiver:
    """Alertmanager's webhook receiver: keeps every alert it is sent."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        received = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.extend(body.get("alerts", []))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def names(self, status: str = "firing") -> set[str]:
        return {a["labels"]["alertname"] for a in list(self.alerts) if a.get("status") == status}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_alertmanager(workdir: Path, receiver_url: str) -> tuple[ServiceProcess, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(receiver_url)))
    port = free_port()
    proc = ServiceProcess([ALERTMANAGER, f"--config.file={workdir / 'alertmanager.yml'}",
                           f"--storage.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                           "--cluster.listen-address="], {}, workdir / "alertmanager.log").start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/-/ready", timeout=1).status_code == 200 or not proc.alive(), 30,
             what="alertmanager")
    if not proc.alive():
        raise RuntimeError(f"alertmanager exited:\n{proc.log()[-3000:]}")
    return proc, base


def start_prometheus(workdir: Path, targets: dict[str, list[str]], rules: str, alertmanager: str,
                     interval: str = "1s") -> tuple[ServiceProcess, str]:
    """``targets``: job name -> host:port list scraped at ``interval``; ``rules``: a rule file's text."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rules.yaml").write_text(rules)
    config = prometheus_config(targets, str(workdir / "rules.yaml"), alertmanager.removeprefix("http://"), interval)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = ServiceProcess([PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}",
                           f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                          {}, workdir / "prometheus.log").start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/-/ready", timeout=1).status_code == 200 or not proc.alive(), 60,
             what="prometheus")
    if not proc.alive():
        raise RuntimeError(f"prometheus exited:\n{proc.log()[-3000:]}")
    return proc, base


def query(prometheus: str, expr: str) -> list[dict]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    if body.get("status") != "success":
        raise AssertionError(f"query failed: {expr}\n{body}")
    return body["data"]["result"]


def api_samples(store) -> dict[tuple[str, tuple], float]:
    """Every sample the API's /metrics would serve now: (name, sorted labels) -> value."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from renderfarm.api.metrics import ApiMetrics

    text = generate_latest(ApiMetrics(store).registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
