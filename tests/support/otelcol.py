"""The OpenTelemetry Collector as the tracing tests' OTLP receiver: the core
Collector with the OTLP receiver and the file exporter, built from Go modules by
tests/otelcol/build.sh (`make otelcol`) into the tool cache. It listens for
OTLP/HTTP on a free loopback port and writes what it receives as OTLP JSON lines,
which ``spans`` reads back."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.support.procs import REPO_ROOT, ServiceProcess, free_port, wait_for

BUILD = REPO_ROOT / "tests" / "otelcol" / "build.sh"


def collector_binary() -> str | None:
    found = subprocess.run(["bash", str(BUILD), "--print-bin"], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else None


def _value(value: dict):
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])  # OTLP JSON carries 64-bit integers as strings
    return next(iter(value.values()), None)


def _attributes(items: list[dict] | None) -> dict:
    return {item["key"]: _value(item.get("value", {})) for item in items or []}


class Collector:
    def __init__(self, workdir: Path) -> None:
        binary = collector_binary()
        if binary is None:
            raise RuntimeError("the test OpenTelemetry Collector is not built: `make otelcol` builds it")
        workdir.mkdir(parents=True, exist_ok=True)
        self.output = workdir / "spans.jsonl"
        port = free_port()
        config = {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
            "exporters": {"file": {"path": str(self.output), "flush_interval": "100ms"}},
            "service": {"telemetry": {"metrics": {"level": "none"}},
                        "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}}},
        }
        (workdir / "otelcol.yaml").write_text(yaml.safe_dump(config))
        self.proc = ServiceProcess([binary, f"--config={workdir / 'otelcol.yaml'}"], {},
                                   workdir / "otelcol.log").start()
        wait_for(lambda: "Everything is ready" in self.proc.log() or not self.proc.alive(), 30,
                 what="the OpenTelemetry Collector")
        if not self.proc.alive():
            raise RuntimeError(f"otelcol exited:\n{self.proc.log()[-3000:]}")
        self.endpoint = f"http://127.0.0.1:{port}"

    @property
    def spans(self) -> list[dict]:
        """Every span the Collector wrote so far (a line still being written is skipped)."""
        out = []
        lines = self.output.read_text().splitlines() if self.output.exists() else []
        for line in lines:
            try:
                request = json.loads(line)
            except ValueError:
                continue
            for resource_spans in request.get("resourceSpans", []):
                service = _attributes(resource_spans.get("resource", {}).get("attributes")).get("service.name")
                for scope in resource_spans.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        out.append({
                            "name": span["name"], "trace_id": span["traceId"], "span_id": span["spanId"],
                            "parent": span.get("parentSpanId", ""), "service": service,
                            "attrs": _attributes(span.get("attributes")),
                            "links": [{"trace_id": link["traceId"], "span_id": link["spanId"],
                                       "attrs": _attributes(link.get("attributes"))} for link in span.get("links", [])],
                        })
        return out

    def close(self) -> None:
        self.proc.stop()
