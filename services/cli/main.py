"""``renderfarm``: submit and watch jobs, look at queues and workers, run the farm locally.

Exit codes: 0 ok (a waited-for job succeeded), 1 a waited-for job failed or was
cancelled, 2 the API answered with an error (or bad command-line input),
3 the API could not be reached.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

from renderfarm.cli.client import (
    DEFAULT_API_URL,
    ApiError,
    ApiUnreachable,
    RenderfarmClient,
    resolve_api_key,
)
from renderfarm.cli.batch import batch_app
from renderfarm.cli.params import ParamError, build_params, input_uri, parse_labels
from renderfarm.cli.render import (
    TERMINAL,
    duration,
    error_text,
    human_seconds,
    job_details,
    jobs_table,
    outputs_table,
    pools_table,
    print_api_error,
    queues_table,
    status_text,
    workers_table,
)
from renderfarm.core.apikeys import DEFAULT_TENANT, Scope, check_tenant
from renderfarm.core.kinds import KINDS
from renderfarm.core.queues import Priority

EXIT_JOB_FAILED = 1
EXIT_API_ERROR = 2
EXIT_UNREACHABLE = 3

# Consoles resolve sys.stdout / sys.stderr at write time, so captured output works.
out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="renderfarm",
    help="Render farm client: submit media jobs, follow them, and manage queues.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
apikey_app = typer.Typer(help="API keys stored in Redis.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
pool_app = typer.Typer(help="Steer a worker pool (its WorkerPool on Kubernetes; needs an admin key).",
                       no_args_is_help=True)
app.add_typer(pool_app, name="pool")
app.add_typer(batch_app, name="batch")


@dataclass
class CliConfig:
    api_url: str
    api_key: str | None


@app.callback()
def main(
    ctx: typer.Context,
    api_url: Annotated[str, typer.Option("--api-url", envvar="RF_API_URL", help="Base URL of the API.")]
    = DEFAULT_API_URL,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", envvar="RF_API_KEY", show_default=False,
        help="API key (sent as a Bearer token); defaults to ./data/.api-key when that file exists.")] = None,
) -> None:
    ctx.obj = CliConfig(api_url=api_url.rstrip("/"), api_key=resolve_api_key(api_key))


def _config(ctx: typer.Context) -> CliConfig:
    obj = ctx.find_root().obj
    if isinstance(obj, CliConfig):
        return obj
    return CliConfig(DEFAULT_API_URL, resolve_api_key(os.environ.get("RF_API_KEY")))


@contextmanager
def api(ctx: typer.Context) -> Iterator[RenderfarmClient]:
    """A client whose errors become readable messages and exit codes."""
    config = _config(ctx)
    client = RenderfarmClient(config.api_url, config.api_key)
    try:
        yield client
    except ApiError as exc:
        print_api_error(err, exc, config.api_url)
        raise typer.Exit(EXIT_API_ERROR) from None
    except ApiUnreachable as exc:
        err.print(f"[bold red]Error:[/] the API at [bold]{escape(exc.url)}[/] is unreachable "
                  f"[bright_black]({escape(exc.reason)})[/]")
        err.print("  [bright_black]Is it running? Set the address with --api-url or RF_API_URL.[/]")
        raise typer.Exit(EXIT_UNREACHABLE) from None
    finally:
        client.close()


def show(renderable: Any) -> None:
    """Print a table or details view. Piped output is not cut to 80 columns, so
    ``renderfarm jobs | grep`` sees whole ids and statuses (COLUMNS still wins)."""
    if out.is_terminal or os.environ.get("COLUMNS"):
        out.print(renderable)
    else:
        Console(highlight=False, width=max(out.width, 160)).print(renderable)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


# -- submit ----------------------------------------------------------------------


@app.command()
def submit(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help=f"Job kind: {', '.join(KINDS)}.")],
    input: Annotated[str, typer.Argument(help="A local path (sent as an absolute file:// URI) or a URL.")],
    priority: Annotated[Priority, typer.Option("--priority", "-p", help="Queue priority.")] = Priority.normal,
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", "-P", metavar="KEY=VALUE",
        help="A parameter; VALUE is parsed as JSON when it parses (240, true, [1,2]); dotted keys nest.")] = None,
    params_json: Annotated[Optional[str], typer.Option(
        "--params-json", metavar="JSON", help="All parameters as one JSON object (--param values are merged in).")] = None,
    rendition: Annotated[Optional[list[str]], typer.Option(
        "--rendition", "-r", metavar="K=V,...",
        help="A transcode rendition, e.g. 'height=240,crf=23' or '720p'; repeatable.")] = None,
    label: Annotated[Optional[list[str]], typer.Option("--label", "-l", metavar="KEY=VALUE", help="A label; repeatable.")]
    = None,
    idempotency_key: Annotated[Optional[str], typer.Option(
        "--idempotency-key", help="Submitting again with the same key returns the same job.")] = None,
    webhook: Annotated[Optional[str], typer.Option("--webhook", metavar="URL", help="POSTed to when the job ends.")]
    = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow progress until the job ends.")] = False,
) -> None:
    """Submit a job and print its id (with --wait: follow it to the end)."""
    try:
        params = build_params(param, params_json, rendition)
        labels = parse_labels(label)
        uri = input_uri(input)
    except ParamError as exc:
        raise typer.BadParameter(str(exc)) from None
    with api(ctx) as client:
        job = client.submit(kind, uri, params=params, priority=priority.value, labels=labels,
                            webhook_url=webhook, idempotency_key=idempotency_key)
        err.print(f"[bright_black]submitted {escape(job['kind'])} job to {escape(job['queue'])} "
                  f"({escape(job['status'])})[/]")
        typer.echo(job["id"])
        if not wait:
            return
        try:
            final = follow(client, job)
        except KeyboardInterrupt:
            err.print(f"\nstopped following; the job goes on: renderfarm job {job['id']}")
            raise typer.Exit(130) from None
    raise typer.Exit(report_final(final))


def follow(client: RenderfarmClient, job: dict[str, Any], max_reconnects: int = 8) -> dict[str, Any]:
    """Show a live progress bar fed by the job's event stream; returns the finished job.

    A dropped stream is re-opened (the server sends the current state first, so
    nothing is missed); after too many failures in a row the error is raised."""
    job_id = job["id"]
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn(), TextColumn("[bright_black]{task.fields[message]}")]
    failures = 0
    last_line = ""
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(_describe(job), total=100, completed=float(job.get("progress") or 0),
                                 message=job.get("message") or "")

        def update(state: dict[str, Any]) -> None:
            nonlocal last_line
            status = state.get("status", "")
            pct = float(state.get("progress") or 0)
            progress.update(task, description=_describe(state), message=escape(state.get("message") or ""),
                            completed=100.0 if status == "succeeded" else pct)
            if not err.is_terminal:  # a log, not a redrawn bar: one line per change of status or stage
                line = f"{status} {state.get('stage') or ''}".strip()
                if line != last_line:
                    last_line = line
                    progress.console.print(f"[bright_black]{escape(line)} {pct:.0f}%[/]")

        last_event_id: str | None = None
        while True:
            try:
                for event in client.events(job_id, last_event_id=last_event_id):
                    failures = 0
                    last_event_id = event.id or last_event_id
                    try:
                        state = event.json()
                    except ValueError:
                        continue
                    if not isinstance(state, dict):
                        continue
                    update(state)
                    if event.event == "job" and state.get("status") in TERMINAL:
                        return state
            except ApiUnreachable:
                failures += 1
                if failures > max_reconnects:
                    raise
                time.sleep(min(0.5 * 2 ** failures, 10.0))
                continue
            # The stream ended without a final "job" event (its lifetime ran out, or a
            # proxy cut it): listen again from the last event; a finished job's final
            # state always comes first.
            time.sleep(0.2)


def _describe(state: dict[str, Any]) -> str:
    status = state.get("status", "")
    stage = state.get("stage") or ""
    style = {"succeeded": "green", "failed": "red", "cancelled": "bright_black", "retrying": "magenta"}.get(status, "")
    label = f"[{style}]{status}[/]" if style else status
    return f"{label} {escape(stage)}" if stage and stage != status else label


def report_final(job: dict[str, Any]) -> int:
    status = job.get("status")
    took = duration(job)
    suffix = f" in {human_seconds(took)}" if took is not None else ""
    if status == "succeeded":
        out.print(f"[bold green]succeeded[/]{suffix}: {escape(job['kind'])} job {job['id']}")
        result = job.get("result") or {}
        if result.get("outputs"):
            show(outputs_table(result["outputs"]))
        elif result.get("metadata"):
            out.print_json(data=result["metadata"])
        return 0
    out.print(status_text(str(status)).append(suffix + f": {job.get('kind')} job {job.get('id')}"))
    if job.get("error"):
        out.print(error_text(job["error"]))
    elif job.get("message"):
        out.print(escape(job["message"]))
    return EXIT_JOB_FAILED


# -- jobs ------------------------------------------------------------------------


@app.command("jobs")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[Optional[str], typer.Option("--status", "-s", help="queued, running, retrying, succeeded, failed, cancelled.")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", "-k")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500, help="Jobs per page.")] = 50,
    cursor: Annotated[Optional[str], typer.Option("--cursor", help="Start from this page cursor.")] = None,
    all_pages: Annotated[bool, typer.Option("--all", "-a", help="Follow next_cursor through every page.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False,
) -> None:
    """List jobs, newest first."""
    with api(ctx) as client:
        if all_pages:
            jobs, next_cursor = list(client.iter_jobs(status=status, kind=kind, limit=limit, cursor=cursor)), None
        else:
            page = client.jobs_page(status=status, kind=kind, limit=limit, cursor=cursor)
            jobs, next_cursor = page.get("jobs", []), page.get("next_cursor")
    if as_json:
        _print_json({"jobs": jobs, "next_cursor": next_cursor})
        return
    if not jobs:
        err.print("no jobs")
        return
    show(jobs_table(jobs))
    if next_cursor:
        err.print(f"[bright_black]more: --cursor {escape(next_cursor)} (or --all)[/]")


@app.command("job")
def show_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False,
) -> None:
    """One job: status, parameters, outputs, error."""
    with api(ctx) as client:
        job = client.job(job_id)
    if as_json:
        _print_json(job)
    else:
        show(job_details(job))


@app.command()
def cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a queued, running or retrying job."""
    with api(ctx) as client:
        job = client.cancel(job_id)
    out.print(Text.assemble(f"{job['id']} ", status_text(job["status"])))


