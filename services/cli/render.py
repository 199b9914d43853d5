"""How the CLI shows jobs, queues, workers and errors (rich)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from renderfarm.cli.client import ApiError

STATUS_STYLES = {
    "queued": "cyan",
    "running": "yellow",
    "retrying": "magenta",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "bright_black",
}
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def age(value: str | None, now: datetime | None = None) -> str:
    moment = parse_time(value)
    if moment is None:
        return "-"
    now = now or datetime.now(timezone.utc)
    return human_seconds((now - moment).total_seconds()) + " ago"


def duration(job: dict[str, Any]) -> float | None:
    started, finished = parse_time(job.get("started_at")), parse_time(job.get("finished_at"))
    if started is None:
        return None
    end = finished or datetime.now(timezone.utc)
    return (end - started).total_seconds()


def human_bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True, min_width=32)
    table.add_column("KIND", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("PRIORITY", no_wrap=True)
    table.add_column("PROGRESS", justify="right", no_wrap=True)
    table.add_column("STAGE", overflow="ellipsis", no_wrap=True, max_width=20)
    table.add_column("CREATED", no_wrap=True)
    now = datetime.now(timezone.utc)
    for job in jobs:
        table.add_row(job["id"], job.get("kind", ""), status_text(job.get("status", "")), job.get("priority", ""),
                      f"{float(job.get('progress') or 0):.0f}%", job.get("stage") or "", age(job.get("created_at"), now))
    return table


def outputs_table(outputs: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("OUTPUT", no_wrap=True)
    table.add_column("TYPE", no_wrap=True)
    table.add_column("SIZE", justify="right", no_wrap=True)
    table.add_column("URI", overflow="fold")
    for out in outputs:
        table.add_row(out.get("name", ""), out.get("media_type") or "-", human_bytes(out.get("size_bytes")),
                      out.get("uri", ""))
    return table


def error_text(error: dict[str, Any]) -> Text:
    text = Text()
    text.append(str(error.get("type", "error")), style="bold red")
    text.append(": ")
    text.append(str(error.get("message", "")), style="red")
    if error.get("retryable"):
        text.append(" (retryable)", style="bright_black")
    return text


def _json_block(value: Any, limit: int = 4000) -> Text:
    dumped = json.dumps(value, indent=2, sort_keys=True, default=str)
    if len(dumped) > limit:
        dumped = dumped[:limit] + "\n… (use --json for everything)"
    return Text(dumped)


def job_details(job: dict[str, Any]) -> Group:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def row(label: str, value: Any) -> None:
        if value in (None, "", {}, []):
            return
        grid.add_row(label, value if isinstance(value, Text) else Text(str(value)))

    row("id", job.get("id"))
    row("kind", job.get("kind"))
    row("status", status_text(job.get("status", "")))
    row("priority", f"{job.get('priority', '')} (queue {job.get('queue', '')})")
    row("progress", f"{float(job.get('progress') or 0):.0f}%")
    row("stage", job.get("stage"))
    row("message", job.get("message"))
    row("input", job.get("input"))
    if job.get("params"):
        row("params", json.dumps(job["params"], sort_keys=True))
    if job.get("labels"):
        row("labels", ", ".join(f"{k}={v}" for k, v in sorted(job["labels"].items())))
    row("attempts", job.get("attempts"))
    row("worker", job.get("worker"))
    row("tenant", job.get("tenant"))
    row("idempotency key", job.get("idempotency_key"))
    row("webhook", job.get("webhook_url"))
    row("created", job.get("created_at"))
    row("started", job.get("started_at"))
    row("finished", job.get("finished_at"))
    if job.get("started_at"):
        row("duration", human_seconds(duration(job)))
    if job.get("error"):
        row("error", error_text(job["error"]))
    parts: list[Any] = [grid]
    result = job.get("result") or {}
    if result.get("outputs"):
        parts += [Text(""), outputs_table(result["outputs"])]
    if result.get("metadata"):
        parts += [Text(""), Text("metadata", style="bold"), _json_block(result["metadata"])]
    return Group(*parts)


def queues_table(queues: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (("QUEUE", "left"), ("DEPTH", "right"), ("IN-FLIGHT", "right"), ("CONSUMERS", "right"),
                          ("PAUSED", "left"), ("OLDEST", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for q in queues:
        paused = Text("paused", style="bold yellow") if q.get("paused") else Text("no", style="bright_black")
        table.add_row(q["name"], str(q.get("depth", 0)), str(q.get("in_flight", 0)), str(q.get("consumers", 0)),
                      paused, human_seconds(q.get("oldest_age_s")))
    return table


def pools_table(pools: list[dict[str, Any]]) -> Table:
    """Like `kubectl get wp`, plus pause and the conditions that are true."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (("POOL", "left"), ("MIN", "right"), ("MAX", "right"), ("PINNED", "right"),
                          ("DESIRED", "right"), ("CURRENT", "right"), ("BACKLOG", "right"), ("IN-FLIGHT", "right"),
                          ("PAUSED", "left"), ("CONDITIONS", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "CONDITIONS", overflow="fold")

    def number(value: Any) -> str:
        return "-" if value is None else str(value)

    for p in pools:
        paused = Text("paused", style="bold yellow") if p.get("paused") else Text("no", style="bright_black")
        true = [c["type"] for c in p.get("conditions") or [] if c.get("status") == "True"]
        table.add_row(p["name"], number(p.get("min_replicas")), number(p.get("max_replicas")),
                      number(p.get("pinned_replicas")), number(p.get("desired_replicas")),
                      number(p.get("current_replicas")), number(p.get("backlog")), number(p.get("in_flight")),
                      paused, ", ".join(true) or "-")
    return table


