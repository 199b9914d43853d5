"""Settings for every renderfarm process, read from the environment (``RF_`` prefix)."""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_csv(value: object) -> object:
    # Lists come from the environment as comma-separated text: RF_API_KEYS=a,b
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RF_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: SecretStr | None = None
    # Redis calls from the API must fail fast: "Redis down" answers 503 within 1 s.
    redis_socket_timeout_s: float = 0.5

    data_dir: Path = Path("./data")
    # file:// inputs must resolve (symlinks followed) under one of these roots.
    # Empty means "<data_dir>/inputs" only.
    allowed_input_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    # Plain keys accepted from the environment are hashed at load and never kept;
    # RF_API_KEY_HASHES takes sha256 hex digests directly (what a Secret should hold).
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    api_key_hashes: Annotated[list[str], NoDecode] = Field(default_factory=list)

    retention_seconds: int = 7 * 24 * 3600
    # Low priority ages: a message waiting longer than this moves up one priority.
    aging_seconds: int = 600
    # How often beat runs maintenance (expiry, aging, orphan recovery).
    maintenance_interval_s: float = 30.0

    http_max_download_bytes: int = 2 * 1024**3
    http_timeout_s: float = 30.0
    # Private, loopback, link-local and metadata addresses are refused unless allowed.
    allow_private_fetch: bool = False

    # Signs webhook deliveries (HMAC-SHA256); jobs with a webhook_url need it set.
    webhook_secret: SecretStr | None = None
    # The whole exchange with a receiver (connect to last byte read) is bounded by
    # this, and at most this much of its answer is read.
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_max_response_bytes: int = Field(default=64 * 1024, ge=1)
    # Deliveries in flight at once (beat's sender thread).
    webhook_concurrency: int = Field(default=8, ge=1)

    # Job event streams (SSE): a keep-alive comment after this long without an event
    # (proxies drop idle connections), and a stream ends after its lifetime; the
    # client reconnects with Last-Event-ID and misses nothing.
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    sse_max_lifetime_s: float = Field(default=300.0, gt=0)

    worker_heartbeat_s: float = 5.0
    # Each worker serves /metrics here (0 = off); the chart sets it, tests pick a free port.
    worker_metrics_port: int = 0
    # The lease of a running job: its run renews it several times a second; a job
    # whose run has not renewed it for this long is retried (or failed, its attempts
    # spent) by beat, or taken over by a redelivered message.
    orphan_after_s: float = 30.0
    # Fault tests and the soak only: each run appends "start", "done" (workload
    # finished, outputs published) and "end <outcome>" lines here, so runs can be
    # counted from outside. Unset in production.
    run_ledger: Path | None = None

    # GPU workloads (see renderfarm.worker.workloads)
    whisper_model: str = ""
    whisper_device: str = "auto"
    whisper_compute_type: str = "auto"
    vision_device: str = "auto"
    # torch threads for TransNetV2 on the CPU; 0: half the cores this process may use
    # (at least 1), leaving the rest to the ffmpeg decoder that feeds it.
    vision_threads: int = Field(default=0, ge=0)

    # /v1/pools reads and patches the WorkerPools of this namespace (the chart sets it
    # to the pod's own). Empty: no Kubernetes (``make run``), and /v1/pools shows the local pools read-only.
    pools_namespace: str = ""
    # Kubeconfig for /v1/pools outside a cluster; empty: the pod's ServiceAccount, else $KUBECONFIG.
    kubeconfig: str = ""

    # Worker recycling (renderfarm.core.recycling): replace a pool process after this
    # many jobs, or after a job leaves it above this resident memory (MB), or (GPU
    # pools) after the GPU memory it holds grew by this much since warm-up (MB).
    # Unset: the pool's default; 0: off.
    max_tasks_per_child: int | None = Field(default=None, ge=0)
    max_memory_per_child_mb: int | None = Field(default=None, ge=0)
    max_gpu_memory_growth_mb: int | None = Field(default=None, ge=0)

    log_level: str = "INFO"
    # A transcode without a `chunking` object runs chunked (as a workflow) when this is set;
    # a source shorter than it is then one chunk. Unset: only an explicit `chunking` does.
    chunking_min_duration_s: float | None = Field(default=None, ge=0, le=1e6)
    chunking_chunk_duration_s: float = Field(default=30.0, ge=1.0, le=3600.0)

    @field_validator("allowed_input_roots", "api_keys", "api_key_hashes", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @cached_property
    def input_roots(self) -> list[Path]:
        roots = self.allowed_input_roots or [self.data_dir / "inputs"]
        return [Path(root).resolve() for root in roots]

    @property
    def outputs_dir(self) -> Path:
        return (self.data_dir / "outputs").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