@app.command()
def retry(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Queue a failed or cancelled job again."""
    with api(ctx) as client:
        job = client.retry(job_id)
    out.print(Text.assemble(f"{job['id']} ", status_text(job["status"]), f" on {job['queue']}"))


@app.command()
def delete(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Delete a finished job and its outputs (a queued job is cancelled first; cancel a running one and wait)."""
    with api(ctx) as client:
        client.delete(job_id)
    out.print(f"{job_id} deleted")


# -- queues and workers ----------------------------------------------------------


@app.command()
def queues(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False) -> None:
    """Queue depth, in-flight jobs, consumers, paused, age of the oldest message."""
    with api(ctx) as client:
        rows = client.queues()
    if as_json:
        _print_json(rows)
    else:
        show(queues_table(rows))


@app.command()
def pause(ctx: typer.Context, queue: Annotated[str, typer.Argument(help="e.g. cpu.low")]) -> None:
    """Stop workers taking new jobs from a queue (running jobs finish)."""
    with api(ctx) as client:
        row = client.pause(queue)
    out.print(f"{row['name']} [bold yellow]paused[/] (depth {row['depth']})")


@app.command()
def resume(ctx: typer.Context, queue: Annotated[str, typer.Argument(help="e.g. cpu.low")]) -> None:
    """Let workers take jobs from a paused queue again."""
    with api(ctx) as client:
        row = client.resume(queue)
    out.print(f"{row['name']} [green]resumed[/] (depth {row['depth']})")


@app.command()
def pools(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False) -> None:
    """Worker pools: min, max, pinned, desired and current replicas, backlog, in-flight, conditions."""
    with api(ctx) as client:
        rows = client.pools()
    if as_json:
        _print_json(rows)
    else:
        show(pools_table(rows))


@pool_app.command("set")
def pool_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pool name, e.g. cpu.")],
    min_replicas: Annotated[Optional[int], typer.Option("--min", min=0, help="Lowest replica count.")] = None,
    max_replicas: Annotated[Optional[int], typer.Option("--max", min=1, help="Highest replica count.")] = None,
    pin: Annotated[Optional[int], typer.Option("--pin", min=0, help="Pin this many replicas (wins over autoscaling).")]
    = None,
    unpin: Annotated[bool, typer.Option("--unpin", help="Clear the pin: autoscaling resumes.")] = False,
    pause: Annotated[Optional[bool], typer.Option("--pause/--resume", help="Hands off (the operator changes nothing) "
                                                  "or back to autoscaling.", show_default=False)] = None,
) -> None:
    """Set a pool's min, max, pin or pause."""
    if pin is not None and unpin:
        raise typer.BadParameter("--pin and --unpin exclude each other", param_hint="--unpin")
    changes: dict[str, Any] = {}
    if min_replicas is not None:
        changes["min_replicas"] = min_replicas
    if max_replicas is not None:
        changes["max_replicas"] = max_replicas
    if pin is not None or unpin:
        changes["pinned_replicas"] = pin
    if pause is not None:
        changes["paused"] = pause
    if not changes:
        raise typer.BadParameter("nothing to set: give --min, --max, --pin, --unpin, --pause or --resume")
    with api(ctx) as client:
        pool = client.set_pool(name, changes)
    show(pools_table([pool]))


