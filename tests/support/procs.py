"""Real processes for tests: redis-server, renderfarm workers, the API.

Each runs on a free loopback port with its own temporary folder and is stopped
when the test (or session) ends, also when the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import httpx
import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str = "condition", interval: float = 0.05):
    """Poll ``check()`` until it returns something truthy and return that. Errors it
    raises meanwhile are retried (a resource may not exist yet); on timeout the last
    value or error is in the message."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes"],
            stdout=open(self.workdir / "redis.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_for(lambda: client.ping(), 10, what="redis-server")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc:
            stop_process(self.proc, sig)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


class ServiceProcess:
    """A renderfarm process (worker, API, beat) with its log captured to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServiceProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=REPO_ROOT, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc:
            stop_process(self.proc, sig, timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL, 5)


def rf_env(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    env.update({
        "RF_REDIS_URL": redis_url,
        "RF_DATA_DIR": str(data_dir),
        "RF_ALLOWED_INPUT_ROOTS": str(data_dir / "inputs"),
        "RF_WORKER_HEARTBEAT_S": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def start_worker(env: dict[str, str], pool: str = "cpu", concurrency: int = 1, name: str | None = None,
                 log_dir: Path | None = None, wait: bool = True, store=None) -> ServiceProcess:
    name = name or f"{pool}@test-{free_port()}"
    worker_env = dict(env, RF_WORKER_NAME=name, HOSTNAME=name.split("@", 1)[-1])
    log_dir = log_dir or Path(env["RF_DATA_DIR"]) / "logs"
    proc = ServiceProcess([PYTHON, "-m", "renderfarm.worker", "--pool", pool, "--concurrency", str(concurrency)],
                          worker_env, log_dir / f"worker-{name.replace('@', '-')}.log").start()
    if wait:
        client = redis.Redis.from_url(env["RF_REDIS_URL"], decode_responses=True)
        # Ready = heartbeat written (consumer started and queues synced).
        wait_for(lambda: client.exists(f"rf:worker:{name}") or not proc.alive(), 60, what=f"worker {name}")
        if not proc.alive():
            raise RuntimeError(f"worker {name} exited:\n{proc.log()[-3000:]}")
    return proc


def start_api(env: dict[str, str], port: int | None = None, log_dir: Path | None = None) -> tuple[ServiceProcess, str]:
    port = port or free_port()
    log_dir = log_dir or Path(env["RF_DATA_DIR"]) / "logs"
    proc = ServiceProcess([PYTHON, "-m", "uvicorn", "renderfarm.api.app:create_app", "--factory", "--host", "127.0.0.1",
                           "--port", str(port), "--log-level", "warning"], env, log_dir / f"api-{port}.log").start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/healthz", timeout=1).status_code == 200 or not proc.alive(), 30, what="API")
    if not proc.alive():
        raise RuntimeError(f"API exited:\n{proc.log()[-3000:]}")
    return proc, base


def have(binary: str) -> bool:
    return shutil.which(binary) is not None
