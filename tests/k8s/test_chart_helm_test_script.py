"""The chart's `helm test` commands, run here against real processes: the clip maker's
ffmpeg line, then the probe's key creation and `renderfarm submit probe --wait`
against a real API, a real CPU worker and a real redis-server.

(In the cluster the same commands run in the worker and API images; the real-node
end-to-end test runs `helm test` itself.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.chart import by_kind, render_docs
from tests.support.procs import PYTHON, rf_env, start_api, start_worker


def test_helm_test_script_makes_a_clip_and_its_probe_job_succeeds(k8s_tools, redis_server, tmp_path):
    data = tmp_path / "data"
    (data / "inputs").mkdir(parents=True)
    pod = by_kind(render_docs(k8s_tools / "helm", "--set", f"media.mountPath={data}"), "Pod")["renderfarm-test-probe"]
    make_clip = pod["spec"]["initContainers"][0]
    probe = pod["spec"]["containers"][0]

    proc = subprocess.run(make_clip["command"] + make_clip["args"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (data / "inputs" / "helm-test" / "clip.mp4").stat().st_size > 1000
    assert not (data / "inputs" / "helm-test" / ".clip.tmp").exists()

    env = rf_env(redis_server.url, data)
    api, base = start_api(env)
    worker = start_worker(env, pool="cpu")
    try:
        probe_env = dict(env, RF_API_URL=base, PATH=f"{Path(PYTHON).parent}{os.pathsep}{os.environ['PATH']}")
        proc = subprocess.run(probe["command"] + probe["args"], env=probe_env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "succeeded" in proc.stdout and "probe job" in proc.stdout
    finally:
        worker.stop()
        api.stop()