def workers_table(workers: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("WORKER", no_wrap=True)
    table.add_column("POOL", no_wrap=True)
    table.add_column("CONC", justify="right", no_wrap=True)
    table.add_column("RUNNING", overflow="fold")
    table.add_column("SEEN", justify="right", no_wrap=True)
    table.add_column("QUEUES", overflow="fold")
    for w in workers:
        running = ", ".join(w.get("running_jobs") or []) or "-"
        conc = w.get("concurrency")
        table.add_row(w["name"], w.get("pool", ""), "-" if conc is None else str(conc), running,
                      human_seconds(w.get("last_seen_s_ago")) + " ago", ",".join(w.get("queues") or []))
    return table


def print_api_error(console: Console, exc: ApiError, api_url: str = "") -> None:
    console.print(f"[bold red]Error:[/] [red]{escape(exc.message or exc.code)}[/] "
                  f"[bright_black]({escape(exc.code)}, HTTP {exc.status})[/]")
    details = exc.details
    if isinstance(details, list):
        for item in details:
            if isinstance(item, dict):
                field = item.get("field") or ("kind" if item.get("type") == "union_tag_invalid" else "(body)")
                line = f"  • [bold]{escape(str(field))}[/]: {escape(str(item.get('message', '')))}"
                allowed = item.get("allowed")
                if allowed:
                    line += f"\n    allowed: {escape(', '.join(map(str, allowed)))}"
                if str(field).endswith("params.renditions") and item.get("type") == "missing":
                    line += "\n    [bright_black]add one with --rendition height=720 (repeatable)[/]"
                console.print(line)
            else:
                console.print(f"  • {escape(str(item))}")
    elif isinstance(details, dict):
        for key, value in details.items():
            console.print(f"  {escape(str(key))}: {escape(str(value))}")
    elif details:
        console.print(f"  {escape(str(details))}")
    if exc.status == 401:
        console.print("  [bright_black]Set the key with --api-key or RF_API_KEY"
                      + (f" (API: {escape(api_url)})" if api_url else "") + ".[/]")