@app.command()
def workers(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False) -> None:
    """Live workers, their queues and the jobs they run."""
    with api(ctx) as client:
        rows = client.workers()
    if as_json:
        _print_json(rows)
    elif not rows:
        err.print("no live workers")
    else:
        show(workers_table(rows))


@app.command()
def kinds(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Raw JSON, with parameter schemas.")] = False) -> None:
    """Job kinds the farm runs."""
    with api(ctx) as client:
        rows = client.kinds()
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("KIND", "POOL", "PARAMETERS", "DESCRIPTION"):
        table.add_column(name, overflow="fold")
    for row in rows:
        props = ", ".join((row.get("params_schema") or {}).get("properties", {}))
        table.add_row(row["name"], row["pool"], props or "-", row.get("description", ""))
    show(table)


@app.command("status")
def farm_status(ctx: typer.Context) -> None:
    """Whether Redis and beat are up, and live workers per pool."""
    with api(ctx) as client:
        state = client.status()
    up = lambda value: f"[green]{value}[/]" if value == "up" else f"[red]{value}[/]"  # noqa: E731
    out.print(f"redis  {up(state['redis'])}")
    out.print(f"beat   {up(state['beat'])}")
    for pool, count in state.get("pools", {}).items():
        out.print(f"{pool:<15} {count} worker{'s' if count != 1 else ''}")


@app.command()
def top(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="One screen (two reads --interval apart), then exit.")] = False,
) -> None:
    """A live view of pools, queues by priority, in-flight jobs, the oldest wait,
    throughput and failures (admin key; the API only). Ctrl-C leaves."""
    from renderfarm.cli.top import run_top

    with api(ctx) as client:
        run_top(client, out, interval_s=interval, once=once)


