"""``renderfarm workflow ...``: submit a workflow (a template), follow its steps as a live
tree, get, cancel, retry. The tree is a pure function of the API's workflow view."""

from __future__ import annotations

import time
from typing import Annotated, Any, Iterator, Optional

import httpx
import typer
from rich.live import Live
from rich.markup import escape
from rich.tree import Tree

from renderfarm.cli.client import ApiUnreachable, RenderfarmClient, SseEvent, _error_from_response, _reason, iter_sse
from renderfarm.cli.params import ParamError, build_params, input_uri, parse_labels
from renderfarm.core.queues import Priority

TERMINAL_WORKFLOW = {"succeeded", "failed", "cancelled"}
_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "bright_black", "skipped": "bright_black",
          "started": "cyan", "pending": "yellow", "running": "cyan"}

workflow_app = typer.Typer(help="Workflows: DAGs of jobs, from a template (renderfarm workflow templates).",
                           no_args_is_help=True)


def _bar(progress: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(100.0, progress)) / 100 * width))
    return "█" * filled + "░" * (width - filled)


def _status(status: str) -> str:
    style = _STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def step_line(step: dict[str, Any]) -> str:
    status = step["status"]
    shown = step.get("job_status") if status == "started" and step.get("job_status") else status
    line = f"[bold]{escape(step['name'])}[/] [bright_black]{escape(step['kind'])}[/] {_status(shown)}"
    if status in ("started", "succeeded"):
        line += f" {_bar(float(step.get('progress') or 0))} {float(step.get('progress') or 0):3.0f}%"
    if step.get("job_id"):
        line += f" [bright_black]{step['job_id']}[/]"
    if step.get("error"):
        line += f" [red]{escape(step['error'])}[/]"
    return line


def workflow_tree(flow: dict[str, Any]) -> Tree:
    """The steps as a tree: each under the first step it needs (a step that needs more
    says so), roots under the workflow."""
    head = (f"[bold]workflow {flow['id']}[/] {_status(flow['status'])} "
            f"{_bar(float(flow.get('progress') or 0))} {float(flow.get('progress') or 0):3.0f}%")
    if flow.get("template"):
        head += f" [bright_black]({escape(flow['template'])})[/]"
    root = Tree(head)
    nodes: dict[str, Tree] = {}
    steps = flow.get("steps", [])
    placed: set[str] = set()
    # Parents before children: repeat until every step whose first need is placed is placed.
    while len(placed) < len(steps):
        progressed = False
        for step in steps:
            if step["name"] in placed:
                continue
            needs = step.get("needs") or []
            parent = root if not needs else nodes.get(needs[0])
            if parent is None:
                continue
            label = step_line(step)
            if len(needs) > 1:
                label += f" [bright_black](also needs {escape(', '.join(needs[1:]))})[/]"
            nodes[step["name"]] = parent.add(label)
            placed.add(step["name"])
            progressed = True
        if not progressed:  # cannot happen for a validated DAG; show the rest flat
            for step in steps:
                if step["name"] not in placed:
                    nodes[step["name"]] = root.add(step_line(step))
                    placed.add(step["name"])
    return root


def _events(client: RenderfarmClient, workflow_id: str, read_timeout: float = 60.0) -> Iterator[SseEvent]:
    timeout = httpx.Timeout(10.0, read=read_timeout)
    try:
        with client._http.stream("GET", f"/v1/workflows/{workflow_id}/events", timeout=timeout,
                                 headers={"Accept": "text/event-stream"}) as response:
            if response.status_code >= 400:
                response.read()
                raise _error_from_response(response)
            yield from iter_sse(response.iter_lines())
    except httpx.TransportError as exc:
        raise ApiUnreachable(client.base_url, _reason(exc)) from None


def follow_workflow(client: RenderfarmClient, flow: dict[str, Any], console, max_reconnects: int = 8
                    ) -> dict[str, Any]:
    """A live tree fed by the workflow's event stream (on a terminal: redrawn in place;
    otherwise one tree per change); returns the finished workflow."""
    failures = 0
    with Live(workflow_tree(flow), console=console, auto_refresh=False, transient=False) as live:
        while True:
            try:
                for event in _events(client, flow["id"]):
                    failures = 0
                    try:
                        data = event.json()
                    except ValueError:
                        continue
                    if event.event == "workflow":
                        flow = data
                    elif event.event == "progress" and data.get("step"):
                        for step in flow.get("steps", []):
                            if step["name"] == data["step"] and step["job_id"] == data.get("job_id"):
                                step["progress"] = data.get("progress", step.get("progress"))
                                step["job_status"] = data.get("status", step.get("job_status"))
                    live.update(workflow_tree(flow), refresh=True)
                    if event.event == "workflow" and flow.get("status") in TERMINAL_WORKFLOW:
                        return flow
            except ApiUnreachable:
                failures += 1
                if failures > max_reconnects:
                    raise
                time.sleep(min(0.5 * 2 ** failures, 10.0))
                continue
            time.sleep(0.2)  # the stream's lifetime ran out: a new one starts with the current state


