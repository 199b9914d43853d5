"""Flower, unchanged, against the farm's broker: it lists the farm's workers and,
with task events switched on by Flower itself (the workers allow remote control),
the tasks they ran, through Flower's HTTP API."""

from __future__ import annotations

import httpx
import pytest

from renderfarm.core.apikeys import ALL_SCOPES, create_api_key
from renderfarm.core.kinds import KINDS
from tests.support.media import make_clip
from tests.support.procs import (PYTHON, RedisServer, ServiceProcess, free_port, rf_env, start_api, start_worker,
                                 wait_for)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def farm_with_flower(tmp_path):
    redis_server = RedisServer(tmp_path / "redis").start()
    data_dir = tmp_path / "farm"
    env = rf_env(redis_server.url, data_dir)
    started = []
    try:
        api, base = start_api(env)
        started.append(api)
        worker_name = f"cpu@flower-{free_port()}"
        started.append(start_worker(env, pool="cpu", name=worker_name))
        port = free_port()
        flower = ServiceProcess([PYTHON, "-m", "celery", "-A", "renderfarm.worker.celery_app:app", "flower",
                                 "--address=127.0.0.1", f"--port={port}"],
                                dict(env, FLOWER_UNAUTHENTICATED_API="true"), data_dir / "logs" / "flower.log").start()
        started.append(flower)
        flower_base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{flower_base}/healthcheck", timeout=2).status_code == 200 or not flower.alive(),
                 60, what="flower")
        assert flower.alive(), flower.log()[-3000:]
        key = create_api_key(redis_server.client(), tenant="ops", scopes=ALL_SCOPES)
        yield {"base": base, "headers": {"Authorization": f"Bearer {key}"}, "flower": flower_base,
               "worker": worker_name, "data_dir": data_dir, "flower_proc": flower}
    finally:
        for proc in reversed(started):
            proc.stop()
        redis_server.stop()


def test_flower_shows_the_farms_workers_and_tasks(farm_with_flower):
    farm = farm_with_flower
    flower = farm["flower"]
    workers = wait_for(lambda: httpx.get(f"{flower}/api/workers", params={"refresh": "1"}, timeout=10).json(), 60,
                       what="workers in flower", interval=1)
    assert farm["worker"] in workers, (list(workers), farm["flower_proc"].log()[-2000:])
    consumed = {q["name"] for q in workers[farm["worker"]].get("active_queues", [])}
    assert consumed == {"cpu.critical", "cpu.high", "cpu.normal", "cpu.low"}

    clip = make_clip(farm["data_dir"] / "inputs" / "clip.mp4", duration=1, width=160, height=120)

    def task_seen():
        # Flower enables task events on the workers when it starts; a job submitted
        # before that reached them is simply not shown, so submit until one is.
        response = httpx.post(f"{farm['base']}/v1/jobs", headers=farm["headers"],
                              json={"kind": "probe", "input": clip.as_uri()})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        return wait_for(lambda: [t for t in httpx.get(f"{flower}/api/tasks", timeout=10).json().values()
                                 if job_id in str(t.get("args")) and t.get("state") == "SUCCESS"], 10,
                        what="task in flower", interval=0.5)

    tasks = wait_for(task_seen, 60, what="a job's task in flower", interval=0.5)
    assert tasks[0]["name"] == KINDS["probe"].task_name, tasks[0]
    assert tasks[0]["worker"] == farm["worker"]