# -- API keys --------------------------------------------------------------------


@apikey_app.command("create")
def apikey_create(
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant the key acts for; it sees only this tenant's jobs.")]
    = DEFAULT_TENANT,
    scope: Annotated[Optional[list[Scope]], typer.Option(
        "--scope", "-s", help="What the key may do; repeatable. jobs: submit and read the tenant's jobs; "
                              "admin: pause/resume queues, workers, farm-wide stats. Default: jobs.")] = None,
) -> None:
    """Create an API key in Redis (needs RF_REDIS_URL) and print it once."""
    scopes = frozenset(scope or [Scope.jobs])
    try:
        check_tenant(tenant)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tenant") from None
    if not os.environ.get("RF_REDIS_URL"):
        err.print("[bold red]Error:[/] RF_REDIS_URL is not set (the key is stored in the farm's Redis)")
        raise typer.Exit(EXIT_API_ERROR)
    import redis

    from renderfarm.core.apikeys import create_api_key
    from renderfarm.core.redis_conn import redis_client
    from renderfarm.core.settings import get_settings

    client = redis_client(get_settings(), socket_timeout_s=5.0)
    try:
        key = create_api_key(client, tenant, scopes)
    except redis.exceptions.RedisError as exc:
        err.print(f"[bold red]Error:[/] Redis is unreachable [bright_black]({escape(str(exc))})[/]")
        raise typer.Exit(EXIT_UNREACHABLE) from None
    finally:
        client.close()
    listed = ", ".join(sorted(scopes))
    err.print(f"[bright_black]API key for tenant {escape(tenant)}, scopes {listed} (shown once; only its hash is stored):[/]")
    typer.echo(key)


