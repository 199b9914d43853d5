"""Tracing: one job's spans (API request, publish, worker run, ffprobe/ffmpeg) share
one trace across the API and worker processes, exported over OTLP/HTTP to a real
OpenTelemetry Collector (built from Go modules: tests/support/otelcol.py), whose
file exporter the test reads. A retried job's runs are linked. Without an OTLP
endpoint no SDK is set up."""

from __future__ import annotations

import httpx
import pytest

from renderfarm.core.apikeys import ALL_SCOPES, create_api_key
from tests.support.flaky import FlakyServer
from tests.support.media import make_clip
from tests.support.otelcol import Collector
from tests.support.procs import RedisServer, rf_env, start_api, start_worker, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def collector(tmp_path):
    running = Collector(tmp_path / "otelcol")
    yield running
    running.close()


def test_one_jobs_spans_share_a_trace_across_processes(tmp_path, collector):
    receiver = collector
    redis_server = RedisServer(tmp_path / "redis").start()
    data_dir = tmp_path / "farm"
    env = rf_env(redis_server.url, data_dir, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                 OTEL_BSP_SCHEDULE_DELAY="100")
    started = []
    try:
        api, base = start_api(env)
        started.append(api)
        started.append(start_worker(env, pool="cpu"))
        key = create_api_key(redis_server.client(), tenant="ops", scopes=ALL_SCOPES)
        clip = make_clip(data_dir / "inputs" / "clip.mp4", duration=1, width=160, height=120)
        response = httpx.post(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                              json={"kind": "probe", "input": clip.as_uri()})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]

        ours = ("submit", "publish", "run probe", "ffprobe")

        def job_trace():
            submit = [s for s in receiver.spans if s["name"] == "submit" and s["attrs"].get("renderfarm.job_id") == job_id]
            if not submit:
                return None
            trace = [s for s in receiver.spans if s["trace_id"] == submit[0]["trace_id"]]
            return trace if set(ours) <= {s["name"] for s in trace} else None

        trace = wait_for(job_trace, 60, what="the job's spans at the receiver", interval=0.5)
        for name in ours:
            assert [s["name"] for s in trace].count(name) == 1, (name, trace)
        by_name = {s["name"]: s for s in trace if s["name"] in ours}
        by_id = {s["span_id"]: s for s in trace}
        assert by_name["submit"]["service"] == by_name["publish"]["service"] == "renderfarm-api"
        assert by_name["run probe"]["service"] == by_name["ffprobe"]["service"] == "renderfarm-worker"
        # parent links: the API's request span -> submit -> publish -> run -> ffprobe
        assert by_id[by_name["submit"]["parent"]]["service"] == "renderfarm-api", trace
        assert by_name["publish"]["parent"] == by_name["submit"]["span_id"], trace
        assert by_name["run probe"]["parent"] == by_name["publish"]["span_id"], trace
        assert by_name["ffprobe"]["parent"] == by_name["run probe"]["span_id"], trace
        for name in ("submit", "publish", "run probe"):
            assert by_name[name]["attrs"]["renderfarm.job_id"] == job_id, name
        assert by_name["run probe"]["attrs"]["renderfarm.queue"] == "cpu.normal"
        assert by_name["run probe"]["attrs"]["renderfarm.kind"] == "probe"
    finally:
        for proc in reversed(started):
            proc.stop()
        redis_server.stop()


def test_a_retried_job_runs_twice_in_its_trace_and_the_second_run_links_to_the_first(tmp_path, collector):
    """A job whose input fails once (503: transient) and then succeeds: two `run probe`
    spans, attempts 1 and 2, both children of the API's publish in the job's one trace,
    and the second carries a span link to the first (the store kept its context)."""
    receiver = collector
    redis_server = RedisServer(tmp_path / "redis").start()
    data_dir = tmp_path / "farm"
    clip = make_clip(data_dir / "inputs" / "clip.mp4", duration=1, width=160, height=120)
    flaky = FlakyServer(clip.read_bytes(), failures=1)
    env = rf_env(redis_server.url, data_dir, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                 OTEL_BSP_SCHEDULE_DELAY="100", RF_ALLOW_PRIVATE_FETCH="true")
    started = []
    try:
        api, base = start_api(env)
        started.append(api)
        started.append(start_worker(env, pool="cpu"))
        key = create_api_key(redis_server.client(), tenant="ops", scopes=ALL_SCOPES)
        headers = {"Authorization": f"Bearer {key}"}
        response = httpx.post(f"{base}/v1/jobs", headers=headers, json={"kind": "probe", "input": flaky.url})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        final = wait_for(lambda: (j := httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers).json())["status"]
                         in ("succeeded", "failed") and j, 60, what="the job to finish", interval=0.5)
        assert final["status"] == "succeeded" and final["attempts"] == 2, final

        def runs():
            found = [s for s in receiver.spans if s["name"] == "run probe" and s["attrs"].get("renderfarm.job_id") == job_id]
            return found if len(found) == 2 else None

        first, second = sorted(wait_for(runs, 30, what="both runs' spans at the receiver", interval=0.5),
                               key=lambda s: s["attrs"]["renderfarm.attempt"])
        assert (first["attrs"]["renderfarm.attempt"], second["attrs"]["renderfarm.attempt"]) == (1, 2)
        publish = [s for s in receiver.spans if s["name"] == "publish" and s["attrs"].get("renderfarm.job_id") == job_id]
        assert len(publish) == 1
        assert first["trace_id"] == second["trace_id"] == publish[0]["trace_id"]
        assert first["parent"] == second["parent"] == publish[0]["span_id"], "a retry is a sibling, not a child"
        assert first["links"] == []
        assert second["links"] == [{"trace_id": first["trace_id"], "span_id": first["span_id"],
                                    "attrs": {"renderfarm.link": "previous_attempt"}}]
    finally:
        for proc in reversed(started):
            proc.stop()
        flaky.close()
        redis_server.stop()


def test_without_an_endpoint_no_sdk_is_set_up(monkeypatch):
    from opentelemetry import trace

    from renderfarm.core import tracing

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setattr(tracing, "_configured_pid", None)
    assert tracing.setup("renderfarm-test") is False
    with tracing.span("x") as span:
        assert not span.get_span_context().is_valid  # the API's no-op span
        assert tracing.inject() == {}
    assert not type(trace.get_tracer_provider()).__module__.startswith("opentelemetry.sdk")
