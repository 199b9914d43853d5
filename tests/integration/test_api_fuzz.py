"""API fuzzing: schemathesis generates requests from the app's own OpenAPI schema
and sends them to a real API process backed by a real redis-server.

Every response must be below 500 and match what the schema documents for that
route (status code, content type, body schema). A response the schema does not
document is fixed in the schema (``responses=`` with the error model), never by
dropping a check. Each run is bounded in wall time; the figures (cases, seconds)
are printed (``pytest -s``) and kept in the JSON report next to the API's log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from renderfarm.core.apikeys import Scope, create_api_key
from tests.support.media import make_clip
from tests.support.procs import start_api

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
OPERATOR_KEY = "fuzz-operator-key-0123456789"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture
def api(rf_settings_env, data_dir):
    make_clip(data_dir / "inputs" / "clip.mp4", duration=1)
    # Short event streams: a fuzzed request that opens one must not hold the run.
    env = dict(rf_settings_env, RF_API_KEYS=OPERATOR_KEY, RF_SSE_MAX_LIFETIME_S="1", RF_SSE_KEEPALIVE_S="0.5")
    proc, base = start_api(env)
    try:
        yield base, proc
    finally:
        proc.stop()


def fuzz(base: str, key: str | None, report: Path, max_time_s: int) -> dict:
    auth = ["--header", f"Authorization: Bearer {key}"] if key else []
    argv = [str(SCHEMATHESIS), "run", f"{base}/openapi.json", "--checks", CHECKS, *auth,
            "--workers", "1", "--max-time", str(max_time_s),
            "--request-timeout", "10", "--report", "json", "--report-json-path", str(report)]
    # Run in the report's folder: schemathesis keeps a cache folder in its working directory.
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=max_time_s + 120, cwd=report.parent)
    assert report.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(report.read_text())
    failures, errors = (len(v) if isinstance(v, list) else int(v) for v in (result["failures"], result["errors"]))
    print(f"\nschemathesis ({(key or 'no key')[:12]}…): {result['test_cases']['generated']} cases in "
          f"{result['running_time']:.0f} s, {result['operations']['tested']} operations, "
          f"{failures} failures, {errors} errors, seed {result['seed']}")
    # The whole output on failure: each failure comes with a curl line to reproduce it.
    assert proc.returncode == 0 and failures == 0 and errors == 0, proc.stdout[-12000:]
    return result


@pytest.mark.parametrize(("who", "max_time_s"), [("operator", 60), ("tenant", 30), ("anonymous", 10)])
def test_every_response_is_documented_and_none_is_a_server_error(api, redis_client, tmp_path, who, max_time_s):
    """As the operator (every scope), as a tenant with the jobs scope only (the admin
    routes answer 403, which must be documented too) and without a key (401s)."""
    base, proc = api
    keys = {"operator": lambda: OPERATOR_KEY, "anonymous": lambda: None,
            "tenant": lambda: create_api_key(redis_client, "fuzz-tenant", {Scope.jobs})}
    key = keys[who]()
    result = fuzz(base, key, tmp_path / f"schemathesis-{who}.json", max_time_s)
    assert result["operations"]["tested"] >= 15
    assert result["test_cases"]["generated"] >= 100
    assert "Traceback" not in proc.log(), proc.log()[-3000:]
