"""Run the whole farm on this machine in the foreground (``make run``).

Starts (or reuses) Redis, the API, one worker per pool and the maintenance loop,
prefixes their output, prints the URL, an API key and a first ``curl``, and stops
everything cleanly on Ctrl-C: workers first (they finish or hand back their jobs),
then the API and the maintenance loop, then the Redis it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

_COLORS = ["36", "32", "35", "33", "34", "31"]

# A 202 means the job is stored: every write reaches the append-only file on disk
# before Redis answers (everysec could lose the last second of accepted jobs in a
# crash). make bench measures with the same setting.
DURABLE_REDIS_ARGS = ("--appendonly", "yes", "--appendfsync", "always")


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    color: str = "37"
    stop_timeout_s: float = 30.0
    pump: threading.Thread | None = field(default=None, repr=False)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pump(child: Child) -> None:
    assert child.proc and child.proc.stdout
    prefix = f"\033[{child.color}m{child.name:>15}\033[0m | " if sys.stdout.isatty() else f"{child.name:>15} | "
    for line in iter(child.proc.stdout.readline, b""):
        sys.stdout.write(prefix + line.decode(errors="replace"))
        sys.stdout.flush()


def _start(child: Child) -> None:
    child.proc = subprocess.Popen(child.args, env=child.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    child.pump = threading.Thread(target=_pump, args=(child,), daemon=True)
    child.pump.start()


def _stop(child: Child) -> None:
    proc = child.proc
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=child.stop_timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


def _api_key(data_dir: Path, client: redis.Redis) -> str:
    """The local farm's key: one person's laptop, so it may do everything (jobs and admin)."""
    from renderfarm.core.apikeys import ALL_SCOPES, ApiKeyRecord, create_api_key, lookup, store_api_key

    key_file = data_dir / ".api-key"
    if key_file.exists():
        key = key_file.read_text().strip()
        record = lookup(client, key)
        if record is not None:
            if record.scopes != ALL_SCOPES:  # stored before keys had scopes
                store_api_key(client, key, ApiKeyRecord(tenant=record.tenant, scopes=ALL_SCOPES))
            return key
    key = create_api_key(client, tenant="local", scopes=ALL_SCOPES)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _monitoring_children(data_dir: Path, api_port: int, worker_ports: list[int], prometheus_port: int,
                         alertmanager_port: int) -> list[Child] | str:
    """Prometheus and Alertmanager (Debian's packages) with the farm's alert rules, scraping
    the API and the workers; a string says why they cannot run."""
    import yaml

    from renderfarm.monitoring.generate import rules_yaml
    from renderfarm.monitoring.stack import alertmanager_binary, alertmanager_config, prometheus_config

    prometheus, alertmanager = shutil.which("prometheus"), alertmanager_binary()
    if not prometheus or not alertmanager:
        return "prometheus and prometheus-alertmanager are not installed (make system-deps installs them)"
    for busy in (prometheus_port, alertmanager_port):
        if _port_open(busy):
            return f"port {busy} is already in use (--prometheus-port / --alertmanager-port)"
    folder = data_dir / "monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(rules_yaml())
    targets = {"api": [f"127.0.0.1:{api_port}"], "worker": [f"127.0.0.1:{p}" for p in worker_ports]}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(
        targets, str(folder / "rules.yaml"), f"127.0.0.1:{alertmanager_port}")))
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config()))
    env = dict(os.environ)
    return [
        Child("alertmanager", [alertmanager, f"--config.file={folder / 'alertmanager.yml'}",
                               f"--storage.path={folder / 'alertmanager'}",
                               f"--web.listen-address=127.0.0.1:{alertmanager_port}", "--cluster.listen-address=",
                               "--log.level=warn"], env, stop_timeout_s=10),
        Child("prometheus", [prometheus, f"--config.file={folder / 'prometheus.yml'}",
                             f"--storage.tsdb.path={folder / 'prometheus'}",
                             f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"],
              env, stop_timeout_s=10),
    ]


def run_local(data_dir: Path = Path("data"), port: int = 8000, redis_port: int = 6379,
              pools: list[str] | None = None, monitoring: bool = False, prometheus_port: int = 9090,
              alertmanager_port: int = 9093, s3: bool = False) -> int:
    pools = pools or ["cpu", "gpu-transcribe", "gpu-vision"]
    data_dir = data_dir.resolve()
    for sub in ("inputs", "outputs", "work", "redis"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    if _port_open(port):
        print(f"port {port} is already in use; stop what runs there or pass --port", file=sys.stderr)
        return 1

    children: list[Child] = []
    redis_url = os.environ.get("RF_REDIS_URL") or f"redis://127.0.0.1:{redis_port}/0"
    if not os.environ.get("RF_REDIS_URL") and not _port_open(redis_port):
        if not shutil.which("redis-server"):
            print("redis-server is not installed (make run installs it: apt-get install redis-server)", file=sys.stderr)
            return 1
        children.append(Child("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                        "--dir", str(data_dir / "redis"), *DURABLE_REDIS_ARGS],
                              dict(os.environ), stop_timeout_s=10))

    env = dict(os.environ)
    env.setdefault("RF_DATA_DIR", str(data_dir))
    env.setdefault("RF_ALLOWED_INPUT_ROOTS", str(data_dir / "inputs"))
    env["RF_REDIS_URL"] = redis_url
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")  # models come from installed packages, never a hub
    if not env.get("RF_WEBHOOK_SECRET"):
        env["RF_WEBHOOK_SECRET"] = _local_secret(data_dir / ".webhook-secret")
    weed = None
    if s3:
        weed = _start_local_s3(data_dir)
        if isinstance(weed, str):
            print(f"--s3: {weed}", file=sys.stderr)
            return 1
        env.update(weed.env(LOCAL_BUCKET))
    python = sys.executable
    children.append(Child("api", [python, "-m", "uvicorn", "renderfarm.api.app:create_app", "--factory",
                                  "--host", "127.0.0.1", "--port", str(port)], env))
    worker_ports = [_free_port() for _ in pools] if monitoring else []
    for i, pool in enumerate(pools):
        worker_env = dict(env, RF_POOL=pool)
        if monitoring:
            worker_env["RF_WORKER_METRICS_PORT"] = str(worker_ports[i])
        children.append(Child(f"worker {pool}", [python, "-m", "renderfarm.worker", "--pool", pool],
                              worker_env, stop_timeout_s=60))
    children.append(Child("beat", [python, "-m", "renderfarm.worker.beat"], env))
    if monitoring:
        stack = _monitoring_children(data_dir, port, worker_ports, prometheus_port, alertmanager_port)
        if isinstance(stack, str):
            print(f"--monitoring: {stack}", file=sys.stderr)
            return 1
        children.extend(stack)
    for i, child in enumerate(children):
        child.color = _COLORS[i % len(_COLORS)]

    stopping = threading.Event()

    def request_stop(*_args) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    try:
        if children[0].name == "redis":
            _start(children[0])
        client = redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or stopping.is_set():
                    print(f"Redis at {redis_url} did not come up", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        _warn_if_not_durable(client, redis_url)
        key = _api_key(data_dir, client)
        for child in children:
            if child.proc is None:
                _start(child)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not _port_open(port) and time.monotonic() < deadline and not stopping.is_set():
            time.sleep(0.2)
        sample = data_dir / "inputs" / "sample.mp4"
        _banner(base, key, data_dir, sample, pools)
        if weed is not None:
            print(f"  S3 (SeaweedFS) {weed.endpoint}   bucket {LOCAL_BUCKET}: outputs go there; "
                  f"POST {base}/v1/uploads for inputs\n", flush=True)
        if monitoring:
            print(f"  Prometheus   http://127.0.0.1:{prometheus_port}   (alerts: http://127.0.0.1:{prometheus_port}/alerts)\n"
                  f"  Alertmanager http://127.0.0.1:{alertmanager_port}   (rules: {data_dir / 'monitoring' / 'rules.yaml'})\n",
                  flush=True)
        if not sample.exists():
            _make_sample(sample)
        while not stopping.is_set():
            for child in children:
                if child.proc and child.proc.poll() is not None:
                    print(f"{child.name} exited with code {child.proc.returncode}; stopping the farm", file=sys.stderr)
                    stopping.set()
                    break
            stopping.wait(0.5)
    finally:
        print("\nstopping: workers first (running jobs finish or go back to their queues)…", flush=True)
        order = [c for c in children if c.name.startswith("worker")] + \
                [c for c in children if c.name in ("api", "beat", "prometheus", "alertmanager")] + [c for c in children if c.name == "redis"]
        for group in (order[:len(pools)], order[len(pools):]):
            threads = [threading.Thread(target=_stop, args=(c,)) for c in group]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if weed is not None:
            weed.stop()
        print("stopped.", flush=True)
    return 0


LOCAL_BUCKET = "renderfarm"


def _start_local_s3(data_dir: Path):
    """SeaweedFS on free ports with a generated key pair (kept in data/.s3-secret);
    a string says why it cannot run."""
    from renderfarm.cli.s3server import WeedS3, weed_binary

    if not weed_binary().is_file():
        return f"{weed_binary()} is missing: run `make s3-tools` first"
    folder = data_dir / "s3"
    folder.mkdir(parents=True, exist_ok=True)
    print("starting the local S3 server (SeaweedFS)…", flush=True)
    try:
        return WeedS3(folder, access_key="renderfarm-local", secret_key=_local_secret(data_dir / ".s3-secret"),
                      buckets=[LOCAL_BUCKET]).start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        return f"the local S3 server did not start: {exc}"


def _warn_if_not_durable(client: redis.Redis, redis_url: str) -> None:
    """A Redis this runner did not start keeps its own settings: say when a 202 is not durable there."""
    try:
        config = client.config_get("append*")
    except redis.exceptions.ResponseError:  # CONFIG disabled (a managed Redis)
        return
    if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
        print(f"warning: the Redis at {redis_url} runs appendonly={config.get('appendonly')} "
              f"appendfsync={config.get('appendfsync')}: accepted jobs can be lost in a crash "
              "(use appendonly yes, appendfsync always)", file=sys.stderr, flush=True)


def _local_secret(path: Path) -> str:
    if not path.exists():
        import secrets

        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _make_sample(path: Path) -> None:
    if shutil.which("ffmpeg"):
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=5",
                        "-f", "lavfi", "-i", "sine=frequency=440:duration=5",
                        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
                        str(path)], check=False)


def _banner(base: str, key: str, data_dir: Path, sample: Path, pools: list[str]) -> None:
    body = ('{"kind":"transcode","input":"' + sample.as_uri() +
            '","params":{"renditions":[{"height":240}]}}')
    print(f"""
renderfarm is running (pools: {", ".join(pools)})
  API        {base}   (OpenAPI: {base}/docs, metrics: {base}/metrics)
  API key    {key}   (saved in {data_dir / '.api-key'})
  inputs     {data_dir / 'inputs'}   outputs: {data_dir / 'outputs'}

Try:
  curl -s -X POST {base}/v1/jobs -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' -d '{body}'
  .venv/bin/renderfarm submit transcode {sample} --rendition height=240 --wait

Ctrl-C stops everything.
""", flush=True)
