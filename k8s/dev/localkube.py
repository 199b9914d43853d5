#!/usr/bin/env python3
"""A real, local Kubernetes control plane for tests and development.

Runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
(simulated nodes, see nodes.yaml) as plain processes, all built from upstream
Go modules by build-tools.sh into a cache folder outside the git clone.
Only those binaries are used (never a kubectl or helm from PATH).

Python standard library only; certificates are made with the openssl CLI.

Library use::

    from localkube import LocalCluster
    with LocalCluster() as cluster:
        cluster.kubectl("get", "nodes", check=True)
        kc = cluster.serviceaccount_kubeconfig("default", "my-sa")

Command line::

    python k8s/dev/localkube.py up       # start detached, print `export KUBECONFIG=...`
    python k8s/dev/localkube.py status
    python k8s/dev/localkube.py down

State of the detached cluster: ${RF_K8S_STATE:-/tmp/renderfarm-localkube}/state.json.
Tool cache: ${RF_K8S_CACHE:-$HOME/.cache/renderfarm/k8s}/<hash of versions.env>/.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import ctypes
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import realnode  # noqa: E402  (k8s/dev/realnode.py: the optional real node)

VERSIONS_FILE = HERE / "versions.env"
BUILD_SCRIPT = HERE / "build-tools.sh"
DEFAULT_NODES_FILE = HERE / "nodes.yaml"

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)
STAGE_FILES = (
    "node-initialize.yaml",
    "node-heartbeat.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_SELECTOR = "kwok.x-k8s.io/node=fake"
CLUSTER_NAME = "renderfarm-local"
# Audit log (LocalCluster.audit_log): one line per request of a ServiceAccount outside
# kube-system, i.e. of the software under test (the operator, charts' pods), so a test
# can count exactly what one client asked of the API server. Control-plane and
# kube-system traffic is not logged.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
              {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
              {"level": "None"}],
}

# How long each process gets after SIGTERM before SIGKILL.  kube-apiserver
# drains for >10 s on SIGTERM; in a throw-away test cluster that is wasted time.
STOP_GRACE_S = {"kube-apiserver": 1.0, "etcd": 3.0}
DEFAULT_STOP_GRACE_S = 3.0
# start order; stop runs in reverse
# (the real node's processes last: kubelet stops first, so it restarts nothing)
PROCESS_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
                 "containerd", "coredns", "kube-proxy", "kubelet")


class LocalClusterError(RuntimeError):
    """The local cluster could not be built, started or used."""


class CommandError(subprocess.CalledProcessError):
    """A kubectl/helm call failed (raised when check=True); shows stderr."""

    def __str__(self) -> str:  # pragma: no cover - message formatting
        return (
            f"{' '.join(map(str, self.cmd))} exited {self.returncode}\n"
            f"stdout: {(self.stdout or '').strip()[-2000:]}\n"
            f"stderr: {(self.stderr or '').strip()[-2000:]}"
        )


# --------------------------------------------------------------------------
# tool cache


def versions() -> dict[str, str]:
    """The pinned versions from versions.env."""
    out: dict[str, str] = {}
    for line in _version_lines():
        key, _, value = line.partition("=")
        out[key] = value
    return out


# The lines of versions.env that key the tool cache (build-tools.sh: TOOL_KEYS);
# the real node's lines have a cache of their own (node_cache_dir).
TOOL_KEYS = ("KUBERNETES_VERSION", "ETCD_VERSION", "KWOK_VERSION", "HELM_VERSION")


def _version_lines(keys: Iterable[str] | None = None) -> list[str]:
    lines = VERSIONS_FILE.read_text().splitlines()
    out = [ln.rstrip() for ln in lines if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", ln)]
    if keys is not None:
        wanted = set(keys)
        out = [ln for ln in out if ln.partition("=")[0] in wanted]
    return out


def cache_dir() -> Path:
    """The tool cache folder for the pinned versions (same key as build-tools.sh)."""
    key = hashlib.sha256(("\n".join(_version_lines(TOOL_KEYS)) + "\n").encode()).hexdigest()[:12]
    root = os.environ.get("RF_K8S_CACHE") or str(Path.home() / ".cache" / "renderfarm" / "k8s")
    return Path(root) / key


def tools_ready(directory: Path | None = None) -> bool:
    directory = directory or cache_dir()
    return (
        (directory / ".complete").is_file()
        and all(os.access(directory / "bin" / b, os.X_OK) for b in BINARIES)
        and all((directory / "stages" / s).is_file() for s in STAGE_FILES)
    )


def ensure_tools() -> Path:
    """Build the binaries with build-tools.sh unless cached; return the bin dir."""
    directory = cache_dir()
    if not tools_ready(directory):
        print(f"localkube: building the Kubernetes tools into {directory} (first use, ~11 min on 2 cores)",
              file=sys.stderr, flush=True)
        proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=2, stderr=subprocess.STDOUT)
        if proc.returncode != 0 or not tools_ready(directory):
            raise LocalClusterError(f"{BUILD_SCRIPT} failed (exit {proc.returncode}); see its output above")
    return directory / "bin"


# --------------------------------------------------------------------------
# helpers


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_bytes()[-64 * 1024:]
    except OSError:
        return "(no log)"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


_ERROR_LINE = re.compile(r'^(E\d{4}|F\d{4}|Error\b|error:)|"level":"(error|fatal|panic)"|level=(ERROR|FATAL)|^panic:')


def _log_excerpt(path: Path, lines: int = 40) -> str:
    """Error lines (first few) plus the tail of a log: the usage text printed
    after a bad flag would otherwise hide the message."""
    try:
        text = path.read_bytes()[-512 * 1024:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    errors = [ln for ln in text.splitlines() if _ERROR_LINE.search(ln)][:8]
    tail = _tail(path, lines)
    if errors:
        return "error lines:\n" + "\n".join(errors) + "\n... last lines:\n" + tail
    return tail


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Ask Linux to SIGKILL this child when the process that started it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, not Linux, ...
        pass


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _pid_cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def _signal_tree(pid: int, sig: int) -> None:
    """Signal the process group the process leads (it was started with setsid)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate_pids(pids: dict[str, int], exited: Any = None) -> None:
    """SIGTERM all, give each its grace period, then SIGKILL what is left.

    exited(name, pid) tells whether a process is gone (for our own children it
    must reap them, so that a recycled pid is never signalled).
    """
    if exited is None:
        def exited(name: str, pid: int) -> bool:
            return not _pid_alive(pid)
    order = [n for n in reversed(PROCESS_ORDER) if n in pids] + [n for n in pids if n not in PROCESS_ORDER]
    for name in order:
        if not exited(name, pids[name]):
            _signal_tree(pids[name], signal.SIGTERM)
    start = time.monotonic()
    for name in order:
        pid = pids[name]
        deadline = start + STOP_GRACE_S.get(name, DEFAULT_STOP_GRACE_S)
        while not exited(name, pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not exited(name, pid):
            _signal_tree(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(exited(n, p) for n, p in pids.items()):
        time.sleep(0.05)


def _run_openssl(cwd: Path, *args: str) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LocalClusterError(f"openssl {' '.join(args)} failed:\n{proc.stderr.strip()}")


WORKDIR_PREFIX = "rf-localkube-"


def _remove_stale_workdirs() -> None:
    """Remove work folders left by a test process that was killed (its
    processes died with it through PR_SET_PDEATHSIG, the folder did not)."""
    for path in Path(tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            owner = int((path / "owner.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(path, ignore_errors=True)


_LIVE: set["LocalCluster"] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        clusters = list(_LIVE)
    for cluster in clusters:
        try:
            cluster.stop()
        except Exception:  # noqa: BLE001 - nothing else to do at exit
            pass


# --------------------------------------------------------------------------
# the cluster


class LocalCluster:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok nodes.

    All files (certificates, kubeconfigs, etcd data, logs) live in one
    temporary folder, removed by stop().  Processes are stopped by stop(), by
    the context manager, at interpreter exit (atexit), and - on Linux - by the
    kernel if the Python process dies (PR_SET_PDEATHSIG), unless detach=True
    (used by `localkube.py up`).
    """

    def __init__(
        self,
        nodes_file: str | os.PathLike[str] | None = None,
        *,
        workdir: str | os.PathLike[str] | None = None,
        keep_workdir: bool | None = None,
        detach: bool = False,
        ready_timeout: float = 90.0,
        real_node: bool = False,
        images: Iterable[str] = (),
    ) -> None:
        """real_node: add one real node (kubelet + containerd, realnode.py) in place
        of the simulated CPU nodes; the GPU nodes stay simulated.  images: local
        image references (buildah's store) to import into its containerd."""
        self.real_node = real_node
        self.images = list(images)
        self.node: realnode.RealNode | None = None
        self.node_left: list[str] = []
        self.nodes_file = Path(nodes_file) if nodes_file else DEFAULT_NODES_FILE
        self._cache_dir = cache_dir()
        self._workdir_arg = Path(workdir) if workdir else None
        if keep_workdir is None:
            keep_workdir = os.environ.get("RF_K8S_KEEP", "") not in ("", "0")
        self.keep_workdir = keep_workdir
        self.detach = detach
        self.ready_timeout = ready_timeout
        self.workdir: Path | None = None
        self.ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.startup_seconds: float | None = None
        self.timings: dict[str, float] = {}
        self._started = False

    # -- properties -----------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        return self._cache_dir / "bin"

    @property
    def stages_dir(self) -> Path:
        return self._cache_dir / "stages"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (O=system:masters)."""
        return self._dir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self._dir / "pki" / "ca.crt"

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise LocalClusterError("cluster not started")
        return self.workdir

    def log_file(self, name: str) -> Path:
        return self._dir / "logs" / f"{name}.log"

    @property
    def audit_log(self) -> Path:
        """JSON lines (audit.k8s.io/v1 Event) for ServiceAccount requests; see AUDIT_POLICY."""
        return self._dir / "logs" / "audit.log"

    def _audit_args(self) -> list[str]:
        policy = self._dir / "pki" / "audit-policy.json"
        policy.write_text(json.dumps(AUDIT_POLICY))
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=100", "--audit-log-maxbackup=1"]

    # -- context manager -------------------------------------------------
    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start -------------------------------------------------------------
    def start(self) -> "LocalCluster":
        if self._started:
            return self
        ensure_tools()
        t0 = self._t0 = time.monotonic()
        if self._workdir_arg:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            self.workdir = self._workdir_arg
        else:
            _remove_stale_workdirs()
            self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        (self.workdir / "owner.pid").write_text(f"{os.getpid()}\n")
        for sub in ("pki", "logs", "etcd", "kubeconfigs", "helm", "kube-cache"):
            (self.workdir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self._started = True
        if not self.detach:
            with _LIVE_LOCK:
                _LIVE.add(self)
        try:
            self._make_pki()
            etcd_client, etcd_peer, api, cm, sched, kwok = _free_ports(6)
            self.ports = {"etcd": etcd_client, "etcd-peer": etcd_peer, "apiserver": api,
                          "controller-manager": cm, "scheduler": sched, "kwok": kwok}
            self._write_kubeconfigs()
            self._mark("pki")
            if self.real_node:
                self.node = realnode.RealNode(self, images=self.images, detach=self.detach)
                self.node.prepare()
            self._start_etcd()
            self._wait("etcd", self._etcd_healthy, 30)
            self._mark("etcd")
            self._start_apiserver()
            self._wait("kube-apiserver", self._apiserver_ready, 60)
            self._mark("apiserver")
            self._start_controller_manager()
            self._start_scheduler()
            self._start_kwok()
            self.kubectl("apply", "-f", "-", input=self.nodes_manifest(), check=True)
            if self.node is not None:
                self.node.start()
                self._mark("real-node")
            self._wait("nodes", self._all_ready, self.ready_timeout)
            self._mark("ready")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _mark(self, what: str) -> None:
        """Record seconds since start() began (after the tool check)."""
        self.timings[what] = round(time.monotonic() - self._t0, 2)

    def _key(self, name: str) -> None:
        _run_openssl(self._dir / "pki", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-out", f"{name}.key")

    def _leaf(self, name: str, subject: str, usage: str, sans: Iterable[str] = ()) -> None:
        """A key and a certificate signed by the cluster CA (pki/NAME.key, pki/NAME.crt)."""
        pki = self._dir / "pki"
        self._key(name)
        ext = ["basicConstraints = critical,CA:FALSE",
               "keyUsage = critical,digitalSignature,keyEncipherment",
               f"extendedKeyUsage = {usage}",
               "authorityKeyIdentifier = keyid"]
        if sans:
            ext.append("subjectAltName = " + ",".join(sans))
        (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
        _run_openssl(pki, "req", "-new", "-key", f"{name}.key", "-subj", subject,
                     "-config", "openssl.cnf", "-out", f"{name}.csr")
        _run_openssl(pki, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-set_serial", str(secrets.randbits(63)), "-days", "3650", "-sha256",
                     "-extfile", f"{name}.ext", "-out", f"{name}.crt")

    def _make_pki(self) -> None:
        pki = self._dir / "pki"
        cnf = pki / "openssl.cnf"
        cnf.write_text("[req]\ndistinguished_name = dn\n[dn]\n")
        self._key("ca")
        (pki / "ca.cnf").write_text(
            "[req]\ndistinguished_name = dn\n[dn]\n"
            "[v3_ca]\nbasicConstraints = critical,CA:TRUE\n"
            "keyUsage = critical,digitalSignature,keyEncipherment,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier = hash\n"
        )
        _run_openssl(pki, "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650",
                     "-subj", f"/CN={CLUSTER_NAME}-ca", "-config", "ca.cnf", "-extensions", "v3_ca",
                     "-out", "ca.crt")
        leaf = self._leaf
        leaf("apiserver", "/CN=kube-apiserver", "serverAuth", [
            "IP:127.0.0.1", f"IP:{KUBERNETES_SERVICE_IP}", f"IP:{realnode.NODE_IP}", "DNS:localhost",
            "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ])
        leaf("admin", "/O=system:masters/CN=renderfarm-admin", "clientAuth")
        leaf("controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
        leaf("scheduler", "/CN=system:kube-scheduler", "clientAuth")
        # front proxy (aggregation layer); without it controller-manager and
        # scheduler keep logging a missing requestheader CA bundle
        leaf("front-proxy-client", "/CN=front-proxy-client", "clientAuth")
        if self.real_node:
            # kube-apiserver -> kubelet (logs, exec, port-forward)
            leaf("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth")
        self._key("sa")
        _run_openssl(pki, "pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def _kubeconfig_dict(self, user: str, user_entry: dict[str, str]) -> dict[str, Any]:
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CLUSTER_NAME,
                          "cluster": {"server": self.api_url, "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": user_entry}],
            "contexts": [{"name": f"{user}@{CLUSTER_NAME}",
                          "context": {"cluster": CLUSTER_NAME, "user": user, "namespace": "default"}}],
            "current-context": f"{user}@{CLUSTER_NAME}",
        }

    def _write_kubeconfig(self, path: Path, user: str, user_entry: dict[str, str]) -> Path:
        path.write_text(json.dumps(self._kubeconfig_dict(user, user_entry), indent=2) + "\n")
        path.chmod(0o600)
        return path

    def _cert_user(self, name: str) -> dict[str, str]:
        pki = self._dir / "pki"
        return {
            "client-certificate-data": base64.b64encode((pki / f"{name}.crt").read_bytes()).decode(),
            "client-key-data": base64.b64encode((pki / f"{name}.key").read_bytes()).decode(),
        }

    def _write_kubeconfigs(self) -> None:
        self._write_kubeconfig(self.kubeconfig, "admin", self._cert_user("admin"))
        kcs = self._dir / "kubeconfigs"
        for name in ("controller-manager", "scheduler"):
            self._write_kubeconfig(kcs / f"{name}.kubeconfig", name, self._cert_user(name))

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.log_file(name)
        with open(log, "ab") as fh:
            fh.write(f"$ {' '.join(args)}\n".encode())
            fh.flush()
            self.procs[name] = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                start_new_session=True,
                preexec_fn=None if self.detach else _die_with_parent,
            )

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self._spawn("etcd", [
            self._bin("etcd"),
            "--name=localkube",
            f"--data-dir={self._dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=localkube={peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ])

    def _start_apiserver(self) -> None:
        pki = self._dir / "pki"
        self._spawn("kube-apiserver", [
            self._bin("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            f"--secure-port={self.ports['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            f"--cert-dir={pki}",
            "--profiling=false",
            *(realnode.RealNode.apiserver_flags(pki, self.ports["apiserver"]) if self.real_node else [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
            ]),
            *self._audit_args(),
        ])

    def _start_controller_manager(self) -> None:
        pki = self._dir / "pki"
        kc = self._dir / "kubeconfigs" / "controller-manager.kubeconfig"
        self._spawn("kube-controller-manager", [
            self._bin("kube-controller-manager"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['controller-manager']}",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # not its default /usr/libexec/kubernetes/...: nothing outside the work folder
            f"--flex-volume-plugin-dir={self._dir / 'flexvolume'}",
            "--profiling=false",
        ])

    def _start_scheduler(self) -> None:
        kc = self._dir / "kubeconfigs" / "scheduler.kubeconfig"
        self._spawn("kube-scheduler", [
            self._bin("kube-scheduler"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['scheduler']}",
            "--leader-elect=false",
            "--profiling=false",
        ])

    def _start_kwok(self) -> None:
        # one multi-document file with kwok's shipped stages (from the tool cache)
        stages = self._dir / "kwok-stages.yaml"
        stages.write_text("\n---\n".join((self.stages_dir / s).read_text().strip() for s in STAGE_FILES) + "\n")
        self._spawn("kwok", [
            self._bin("kwok"),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_SELECTOR}",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
            "--node-ip=10.244.0.1",
            "--cidr=10.244.0.0/16",
            "--node-lease-duration-seconds=40",
        ])

    # -- readiness -------------------------------------------------------
    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise LocalClusterError(
                    f"{name} exited with code {proc.returncode} during start-up; "
                    f"log {self.log_file(name)}:\n{_log_excerpt(self.log_file(name))}"
                )

    def _wait(self, what: str, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            self._check_alive()
            try:
                ok = check()
                if ok is True:
                    return
                last = ok
            except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
                last = exc
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {name} ({self.log_file(name)}):\n{_log_excerpt(self.log_file(name), 15)}"
                    for name in self.procs
                )
                raise LocalClusterError(f"timed out after {timeout:.0f}s waiting for {what}: {last}\n{logs}")
            time.sleep(0.2)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        pki = self._dir / "pki"
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def api_get(self, path: str) -> Any:
        """GET a path of the API server as admin; the decoded JSON (or text)."""
        with urllib.request.urlopen(self.api_url + path, context=self._ssl_context(), timeout=5) as resp:
            body = resp.read().decode()
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return body

    def _etcd_healthy(self) -> bool | str:
        url = f"http://127.0.0.1:{self.ports['etcd']}/health"
        with urllib.request.urlopen(url, timeout=2) as resp:
            body = json.loads(resp.read())
        return True if body.get("health") == "true" else f"etcd health: {body}"

    def _apiserver_ready(self) -> bool | str:
        body = self.api_get("/readyz")
        return True if body == "ok" else f"/readyz: {body}"

    def _healthz(self, port: int) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2) as resp:
            return resp.read().decode().strip() == "ok"

    def _node_docs(self) -> list[str]:
        """The Node documents of the nodes file; with a real node, the simulated
        CPU nodes are left out (the real node is the CPU node)."""
        docs = []
        for doc in re.split(r"^---\s*$", self.nodes_file.read_text(), flags=re.M):
            if not re.search(r"^kind:\s*Node\s*$", doc, flags=re.M):
                continue
            if self.real_node and re.search(r'renderfarm\.io/pool-class:\s*"?cpu"?', doc):
                continue
            docs.append(doc)
        return docs

    def nodes_manifest(self) -> str:
        return "\n---\n".join(self._node_docs()) + "\n"

    def expected_nodes(self) -> list[str]:
        names = []
        for doc in self._node_docs():
            m = re.search(r"^metadata:\s*\n(?:[ \t]+.*\n)*?[ \t]+name:\s*\"?([\w.-]+)\"?", doc, flags=re.M)
            if m:
                names.append(m.group(1))
        if self.real_node:
            names.append(realnode.NODE_NAME)
        return names

    def _all_ready(self) -> bool | str:
        if not self._healthz(self.ports["controller-manager"]):
            return "kube-controller-manager not healthy"
        if not self._healthz(self.ports["scheduler"]):
            return "kube-scheduler not healthy"
        nodes = self.api_get("/api/v1/nodes")["items"]
        ready = {
            n["metadata"]["name"]
            for n in nodes
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
        }
        missing = set(self.expected_nodes()) - ready
        if missing:
            return f"nodes not Ready yet: {sorted(missing)}"
        # the serviceaccount controller has run: pods can be created in "default"
        try:
            self.api_get("/api/v1/namespaces/default/serviceaccounts/default")
        except urllib.error.HTTPError as exc:
            return f"default service account: {exc}"
        return True

    # -- stop ----------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process (SIGTERM, short grace, SIGKILL) and remove the folder."""
        with _LIVE_LOCK:
            _LIVE.discard(self)
        procs = dict(self.procs)
        if procs:
            _terminate_pids({n: p.pid for n, p in procs.items()},
                            exited=lambda name, pid: procs[name].poll() is not None)
        self.procs = {}
        if self.node is not None:
            # containers, shims, mounts, iptables, netns, cgroups, sysctls, folders
            self.node_left = self.node.stop()
            self.node = None
        if self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._started = False

    # -- using the cluster -----------------------------------------------
    def env(self, kubeconfig: str | os.PathLike[str] | None = None) -> dict[str, str]:
        """Environment for child processes: KUBECONFIG set, helm state in the work folder."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        helm = self._dir / "helm"
        env["HELM_CACHE_HOME"] = str(helm / "cache")
        env["HELM_CONFIG_HOME"] = str(helm / "config")
        env["HELM_DATA_HOME"] = str(helm / "data")
        return env

    def _run(self, cmd: list[str], *, input: str | None, check: bool, timeout: float,
             kubeconfig: str | os.PathLike[str] | None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                              env=self.env(kubeconfig), cwd=self._dir)
        if check and proc.returncode != 0:
            raise CommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def kubectl(self, *args: object, kubeconfig: str | os.PathLike[str] | None = None,
                input: str | None = None, check: bool = False,
                timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the cluster's own kubectl (admin unless kubeconfig is given)."""
        cmd = [self._bin("kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}",
               f"--cache-dir={self._dir / 'kube-cache'}", *map(str, args)]
        return self._run(cmd, input=input, check=check, timeout=timeout, kubeconfig=kubeconfig)

    def kubectl_json(self, *args: object, kubeconfig: str | os.PathLike[str] | None = None) -> Any:
        """kubectl ... -o json, checked, decoded."""
        return json.loads(self.kubectl(*args, "-o", "json", kubeconfig=kubeconfig, check=True).stdout)

    def helm(self, *args: object, kubeconfig: str | os.PathLike[str] | None = None,
             input: str | None = None, check: bool = False,
             timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run the cluster's own helm (admin unless kubeconfig is given)."""
        cmd = [self._bin("helm"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *map(str, args)]
        return self._run(cmd, input=input, check=check, timeout=timeout, kubeconfig=kubeconfig)

    def serviceaccount_kubeconfig(self, namespace: str, name: str, *, duration: str = "2h") -> Path:
        """A kubeconfig authenticating as ServiceAccount namespace/name (token from `kubectl create token`).

        The ServiceAccount must exist.
        """
        token = self.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}",
                             check=True).stdout.strip()
        path = self._dir / "kubeconfigs" / f"sa-{namespace}-{name}.kubeconfig"
        config = self._kubeconfig_dict(f"system:serviceaccount:{namespace}:{name}", {"token": token})
        config["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path

    def __repr__(self) -> str:
        state = f"{self.api_url}, {self.workdir}" if self._started else "stopped"
        return f"<LocalCluster {state}>"


# --------------------------------------------------------------------------
# command line

DEFAULT_IMAGES_ENV = HERE.parent.parent / "build" / "images.env"


def read_images_env(path: str | os.PathLike[str]) -> dict[str, str]:
    """NAME=image:tag lines written by `make images` (empty if the file is missing)."""
    out: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#") and value:
            out[key] = value
    return out


def state_dir() -> Path:
    return Path(os.environ.get("RF_K8S_STATE") or "/tmp/renderfarm-localkube")


def _read_state() -> dict[str, Any] | None:
    try:
        return json.loads((state_dir() / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _state_pids_alive(state: dict[str, Any]) -> dict[str, bool]:
    """Which recorded processes are still ours and alive (guards against reused pids)."""
    out = {}
    cmds = state.get("cmds", {})
    for name, pid in state.get("pids", {}).items():
        out[name] = _pid_alive(pid) and _pid_cmd(pid) == cmds.get(name, str(Path(state["bin_dir"]) / name))
    return out


def _down(state: dict[str, Any]) -> None:
    alive = _state_pids_alive(state)
    pids = {name: pid for name, pid in state.get("pids", {}).items() if alive.get(name)}
    if pids:
        _terminate_pids(pids)
    workdir = state.get("workdir")
    node = realnode.read_state()
    if node and workdir and node.get("workdir") == workdir:
        realnode.reap_stale()  # its processes are stopped: this tears the node down
    if workdir and Path(workdir).is_dir():
        shutil.rmtree(workdir, ignore_errors=True)
    try:
        (state_dir() / "state.json").unlink()
    except FileNotFoundError:
        pass


def cmd_up(args: argparse.Namespace) -> int:
    state = _read_state()
    if state:
        alive = _state_pids_alive(state)
        if alive and all(alive.values()):
            print(f"# already running: {state['api_url']}", file=sys.stderr)
            print(f"export KUBECONFIG={state['kubeconfig']}")
            return 0
        print("# removing a stale cluster", file=sys.stderr)
        _down(state)
    sdir = state_dir()
    sdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="cluster-", dir=sdir))
    images = read_images_env(args.images) if args.real_node else {}
    cluster = LocalCluster(args.nodes, workdir=workdir, detach=True, real_node=args.real_node,
                           images=[v for k, v in images.items() if k != "BASE_IMAGE"])
    cluster.start()
    state = {
        "api_url": cluster.api_url,
        "kubeconfig": str(cluster.kubeconfig),
        "workdir": str(workdir),
        "bin_dir": str(cluster.bin_dir),
        "pids": cluster.pids,
        "cmds": {name: str(p.args[0]) for name, p in cluster.procs.items()},  # type: ignore[index]
        "real_node": args.real_node,
        "timings": cluster.timings,
        "ports": cluster.ports,
        "logs": str(workdir / "logs"),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "startup_seconds": round(cluster.startup_seconds or 0, 1),
    }
    tmp = sdir / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(sdir / "state.json")
    print(f"# local cluster up in {state['startup_seconds']}s: {cluster.api_url} (logs: {state['logs']})",
          file=sys.stderr)
    print(f"# tools: {cluster.bin_dir}; stop with: python3 {__file__} down", file=sys.stderr)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state = _read_state()
    if not state:
        print("# no local cluster recorded", file=sys.stderr)
        return 0
    _down(state)
    print(f"# stopped {state['api_url']}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = _read_state()
    if not state:
        print("not running (no state file)")
        return 1
    alive = _state_pids_alive(state)
    for name, ok in alive.items():
        print(f"{name:25s} pid {state['pids'][name]:>7}  {'running' if ok else 'NOT RUNNING'}")
    print(f"api: {state['api_url']}")
    print(f"export KUBECONFIG={state['kubeconfig']}")
    if not all(alive.values()):
        return 1
    proc = subprocess.run([str(Path(state["bin_dir"]) / "kubectl"), f"--kubeconfig={state['kubeconfig']}",
                           "get", "nodes", "-o", "wide"], capture_output=True, text=True, timeout=30)
    print(proc.stdout or proc.stderr, end="")
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a detached local cluster, print `export KUBECONFIG=...`")
    up.add_argument("--nodes", default=None, help="nodes YAML (default: k8s/dev/nodes.yaml)")
    up.add_argument("--real-node", action="store_true",
                    help=f"add a real node ({realnode.NODE_NAME}: kubelet + containerd; needs root)")
    up.add_argument("--images", default=str(DEFAULT_IMAGES_ENV),
                    help="images to import into the real node (default: build/images.env, if present)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the detached cluster").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show the detached cluster").set_defaults(func=cmd_status)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (LocalClusterError, realnode.RealNodeError) as exc:
        print(f"localkube: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