# -- local farm ------------------------------------------------------------------

DEFAULT_POOLS = "cpu,gpu-transcribe,gpu-vision"


def parse_pools(text: str) -> list[str]:
    from renderfarm.core.queues import WorkloadClass

    pools = [part.strip() for part in text.split(",") if part.strip()]
    known = [pool.value for pool in WorkloadClass]
    unknown = [pool for pool in pools if pool not in known]
    if not pools or unknown:
        raise typer.BadParameter(f"unknown pool(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}",
                                 param_hint="--pools")
    return list(dict.fromkeys(pools))


@app.command()
def local(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Inputs, outputs, logs and Redis data.")] = Path("./data"),
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="API port.")] = 8000,
    redis_port: Annotated[int, typer.Option("--redis-port", min=1, max=65535)] = 6379,
    pools: Annotated[str, typer.Option("--pools", help="Worker pools to start, comma-separated.")] = DEFAULT_POOLS,
    monitoring: Annotated[bool, typer.Option("--monitoring", help="Also run Prometheus and Alertmanager with the "
                                                                  "farm's alert rules.")] = False,
    prometheus_port: Annotated[int, typer.Option("--prometheus-port", min=1, max=65535)] = 9090,
    alertmanager_port: Annotated[int, typer.Option("--alertmanager-port", min=1, max=65535)] = 9093,
    s3: Annotated[bool, typer.Option("--s3", help="Keep media in a local S3 server (SeaweedFS, `make s3-tools`) "
                                                  "instead of the data folder.")] = False,
) -> None:
    """Run the whole farm on this machine: Redis, API, beat and workers (and, with
    --monitoring, Prometheus and Alertmanager; with --s3, a local S3 server)."""
    pool_list = parse_pools(pools)
    try:
        from renderfarm.cli.local import run_local
    except ImportError as exc:
        if exc.name not in ("renderfarm.cli.local",):
            raise
        err.print("[bold red]Error:[/] the local runner is not available in this installation")
        raise typer.Exit(EXIT_API_ERROR) from None
    result = run_local(data_dir=data_dir, port=port, redis_port=redis_port, pools=pool_list, monitoring=monitoring,
                       prometheus_port=prometheus_port, alertmanager_port=alertmanager_port, s3=s3)
    if isinstance(result, int) and result:
        raise typer.Exit(result)


