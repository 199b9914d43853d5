"""Operator settings from the environment (``RF_`` prefix; RF_REDIS_URL is shared with every process)."""

from __future__ import annotations

import os
import socket
import uuid
from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RF_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: SecretStr | None = None

    # One Redis read and one decision per pool every interval (KEDA polls every 30 s).
    operator_interval_s: float = Field(default=2.0, gt=0.05, le=300)
    # Prometheus metrics; 0 turns the endpoint off.
    operator_metrics_port: int = Field(default=9810, ge=0, le=65535)
    operator_metrics_host: str = "0.0.0.0"
    # Namespace whose WorkerPools this operator serves (a Role is namespaced); empty:
    # the pod's own namespace, else the kubeconfig context's, else "default".
    operator_namespace: str = ""
    # Leader election: only the holder of this Lease scales; the others stand by.
    operator_lease_name: str = "renderfarm-operator"
    operator_lease_namespace: str = ""
    operator_lease_duration_s: float = Field(default=15.0, ge=2)
    operator_identity: str = ""
    # A dead Redis must be noticed within one tick, not hang it.
    operator_redis_timeout_s: float = Field(default=1.0, gt=0)
    operator_api_timeout_s: float = Field(default=5.0, gt=0)
    # Status is written at once when something that matters changes (replicas, backlog,
    # conditions); when only the rates moved (by more than 0.01 jobs/s and 10 %), at most
    # this often.
    operator_status_refresh_s: float = Field(default=30.0, ge=0)
    # With nothing changed, the status (its lastObservedTime) is rewritten this often, so
    # a reader can tell a watched pool from an abandoned one. The operator's own liveness
    # is its probe (scaling loop age), which costs the API server nothing.
    operator_status_heartbeat_s: float = Field(default=300.0, ge=1)
    # The leader renews its Lease this often (no GET: it writes back the object its last
    # write returned); 0: a third of the lease duration. A standby reads it every tick.
    operator_lease_renew_s: float = Field(default=0.0, ge=0)
    # Pools reconciled in parallel within one tick.
    operator_workers: int = Field(default=8, ge=1, le=64)
    log_level: str = "INFO"

    def identity(self) -> str:
        return self.operator_identity or f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{uuid.uuid4().hex[:8]}"


@lru_cache
def get_settings() -> OperatorSettings:
    return OperatorSettings()
