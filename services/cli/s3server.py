"""A local S3-compatible server: SeaweedFS ``weed server -s3`` (master, volume,
filer and S3 gateway in one process) on free loopback ports, with one identity.

Used by the test session (tests/conftest.py) and ``renderfarm local --s3``. The
binary is built from Go modules by ``k8s/dev/build-s3.sh`` (``make s3-tools``)
into a cache folder keyed by the version in ``k8s/dev/versions.env``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "k8s" / "dev" / "versions.env"
_KEYS = re.compile(r"^(SEAWEEDFS_VERSION|S3_BUILD_REV)=")


def weed_binary() -> Path:
    """Where build-s3.sh puts ``weed`` (the same cache key: its two version lines)."""
    override = os.environ.get("RF_WEED_BIN")
    if override:
        return Path(override)
    lines = [line.rstrip() for line in VERSIONS_FILE.read_text().splitlines() if _KEYS.match(line)]
    key = hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()[:12]
    root = Path(os.environ.get("RF_K8S_CACHE") or Path.home() / ".cache" / "renderfarm" / "k8s")
    return root / f"s3-{key}" / "bin" / "weed"


def _free_ports(count: int) -> list[int]:
    """Distinct free ports (held open together so none is handed out twice)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class WeedS3:
    """One ``weed server`` with the S3 gateway; ``endpoint`` once started."""

    def __init__(self, workdir: Path, *, access_key: str, secret_key: str, buckets: list[str] = (),
                 binary: Path | None = None, log_path: Path | None = None):
        self.workdir = Path(workdir)
        self.access_key, self.secret_key = access_key, secret_key
        self.buckets = list(buckets)
        self.binary = Path(binary or weed_binary())
        self.log_path = log_path or self.workdir / "weed.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def identity_config(self) -> dict:
        return {"identities": [{
            "name": "renderfarm",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}

    def command(self) -> list[str]:
        master, volume, filer, s3, master_g, volume_g, filer_g, s3_g = _free_ports(8)
        self.port = s3
        data = self.workdir / "data"
        return [
            str(self.binary), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={master}", f"-master.port.grpc={master_g}", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64", "-volume.max=16",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_g}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-s3.config={self.workdir / 's3.json'}", "-s3.autoCreateBucket=false",
        ]

    def start(self, timeout_s: float = 90.0) -> "WeedS3":
        if not self.binary.is_file():
            raise FileNotFoundError(f"{self.binary} is missing: run `make s3-tools` (k8s/dev/build-s3.sh)")
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps(self.identity_config()))
        config.chmod(0o600)
        args = self.command()
        self.proc = subprocess.Popen(args, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.workdir)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))

    def _wait_ready(self, timeout_s: float) -> None:
        """Ready = the gateway answers a signed request and each bucket exists; the
        first bucket creations can fail while the volume server registers."""
        client = self.client()
        deadline = time.monotonic() + timeout_s
        pending = list(self.buckets)
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                client.list_buckets()
                while pending:
                    self._create_bucket(client, pending[0])
                    pending.pop(0)
                # Writes need a volume: probe one object in and out.
                if self.buckets:
                    client.put_object(Bucket=self.buckets[0], Key=".ready", Body=b"ok")
                    client.delete_object(Bucket=self.buckets[0], Key=".ready")
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.25)
        raise TimeoutError(f"weed S3 gateway not ready after {timeout_s}s: {last!r}\n{self.log_tail()}")

    @staticmethod
    def _create_bucket(client, bucket: str) -> None:
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass

    def env(self, bucket: str, prefix: str = "renderfarm", **extra: str) -> dict[str, str]:
        """RF_* settings that point the farm's storage edge at this server."""
        return {
            "RF_STORAGE_BACKEND": "s3",
            "RF_S3_ENDPOINT": self.endpoint,
            "RF_S3_REGION": "us-east-1",
            "RF_S3_BUCKET": bucket,
            "RF_S3_PREFIX": prefix,
            "RF_S3_ACCESS_KEY_ID": self.access_key,
            "RF_S3_SECRET_ACCESS_KEY": self.secret_key,
            "RF_S3_PATH_STYLE": "true",
            **extra,
        }