def _main():
    from renderfarm.cli import main  # the app's shared client handling and consoles

    return main


@workflow_app.command("submit")
def submit(
    ctx: typer.Context,
    template: Annotated[str, typer.Argument(help="A workflow template: video-analysis, publish.")],
    input: Annotated[str, typer.Argument(help="A local path (sent as an absolute file:// URI) or a URL.")],
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", "-P", metavar="KEY=VALUE", help="A template parameter; VALUE is parsed as JSON when it parses.")]
    = None,
    priority: Annotated[Priority, typer.Option("--priority", "-p", help="Queue priority of every step.")]
    = Priority.normal,
    label: Annotated[Optional[list[str]], typer.Option("--label", "-l", metavar="KEY=VALUE")] = None,
    idempotency_key: Annotated[Optional[str], typer.Option("--idempotency-key")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Show a live tree of the steps until the end.")] = False,
) -> None:
    """Submit a workflow from a template and print its id (with --wait: follow it)."""
    main = _main()
    try:
        params = build_params(param, None, None)
        labels = parse_labels(label)
        uri = input_uri(input)
    except ParamError as exc:
        raise typer.BadParameter(str(exc)) from None
    with main.api(ctx) as client:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        flow = client.request("POST", "/v1/workflows", headers=headers, json={
            "template": template, "input": uri, "params": params, "priority": priority.value, "labels": labels})
        main.err.print(f"[bright_black]submitted workflow {escape(template)} "
                       f"({len(flow['steps'])} steps, {escape(flow['status'])})[/]")
        typer.echo(flow["id"])
        if not wait:
            return
        try:
            final = follow_workflow(client, flow, main.err)
        except KeyboardInterrupt:
            main.err.print(f"\nstopped following; the workflow goes on: renderfarm workflow get {flow['id']}")
            raise typer.Exit(130) from None
    raise typer.Exit(0 if final.get("status") == "succeeded" else main.EXIT_JOB_FAILED)


@workflow_app.command("get")
def get(ctx: typer.Context, workflow_id: Annotated[str, typer.Argument(metavar="ID")],
        as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False) -> None:
    """A workflow's status and its steps' tree."""
    main = _main()
    with main.api(ctx) as client:
        flow = client.request("GET", f"/v1/workflows/{workflow_id}")
    if as_json:
        main._print_json(flow)
    else:
        main.show(workflow_tree(flow))


@workflow_app.command("cancel")
def cancel(ctx: typer.Context, workflow_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Pending steps never run; running steps stop."""
    main = _main()
    with main.api(ctx) as client:
        flow = client.request("POST", f"/v1/workflows/{workflow_id}/cancel")
    main.show(workflow_tree(flow))


@workflow_app.command("retry")
def retry(ctx: typer.Context, workflow_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Re-run the failed, cancelled and skipped steps; succeeded steps keep their outputs."""
    main = _main()
    with main.api(ctx) as client:
        flow = client.request("POST", f"/v1/workflows/{workflow_id}/retry")
    main.show(workflow_tree(flow))


@workflow_app.command("templates")
def templates(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False) -> None:
    """The registered templates, their steps and parameters."""
    main = _main()
    with main.api(ctx) as client:
        found = client.request("GET", "/v1/workflow-templates")
    if as_json:
        main._print_json(found)
        return
    for template in found:
        main.out.print(f"[bold]{escape(template['name'])}[/]  {escape(template['description'])}")
        props = template["params_schema"].get("properties", {})
        for name, schema in props.items():
            main.out.print(f"  --param {escape(name)}=…  [bright_black]default {schema.get('default')!r}[/]")
        if template.get("left_out"):
            main.out.print(f"  [yellow]left out here (kind not installed): {', '.join(template['left_out'])}[/]")