# -- manual review ------------------------------------------------------------------

review_app = typer.Typer(help="Jobs that failed for good: list, requeue (maybe with new params), dismiss.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")


@review_app.command("list")
def review_list(
    ctx: typer.Context,
    kind: Annotated[Optional[str], typer.Option("--kind", "-k")] = None,
    error_type: Annotated[Optional[str], typer.Option("--error-type", "-e", help="e.g. transient, invalid_media.")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="ISO time: only jobs that failed after it.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500)] = 50,
    cursor: Annotated[Optional[str], typer.Option("--cursor")] = None,
    all_tenants: Annotated[bool, typer.Option("--all-tenants", help="Every tenant's (admin key).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False,
) -> None:
    """Jobs in review, newest failure first."""
    with api(ctx) as client:
        page = client.review_page(kind=kind, error_type=error_type, since=since, limit=limit, cursor=cursor,
                                  all_tenants=all_tenants)
    if as_json:
        _print_json(page)
        return
    items = page.get("items", [])
    if not items:
        err.print("nothing in review")
        return
    for item in items:
        job = item["job"]
        error = job.get("error") or {}
        out.print(Text.assemble(f"{job['id']}  {job['kind']}  ", (str(error.get("type", "")), "red"),
                                f"  {item['in_review_since']}  {error.get('message', '')[:80]}"))
    if page.get("next_cursor"):
        err.print(f"more: --cursor {page['next_cursor']}")


@review_app.command("requeue")
def review_requeue(
    ctx: typer.Context,
    job_id: Annotated[Optional[str], typer.Argument(metavar="[ID]", help="One job; without it, every match of the filters.")] = None,
    params: Annotated[Optional[str], typer.Option("--params-json", help="New params as JSON (one job only).")] = None,
    priority: Annotated[Optional[str], typer.Option("--priority", "-p", help="New priority (one job only).")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", "-k", help="Bulk: this kind only.")] = None,
    error_type: Annotated[Optional[str], typer.Option("--error-type", "-e", help="Bulk: this error type only.")] = None,
    all_tenants: Annotated[bool, typer.Option("--all-tenants", help="Bulk across tenants (admin key).")] = False,
) -> None:
    """Run a job in review again with a fresh retry budget, or (no ID) all that match --kind/--error-type."""
    if job_id is None and not (kind or error_type):
        raise typer.BadParameter("give a job ID, or --kind and/or --error-type for a bulk requeue")
    try:
        new_params = json.loads(params) if params else None
    except ValueError:
        raise typer.BadParameter("--params-json must be JSON") from None
    with api(ctx) as client:
        if job_id is not None:
            job = client.review_requeue(job_id, params=new_params, priority=priority)
            out.print(Text.assemble(f"{job['id']} ", status_text(job["status"]), f" on {job['queue']}"))
            return
        answer = client.review_requeue_matching(kind=kind, error_type=error_type, all_tenants=all_tenants)
    for requeued in answer["requeued"]:
        out.print(requeued)
    err.print(f"{answer['count']} requeued" + (" (more match: run again)" if answer.get("more") else ""))


@review_app.command("dismiss")
def review_dismiss(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Take a job out of review; its record stays (failed) until retention expires it."""
    with api(ctx) as client:
        job = client.review_dismiss(job_id)
    out.print(Text.assemble(f"{job['id']} dismissed (", status_text(job["status"]), ")"))
# -- workflows (their commands live in cli/workflow.py) ----------------------------

from renderfarm.cli.workflow import workflow_app  # noqa: E402  (registered after the shared helpers above)

app.add_typer(workflow_app, name="workflow")
