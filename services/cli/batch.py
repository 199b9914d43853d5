"""``renderfarm batch submit FILE``: many jobs in one all-or-none request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from renderfarm.cli.params import ParamError, input_uri

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


@batch_app.command("submit")
def submit_batch(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON lines, or a JSON array, of job bodies.")],
    idempotency_key: Annotated[Optional[str], typer.Option(
        "--idempotency-key", help="Submitting the same file again with this key returns the first batch.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False,
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
        return
    err.print(f"[bright_black]submitted {batch['count']} jobs[/]")
    typer.echo(batch["id"])


@batch_app.command("get")
def get_batch(ctx: typer.Context, batch_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """A batch's counts by status (JSON)."""
    from renderfarm.cli.main import api

    with api(ctx) as client:
        batch = client.request("GET", f"/v1/batches/{batch_id}", params={"limit": 1000})
    typer.echo(json.dumps(batch, indent=2, sort_keys=True))
