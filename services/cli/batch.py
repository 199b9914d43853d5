"""``renderfarm batch submit FILE``: many jobs in one all-or-none request; ``--wait``
(or ``batch watch ID``) follows it live. The view is a pure function of the API's
batch counts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.live import Live
from rich.text import Text

from renderfarm.cli.client import ApiUnreachable
from renderfarm.cli.params import ParamError, input_uri

ACTIVE = ("queued", "running", "retrying")
ENDED = ("succeeded", "failed", "cancelled", "expired")
_STYLE = {"queued": "yellow", "running": "cyan", "retrying": "magenta", "succeeded": "green", "failed": "red",
          "cancelled": "bright_black", "expired": "bright_black"}

batch_app = typer.Typer(help="Submit many jobs at once (all or none) and see how a batch is doing.",
                        no_args_is_help=True)


def read_batch(text: str, cwd: str | None = None) -> list[dict[str, Any]]:
    """Job bodies from a JSON array or JSON lines (blank lines skipped). A local path as
    ``input`` becomes an absolute file:// URI, as ``renderfarm submit`` does."""
    stripped = text.strip()
    if not stripped:
        raise ParamError("the file holds no jobs")
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except ValueError as exc:
            raise ParamError(f"not a JSON array: {exc}") from None
    else:
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except ValueError as exc:
                    raise ParamError(f"line {number} is not JSON: {exc}") from None
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ParamError(f"job {index} is not a JSON object")
        if isinstance(item.get("input"), str) and item["input"].strip():
            item["input"] = input_uri(item["input"], cwd)
    return items


def batch_finished(batch: dict[str, Any]) -> bool:
    return not any(batch.get("counts", {}).get(status, 0) for status in ACTIVE)


def batch_line(batch: dict[str, Any], width: int = 30) -> Text:
    """``batch-id  [bar]  ended/count  succeeded 12 · running 2 · queued 30``."""
    counts = batch.get("counts", {})
    count = max(1, int(batch.get("count", 0)))
    ended = sum(counts.get(status, 0) for status in ENDED)
    filled = int(round(width * min(ended, count) / count))
    line = Text(f"{batch.get('id', '?')}  ")
    line.append("█" * filled, style="red" if counts.get("failed") else "green")
    line.append("░" * (width - filled), style="bright_black")
    line.append(f"  {ended}/{batch.get('count', 0)}  ")
    parts = [(status, counts[status]) for status in (*ACTIVE, *ENDED) if counts.get(status)]
    for i, (status, n) in enumerate(parts):
        line.append(" · " if i else "")
        line.append(f"{status} {n}", style=_STYLE.get(status, ""))
    return line


def follow_batch(client, batch_id: str, console, interval_s: float = 1.0, max_failures: int = 8) -> dict[str, Any]:
    """Redraws the batch's line until no job is queued, running or retrying; returns
    the last view. The API counts statuses in one read, so a poll a second is cheap."""
    failures = 0
    batch = client.request("GET", f"/v1/batches/{batch_id}", params={"limit": 1})
    with Live(batch_line(batch), console=console, auto_refresh=False, transient=False) as live:
        while not batch_finished(batch):
            time.sleep(interval_s)
            try:
                batch = client.request("GET", f"/v1/batches/{batch_id}", params={"limit": 1})
                failures = 0
            except ApiUnreachable:
                failures += 1
                if failures > max_failures:
                    raise
                continue
            live.update(batch_line(batch), refresh=True)
    return batch


def _exit_for(batch: dict[str, Any]) -> int:
    from renderfarm.cli.main import EXIT_JOB_FAILED

    counts = batch.get("counts", {})
    return 0 if counts.get("succeeded", 0) == batch.get("count") else EXIT_JOB_FAILED


@batch_app.command("submit")
def submit_batch(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON lines, or a JSON array, of job bodies.")],
    idempotency_key: Annotated[Optional[str], typer.Option(
        "--idempotency-key", help="Submitting the same file again with this key returns the first batch.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow the batch live until every job has ended; "
                                                          "exit 1 unless all succeeded.")] = False,
) -> None:
    """Submit every job in FILE, or none of them; prints the batch id."""
    from renderfarm.cli.main import api, err  # the shared client and error reporting

    try:
        jobs = read_batch(file.read_text(), cwd=str(file.parent.resolve()))
    except ParamError as exc:
        raise typer.BadParameter(str(exc)) from None
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with api(ctx) as client:
        batch = client.request("POST", "/v1/jobs:batch", json={"jobs": jobs}, headers=headers)
        if as_json:
            typer.echo(json.dumps(batch, indent=2, sort_keys=True))
        else:
            err.print(f"[bright_black]submitted {batch['count']} jobs[/]")
            typer.echo(batch["id"])
        if not wait:
            return
        final = _follow(client, batch["id"], err)
    raise typer.Exit(_exit_for(final))


def _follow(client, batch_id: str, console) -> dict[str, Any]:
    try:
        return follow_batch(client, batch_id, console)
    except KeyboardInterrupt:
        console.print(f"\nstopped following; the jobs go on: renderfarm batch watch {batch_id}")
        raise typer.Exit(130) from None


@batch_app.command("watch")
def watch_batch(ctx: typer.Context, batch_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Follow a batch live until every job has ended; exit 1 unless all succeeded."""
    from renderfarm.cli.main import api, err

    with api(ctx) as client:
        final = _follow(client, batch_id, err)
    raise typer.Exit(_exit_for(final))


@batch_app.command("get")
def get_batch(ctx: typer.Context, batch_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """A batch's counts by status (JSON)."""
    from renderfarm.cli.main import api

    with api(ctx) as client:
        batch = client.request("GET", f"/v1/batches/{batch_id}", params={"limit": 1000})
    typer.echo(json.dumps(batch, indent=2, sort_keys=True))
