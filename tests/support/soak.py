"""The fault soak's parts: a farm of real processes, the faults, and the ledger's reading.

The farm is one redis-server (append-only file, fsync always), two or more CPU
workers with prefork pools, and beat. Jobs are cheap real ffmpeg jobs (probe,
thumbnail, transcode) on tiny lavfi clips. Each run writes a line to a run ledger
(RF_RUN_LEDGER, read by the runner only when set): "start", "done" (the workload
finished and published its outputs: the side effect) and "end <outcome>". The
ledger is what counts runs; the job store is what says how each job ended.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from renderfarm.core.jobs import TERMINAL_STATUSES, JobStatus
from renderfarm.core.queues import Priority, pool_queues
from renderfarm.core.redis_conn import redis_client
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobNotFound, JobStore, events_channel
from tests.support.jobs import start_beat, submit
from tests.support.media import make_clip
from tests.support.procs import RedisServer, ServiceProcess, rf_env, start_worker

FAULTS = ("kill_pool_process", "restart_worker", "kill_beat", "restart_redis", "pause_resume")


@dataclass
class SoakConfig:
    jobs: int = 500
    faults: int = 100
    workers: int = 2
    concurrency: int = 2
    lease_s: float = 3.0
    fault_every_s: float = 1.0
    drain_timeout_s: float = 600.0
    seed: int = 7


@dataclass
class Report:
    jobs: int
    by_status: dict[str, int]
    failed_by_error: dict[str, int]
    faults: dict[str, int]
    duplicates: int  # succeeded jobs whose side effect ran twice without a crash to explain it
    replays: int  # side effect redone because a run died between finishing and recording it
    double_commits: int  # succeeded jobs recorded as succeeded by two runs
    unaccounted: int  # succeeded jobs whose committing run (per the store) left no side-effect marker
    lost: int  # submitted jobs the store no longer knows
    stuck: int  # jobs not terminal when the drain timed out
    runs: int
    interrupted_runs: int
    recover_p50_s: float | None  # fault -> the job is requeued or taken over (its retry event)
    recover_p99_s: float | None
    recover_max_s: float | None
    rerun_p50_s: float | None  # fault -> the next attempt starts (includes waiting in line behind other jobs)
    rerun_p99_s: float | None
    elapsed_s: float
    notes: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not (self.duplicates or self.double_commits or self.unaccounted or self.lost or self.stuck)

    def lines(self) -> list[str]:
        def fmt(value):
            return "-" if value is None else f"{value:.2f} s"

        return [
            f"jobs            {self.jobs} ({', '.join(f'{k} {v}' for k, v in sorted(self.by_status.items()))})",
            f"failed by error {dict(sorted(self.failed_by_error.items())) or '{}'}",
            f"faults          {sum(self.faults.values())} ({', '.join(f'{k} {v}' for k, v in sorted(self.faults.items()))})",
            f"runs            {self.runs} ({self.interrupted_runs} interrupted by a fault)",
            f"duplicates      {self.duplicates}  (side effect twice, no crash to explain it)",
            f"double commits  {self.double_commits}",
            f"unaccounted     {self.unaccounted}  (succeeded, but the committing run left no side-effect marker)",
            f"replays         {self.replays}  (run died between its side effect and recording it)",
            f"lost            {self.lost}",
            f"stuck           {self.stuck}",
            f"time to recover p50 {fmt(self.recover_p50_s)}, p99 {fmt(self.recover_p99_s)}, max {fmt(self.recover_max_s)}"
            " (fault -> job requeued or taken over)",
            f"time to rerun   p50 {fmt(self.rerun_p50_s)}, p99 {fmt(self.rerun_p99_s)}"
            " (fault -> next attempt starts, includes the wait in line)",
            f"elapsed         {self.elapsed_s:.0f} s",
            *self.notes,
        ]


class Farm:
    """Real processes that faults can be injected into, each restartable."""

    def __init__(self, root: Path, config: SoakConfig):
        self.root = root
        self.config = config
        self.data_dir = root / "data"
        (self.data_dir / "inputs").mkdir(parents=True, exist_ok=True)
        self.ledger = root / "runs.ledger"
        self.redis_server = RedisServer(root / "redis")
        self.env: dict[str, str] = {}
        self.workers: list[ServiceProcess | None] = []
        self.beat: ServiceProcess | None = None
        self._worker_locks: list[threading.Lock] = []
        self._restarts: list[threading.Thread] = []

    def start(self) -> "Farm":
        self.redis_server.start()
        self.env = rf_env(self.redis_server.url, self.data_dir, RF_ORPHAN_AFTER_S=str(self.config.lease_s),
                          RF_RUN_LEDGER=str(self.ledger), RF_LOG_LEVEL="WARNING")
        for index in range(self.config.workers):
            self._worker_locks.append(threading.Lock())
            self.workers.append(self._start_worker(index))
        self.beat = start_beat(self.env, self.root / "logs")
        return self

    def store(self) -> JobStore:
        settings = Settings(redis_url=self.redis_server.url)
        return JobStore(redis_client(settings, socket_timeout_s=5), retention_seconds=settings.retention_seconds)

    def _start_worker(self, index: int) -> ServiceProcess:
        # A restarted container keeps its name: so do these.
        return start_worker(self.env, concurrency=self.config.concurrency, name=f"cpu@soak-{index}",
                            log_dir=self.root / "logs")

    # -- faults -------------------------------------------------------------------------

    def kill_pool_process(self, rng: random.Random) -> bool:
        """SIGKILL a pool process, as the OOM killer would; busy ones first."""
        children = []
        for index, worker in enumerate(self.workers):
            if worker is None or not worker.alive() or self._worker_locks[index].locked():
                continue
            try:
                children += psutil.Process(worker.proc.pid).children()
            except psutil.NoSuchProcess:
                continue
        if not children:
            return False
        busy = [c for c in children if _has_ffmpeg_child(c)]
        victim = rng.choice(busy or children)
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            return False
        return True

    def restart_worker(self, rng: random.Random) -> bool:
        """SIGTERM a whole worker (scale-in, a rollout), then start it again under the same name."""
        index = rng.randrange(len(self.workers))
        lock = self._worker_locks[index]
        if not lock.acquire(blocking=False):
            return False

        def restart():
            try:
                worker = self.workers[index]
                if worker is not None and worker.alive():
                    # The main process only, as the kubelet does: warm shutdown lets running jobs finish.
                    worker.proc.send_signal(signal.SIGTERM)
                    try:
                        worker.proc.wait(timeout=60)
                    except Exception:
                        worker.kill()
                self.workers[index] = self._start_worker(index)
            finally:
                lock.release()

        thread = threading.Thread(target=restart, daemon=True)
        thread.start()
        self._restarts.append(thread)
        return True

    def kill_beat(self, rng: random.Random) -> bool:
        if self.beat is not None:
            self.beat.kill()
        self.beat = start_beat(self.env, self.root / "logs")
        return True

    def restart_redis(self, rng: random.Random) -> bool:
        """Stop and start redis-server on its port and folder; the append-only file restores it."""
        self.redis_server.stop(signal.SIGTERM)
        time.sleep(rng.uniform(0.1, 1.0))
        self.redis_server.start()
        return True

    def wait_for_restarts(self) -> None:
        for thread in self._restarts:
            thread.join(timeout=120)

    def stop(self) -> None:
        self.wait_for_restarts()
        for worker in self.workers:
            if worker is not None:
                worker.stop(signal.SIGKILL, 5)
        if self.beat is not None:
            self.beat.kill()
        self.redis_server.stop()


def _has_ffmpeg_child(proc: psutil.Process) -> bool:
    try:
        return any(child.name() in ("ffmpeg", "ffprobe") for child in proc.children())
    except psutil.NoSuchProcess:
        return False


class EventRecorder(threading.Thread):
    """Records every job event the store publishes (time, job id, status, stage), the
    way an SSE client sees them; resubscribes after a Redis restart."""

    def __init__(self, redis_url: str):
        super().__init__(name="soak-events", daemon=True)
        self.redis_url = redis_url
        self.events: list[tuple[float, str, str, str]] = []
        self._stop = threading.Event()

    def run(self) -> None:
        import json

        pattern = events_channel("*")
        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=2)
                pubsub = client.pubsub()
                pubsub.psubscribe(pattern)
                while not self._stop.is_set():
                    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                    if message and message["type"] == "pmessage":
                        data = json.loads(message["data"])
                        self.events.append((time.time(), data["job_id"], data["status"], data.get("stage", "")))
            except (redis.RedisError, OSError, ValueError):
                time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()


class Pauser:
    """Pauses a queue and resumes it a little later (the API's pause/resume)."""

    def __init__(self):
        self.pending: list[tuple[float, str]] = []

    def pause(self, store: JobStore, rng: random.Random) -> bool:
        queue = rng.choice(pool_queues("cpu"))
        store.set_paused(queue, True)
        self.pending.append((time.monotonic() + rng.uniform(0.5, 3.0), queue))
        return True

    def resume_due(self, store: JobStore, everything: bool = False) -> None:
        now = time.monotonic()
        for due, queue in list(self.pending):
            if everything or due <= now:
                store.set_paused(queue, False)
                self.pending.remove((due, queue))


# --- jobs ------------------------------------------------------------------------------


def make_inputs(inputs: Path) -> dict[str, Path]:
    return {
        "short": make_clip(inputs / "short.mp4", duration=1, width=160, height=120),
        "medium": make_clip(inputs / "medium.mp4", duration=4, width=320, height=240),
        "long": make_clip(inputs / "long.mp4", duration=10, width=320, height=240),
    }


def job_mix(rng: random.Random, clips: dict[str, Path]) -> tuple[str, Path, dict, Priority]:
    """One job of the mix: mostly short, some long enough to be caught by a fault."""
    roll = rng.random()
    priority = rng.choice(list(Priority))
    if roll < 0.3:
        return "probe", clips[rng.choice(["short", "medium"])], {}, priority
    if roll < 0.55:
        return "thumbnail", clips[rng.choice(["short", "medium", "long"])], {"count": 2}, priority
    clip = clips[rng.choice(["short", "medium", "long", "long"])]
    return "transcode", clip, {"renditions": [{"height": 120, "preset": "ultrafast"}]}, priority


def submit_through_restarts(store: JobStore, kind: str, clip: Path, params: dict, priority: Priority):
    deadline = time.monotonic() + 60
    while True:
        try:
            return submit(store, kind, clip, params, priority=priority)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- the run -----------------------------------------------------------------------------


def run_soak(root: Path, config: SoakConfig, log=print) -> Report:
    rng = random.Random(config.seed)
    started = time.monotonic()
    farm = Farm(root, config)
    fault_log: list[tuple[float, str]] = []
    submitted: list[str] = []
    recorder: EventRecorder | None = None
    try:
        farm.start()
        recorder = EventRecorder(farm.redis_server.url)
        recorder.start()
        clips = make_inputs(farm.data_dir / "inputs")
        store = farm.store()
        pauser = Pauser()
        injectors = {
            "kill_pool_process": farm.kill_pool_process,
            "restart_worker": farm.restart_worker,
            "kill_beat": farm.kill_beat,
            "restart_redis": farm.restart_redis,
            "pause_resume": lambda r: pauser.pause(store, r),
        }
        weights = {"kill_pool_process": 5, "restart_worker": 2, "kill_beat": 1, "restart_redis": 1, "pause_resume": 2}
        # Submit in a steady stream, a few jobs per fault, so that faults land on running jobs.
        per_fault = max(1, math.ceil(config.jobs / config.faults))
        while len(submitted) < config.jobs or len(fault_log) < config.faults:
            for _ in range(min(per_fault, config.jobs - len(submitted))):
                kind, clip, params, priority = job_mix(rng, clips)
                submitted.append(submit_through_restarts(store, kind, clip, params, priority).id)
            # Each type at least once, then by weight.
            missing = [name for name in FAULTS if name not in {name for _, name in fault_log}]
            name = missing[0] if missing else rng.choices(list(weights), list(weights.values()))[0]
            try:
                if injectors[name](rng):
                    fault_log.append((time.time(), name))
            except Exception as exc:  # a fault that could not be injected is not counted
                log(f"fault {name} not injected: {exc}")
            pause_until = time.monotonic() + config.fault_every_s * rng.uniform(0.5, 1.5)
            while time.monotonic() < pause_until:
                try:
                    pauser.resume_due(store)
                except redis.RedisError:
                    pass
                time.sleep(0.1)
            if len(fault_log) % 10 == 0:
                log(f"  {len(submitted)} jobs submitted, {len(fault_log)} faults")
        log(f"  all {len(submitted)} jobs submitted, {len(fault_log)} faults injected; draining")
        farm.wait_for_restarts()
        _retry_redis(lambda: pauser.resume_due(store, everything=True))
        stuck = _drain(store, submitted, config.drain_timeout_s)
        recorder.stop()
        report = analyse(store, submitted, farm.ledger, fault_log, stuck, time.monotonic() - started,
                         events=recorder.events)
        return report
    finally:
        if recorder is not None:
            recorder.stop()
        farm.stop()


def _retry_redis(call, patience_s: float = 60):
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _drain(store: JobStore, job_ids: list[str], timeout_s: float) -> set[str]:
    deadline = time.monotonic() + timeout_s
    waiting = set(job_ids)
    while waiting and time.monotonic() < deadline:
        for job_id in list(waiting):
            status = _retry_redis(lambda: store.status_of(job_id))
            if status is None or status in TERMINAL_STATUSES:
                waiting.discard(job_id)
        time.sleep(0.5)
    return waiting


def analyse(store: JobStore, job_ids: list[str], ledger: Path, faults: list[tuple[float, str]], stuck: set[str],
            elapsed_s: float, events: list[tuple[float, str, str, str]] = ()) -> Report:
    runs: dict[str, dict] = {}  # token -> {"job", "start", "done", "end"}
    for line in ledger.read_text().splitlines() if ledger.exists() else []:
        at, job_id, token, *event = line.split()
        run = runs.setdefault(token, {"job": job_id, "start": None, "done": None, "end": None})
        if event[0] == "start":
            run["start"] = float(at)
        elif event[0] == "done":
            run["done"] = float(at)
        elif event[0] == "end":
            run["end"] = event[1]
    by_job: dict[str, list[dict]] = defaultdict(list)
    for run in runs.values():
        by_job[run["job"]].append(run)

    by_status: Counter[str] = Counter()
    failed_by_error: Counter[str] = Counter()
    lost = duplicates = replays = double_commits = unaccounted = 0
    notes = []
    for job_id in job_ids:
        try:
            state = store.run_state(job_id)
        except JobNotFound:
            lost += 1
            continue
        job = state.job
        by_status[job.status.value] += 1
        if job.status == JobStatus.failed and job.error is not None:
            failed_by_error[job.error.type] += 1
        if job.status != JobStatus.succeeded:
            continue
        # The store names the attempt that committed the success (the last to leave
        # "running"); the ledger says which runs finished the side effect.
        job_runs = {token: run for token, run in runs.items() if run["job"] == job_id}
        committer = job_runs.get(state.last_token)
        if committer is None or committer["done"] is None:
            unaccounted += 1
            if len(notes) < 5:
                notes.append(f"job {job_id} succeeded, but its committing run left no side-effect marker")
        double_commits += sum(run["end"] == "succeeded" for run in job_runs.values()) > 1
        extra = [run for token, run in job_runs.items() if token != state.last_token and run["done"] is not None]
        died_after_done = [run for run in extra if run["end"] is None]
        replays += len(died_after_done)
        if len(extra) > len(died_after_done):
            duplicates += 1
            if len(notes) < 10:
                notes.append(f"job {job_id}: side effect ran {1 + len(extra)} times: {list(job_runs.values())}")

    # An interrupted run: a "start" without an "end" (its process died). Its job's
    # recovery is the first event after the run's last sign of life that requeues or
    # takes over the job (retrying, failed, or a new claim's running/starting); it is
    # measured from the first fault after that last sign of life (an upper bound).
    fault_times = sorted(at for at, _ in faults)
    events_by_job: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    for at, job_id, status, stage in events:
        events_by_job[job_id].append((at, status, stage))
    recoveries, reruns = [], []
    interrupted = 0
    for job_id, job_runs in by_job.items():
        ordered = sorted((r for r in job_runs if r["start"] is not None), key=lambda r: r["start"])
        for run, following in zip(ordered, ordered[1:] + [None]):
            if run["end"] is not None:
                continue
            interrupted += 1
            seen = [e for e in events_by_job.get(job_id, []) if e[0] >= run["start"]]
            recovery = next((e for e in seen if e[1] in ("retrying", "failed")
                             or (e[1] == "running" and e[2] == "starting" and e[0] > run["start"] + 0.05)), None)
            if recovery is None:
                continue
            last_alive = max([run["start"]] + [e[0] for e in seen if e[0] < recovery[0]])
            cause = next((t for t in fault_times if last_alive <= t <= recovery[0]), last_alive)
            recoveries.append(recovery[0] - cause)
            if following is not None and following["start"] >= cause:
                reruns.append(following["start"] - cause)
    recoveries.sort()
    reruns.sort()

    def pct(values, p):
        if not values:
            return None
        return values[min(len(values) - 1, math.ceil(p * len(values)) - 1)]

    return Report(jobs=len(job_ids), by_status=dict(by_status), failed_by_error=dict(failed_by_error),
                  faults=dict(Counter(name for _, name in faults)), duplicates=duplicates, replays=replays,
                  double_commits=double_commits, unaccounted=unaccounted, lost=lost, stuck=len(stuck), runs=len(runs),
                  interrupted_runs=interrupted, recover_p50_s=pct(recoveries, 0.5),
                  recover_p99_s=pct(recoveries, 0.99), recover_max_s=recoveries[-1] if recoveries else None,
                  rerun_p50_s=pct(reruns, 0.5), rerun_p99_s=pct(reruns, 0.99), elapsed_s=elapsed_s,
                  notes=notes[:20] + [f"stuck: {sorted(stuck)[:10]}"] * bool(stuck))
