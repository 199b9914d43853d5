"""One real node for the local cluster: containerd + runc + kubelet + kube-proxy + CoreDNS.

Used by localkube.py (`LocalCluster(real_node=True)`, `localkube.py up --real-node`).
Python standard library only.  Needs root (it creates a network namespace, a
bridge, iptables rules and cgroups) and the pieces from build-node.sh.

The host gets back what it had: `snapshot()` of hoststate.py is taken before
anything is touched and written to a state file; teardown undoes every
difference (mounts, network namespaces, links, iptables, sysctls, cgroups, the
fixed folders of kubelet, containerd and CNI).  Teardown runs from stop(); if
the process that started the node dies first (SIGKILL included), a small
guardian process started with the node runs it; and the next start runs it for
a state file whose owner is gone.

Measured traps this handles (MEASURED.md, "A real node"):
- no CAP_SYS_RESOURCE in this VM: containerd's CRI `restrict_oom_score_adj = true`;
- cgroup v1: kubelet `failCgroupV1: false`, `cgroupDriver: cgroupfs`, `failSwapOn: false`;
- eviction thresholds low and image GC off, or kubelet evicts imported images;
- the node IP cannot be loopback, and dummy links fail here: a veth pair into a
  network namespace gives the host side an address (NODE_IP);
- the node stays NotReady until a CNI config exists.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import hoststate

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"
BUILD_NODE = HERE / "build-node.sh"

NODE_NAME = "rf-node-0"
NODE_IP = "10.213.0.1"  # host side of the veth pair: the node's InternalIP
PEER_IP = "10.213.0.2"
HOST_VETH = "rfk-node"
PEER_VETH = "rfk-peer"
NETNS = "rf-localkube-node"
BRIDGE = "rfk0"
POD_CIDR = "10.214.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
NODE_LABELS = {"renderfarm.io/pool-class": "cpu", "renderfarm.io/real-node": "true"}
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns", "pause")
SYSTEM_BINARIES = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip")
CNI_BIN_DIR = Path("/usr/lib/cni")
NODE_KEYS = ("KUBERNETES_VERSION", "COREDNS_VERSION", "NODE_BUILD_REV")


def stale_image_refs(listing: str, keep: Iterable[str], repository: str) -> list[str]:
    """From ``ctr images list`` (REF TYPE DIGEST ...): the older builds of the images
    in ``keep`` (same name under ``repository``, another tag), under every name, the
    ``sha256:`` id names that share their manifest digest included (pure). Images
    whose name is not in ``keep`` at all stay: a cluster started with fewer images
    (one test's node) must not cost the next one its imports."""
    rows = [line.split()[:3] for line in listing.splitlines()[1:]]
    digest_of = {row[0]: row[2] for row in rows if len(row) >= 3}
    keep = set(keep)
    names = {ref.rsplit(":", 1)[0] for ref in keep if ref.startswith(repository)}
    kept = {digest_of[ref] for ref in keep if ref in digest_of}
    stale = {digest for ref, digest in digest_of.items()
             if ref.startswith(repository) and ref.rsplit(":", 1)[0] in names and ref not in keep} - kept
    return sorted(ref for ref, digest in digest_of.items() if digest in stale)


class RealNodeError(RuntimeError):
    """The real node could not be set up."""


# --------------------------------------------------------------------------
# cache and state


def _version_lines(keys: Iterable[str]) -> list[str]:
    wanted = set(keys)
    return [ln.rstrip() for ln in VERSIONS_FILE.read_text().splitlines()
            if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", ln) and ln.partition("=")[0] in wanted]


def cache_root() -> Path:
    return Path(os.environ.get("RF_K8S_CACHE") or str(Path.home() / ".cache" / "renderfarm" / "k8s"))


def node_cache_dir() -> Path:
    """The node pieces' cache folder (same key as build-node.sh)."""
    key = hashlib.sha256(("\n".join(_version_lines(NODE_KEYS)) + "\n").encode()).hexdigest()[:12]
    return cache_root() / f"node-{key}"


def containerd_root() -> Path:
    """containerd's root (content store, snapshots) lives in the cache so that
    imported images survive from one cluster to the next."""
    return cache_root() / "node-containerd"


def node_tools_ready() -> bool:
    d = node_cache_dir()
    return (d / ".complete").is_file() and all(os.access(d / "bin" / b, os.X_OK) for b in NODE_BINARIES)


def ensure_node_tools() -> Path:
    if not node_tools_ready():
        print(f"realnode: building the node pieces into {node_cache_dir()} (first use, minutes)",
              file=sys.stderr, flush=True)
        proc = subprocess.run(["bash", str(BUILD_NODE)], stdout=2, stderr=subprocess.STDOUT)
        if proc.returncode != 0 or not node_tools_ready():
            raise RealNodeError(f"{BUILD_NODE} failed (exit {proc.returncode})")
    return node_cache_dir() / "bin"


def check_host() -> None:
    if os.geteuid() != 0:
        raise RealNodeError("a real node needs root (network namespace, bridge, iptables, cgroups)")
    missing = [b for b in SYSTEM_BINARIES if not shutil.which(b)]
    missing += [str(CNI_BIN_DIR / p) for p in ("bridge", "host-local", "loopback", "portmap")
                if not (CNI_BIN_DIR / p).exists()]
    if missing:
        raise RealNodeError(f"missing {missing}: run `k8s/dev/build-node.sh --system-deps` (make node-deps)")


def state_file() -> Path:
    """One real node per host (fixed addresses, kubelet's fixed folders)."""
    return Path(tempfile.gettempdir()) / "renderfarm-localkube-node.json"


def _lock():
    fh = open(Path(tempfile.gettempdir()) / "renderfarm-localkube-node.lock", "w")
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def read_state() -> dict[str, Any] | None:
    try:
        return json.loads(state_file().read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_state(state: dict[str, Any]) -> None:
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    tmp.replace(state_file())


# --------------------------------------------------------------------------
# teardown (also run by the guardian and by the next start)


def _processes_matching(markers: list[str]) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in markers):
            out.append(int(d.name))
    return out


def teardown(state: dict[str, Any]) -> list[str]:
    """Stop everything the node started and undo its host changes; return what still differs."""
    before = state["before"]
    workdir = state["workdir"]
    markers = [workdir + "/"] + [state.get("containerd_address", "\0")]
    # 1. our processes: kubelet, kube-proxy, CoreDNS, containerd and its shims
    #    (shims re-parent to init, so they outlive a killed test process)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _processes_matching(markers):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (3 if sig == signal.SIGTERM else 10)
        while _processes_matching(markers) and time.monotonic() < deadline:
            time.sleep(0.05)
    # 2. the containers themselves (in kubelet's cgroups), then the cgroups
    hoststate.remove_new_cgroups(before)
    # 3. mounts: container rootfs, kubelet's root-dir bind mount and volumes, pod netns
    hoststate.unmount_new(before, [workdir, state.get("containerd_root", workdir), "/run/containerd",
                                   "/run/netns", "/var/lib/kubelet"])
    hoststate.remove_new_netns(before)
    hoststate.remove_new_links(before)
    hoststate.restore_iptables(before)
    hoststate.restore_sysctls(before)
    hoststate.remove_new_cni_cache(before)
    hoststate.remove_new_paths(before)
    hoststate.unmount_new(before, ["/run/netns"])
    shutil.rmtree(workdir + "/node", ignore_errors=True)
    return hoststate.differences(before)


def reap_stale() -> None:
    """Tear down a node whose owner process is gone (killed test run)."""
    state = read_state()
    if not state:
        return
    if state.get("owner_pid") and _pid_alive(state["owner_pid"]):
        raise RealNodeError(f"a real node is already running (owner pid {state['owner_pid']}, "
                            f"work folder {state['workdir']}); one per host")
    if not state.get("owner_pid") and state.get("detached") and _processes_matching([state["workdir"] + "/"]):
        raise RealNodeError(f"a detached cluster with a real node runs ({state['workdir']}): "
                            "`localkube.py down` first")
    with _lock():
        state = read_state()
        if state:
            print(f"realnode: tearing down a stale node from {state['workdir']}", file=sys.stderr)
            teardown(state)
            state_file().unlink(missing_ok=True)


def guard(owner: int) -> int:
    """Run by the guardian: wait for the owner to die, then tear down if it did not."""
    while True:
        state = read_state()
        if not state or state.get("owner_pid") != owner:
            return 0  # stopped normally (or another node replaced it)
        if not _pid_alive(owner):
            with _lock():
                state = read_state()
                if state and state.get("owner_pid") == owner:
                    left = teardown(state)
                    state_file().unlink(missing_ok=True)
                    print(f"realnode guard: owner {owner} died; torn down; left: {left}", flush=True)
            return 0
        time.sleep(0.5)


# --------------------------------------------------------------------------
# the pause image, made here (no registry): an OCI archive for `ctr import`


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def pause_image_archive(pause_bin: Path, ref: str) -> bytes:
    """An OCI image layout tar holding one layer with /pause."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pause")
        data = pause_bin.read_bytes()
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
    layer = layer_buf.getvalue()
    layer_gz = gzip.compress(layer, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }, sort_keys=True).encode()
    cfg_digest, _ = _blob(config)
    layer_digest, _ = _blob(layer_gz)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                    "size": len(layer_gz)}],
    }, sort_keys=True).encode()
    man_digest, _ = _blob(manifest)
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man_digest,
                       "size": len(manifest), "annotations": {"io.containerd.image.name": ref,
                                                              "org.opencontainers.image.ref.name": ref}}],
    }).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for digest, data in ((cfg_digest, config), (layer_digest, layer_gz), (man_digest, manifest)):
            add("blobs/sha256/" + digest.split(":")[1], data)
    return out.getvalue()


# --------------------------------------------------------------------------
# the node


class RealNode:
    """Started by LocalCluster after kube-apiserver is ready; spawns through it."""

    def __init__(self, cluster: Any, *, images: Iterable[str] = (), detach: bool = False) -> None:
        self.cluster = cluster
        self.images = list(images)
        self.detach = detach
        self.dir = cluster.workdir / "node"
        self.bin = node_cache_dir() / "bin"
        self.state: dict[str, Any] | None = None
        self.timings: dict[str, float] = {}
        self.pause_ref = ""

    # paths
    @property
    def address(self) -> str:
        return str(self.dir / "containerd.sock")

    def ctr(self, *args: str, input: bytes | None = None, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(["ctr", "--address", self.address, "-n", "k8s.io", *args], input=input,
                              capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RealNodeError(f"ctr {' '.join(args)}: {proc.stderr.decode(errors='replace')[-2000:]}")
        return proc

    # -- before kube-apiserver: the node IP and certificates --------------
    @staticmethod
    def apiserver_flags(pki: Path, port: int) -> list[str]:
        return [
            "--bind-address=0.0.0.0",
            f"--advertise-address={NODE_IP}",
            # pods reach the API server through the kubernetes Service (10.96.0.1)
            "--endpoint-reconciler-type=lease",
            # logs/exec: dial the node's InternalIP, never resolve its name
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        ]

    def prepare(self) -> None:
        """Before kube-apiserver starts: claim the host, snapshot it, make the node IP."""
        check_host()
        ensure_node_tools()
        reap_stale()
        self.dir.mkdir(parents=True, exist_ok=True)
        with _lock():
            self.state = {
                "owner_pid": None if self.detach else os.getpid(),
                "detached": self.detach,
                "workdir": str(self.cluster.workdir),
                "containerd_address": self.address,
                "containerd_root": str(containerd_root()),
                "before": hoststate.snapshot(),
                "started_at": time.time(),
            }
            _write_state(self.state)
        if not self.detach:
            self._start_guardian()
        self._write("/proc/sys/net/ipv4/ip_forward", "1")
        # Service traffic between two pods on the bridge: the reply must pass
        # through iptables to be un-DNATed
        self._write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1")
        self._sh("ip", "netns", "add", NETNS)
        self._sh("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", PEER_VETH, "netns", NETNS)
        self._sh("ip", "addr", "add", f"{NODE_IP}/30", "dev", HOST_VETH)
        self._sh("ip", "link", "set", HOST_VETH, "up")
        self._sh("ip", "-n", NETNS, "addr", "add", f"{PEER_IP}/30", "dev", PEER_VETH)
        self._sh("ip", "-n", NETNS, "link", "set", PEER_VETH, "up")
        self._sh("ip", "-n", NETNS, "link", "set", "lo", "up")

    def _start_guardian(self) -> None:
        log = open(self.dir / "guardian.log", "ab")
        subprocess.Popen([sys.executable, str(Path(__file__)), "guard", str(os.getpid())],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         cwd="/", start_new_session=True, close_fds=True)
        log.close()

    @staticmethod
    def _write(path: str, value: str) -> None:
        Path(path).write_text(value + "\n")

    @staticmethod
    def _sh(*args: str) -> None:
        proc = subprocess.run(list(args), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RealNodeError(f"{' '.join(args)}: {proc.stderr.strip()}")

    # -- after kube-apiserver is ready --------------------------------------
    def start(self) -> None:
        c = self.cluster
        t0 = time.monotonic()
        self._certs()
        self._start_containerd()
        self._mark("containerd", t0)
        self._import_pause()
        self._clear_stale_containers()
        self.import_images(self.images)
        self.prune_images([*self.images, self.pause_ref])  # the pause image is one of ours too
        self._mark("images", t0)
        self._write_cni()
        self._start_coredns()
        self._start_kube_proxy()
        self._start_kubelet()
        self._mark("kubelet-started", t0)
        c._wait(f"node {NODE_NAME} Ready", self._ready, 90)
        self._mark("node-ready", t0)

    def _mark(self, what: str, t0: float) -> None:
        self.timings[what] = round(time.monotonic() - t0, 2)

    def _certs(self) -> None:
        c = self.cluster
        pki = c.workdir / "pki"
        c._leaf("kubelet", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth")
        c._leaf("kubelet-serving", f"/CN={NODE_NAME}", "serverAuth", [f"IP:{NODE_IP}", f"DNS:{NODE_NAME}"])
        c._leaf("kube-proxy", "/CN=system:kube-proxy", "clientAuth")
        c._leaf("coredns", "/O=system:masters/CN=renderfarm-coredns", "clientAuth")
        for name in ("kubelet", "kube-proxy", "coredns"):
            c._write_kubeconfig(self.dir / f"{name}.kubeconfig", name, c._cert_user(name))
        self.pki = pki

    def _start_containerd(self) -> None:
        root = containerd_root()
        root.mkdir(parents=True, exist_ok=True)
        (self.dir / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        self.pause_ref = f"localhost/renderfarm/pause:{node_cache_dir().name}"
        cfg = self.dir / "containerd.toml"
        cfg.write_text(f"""version = 2
root = "{root}"
state = "{self.dir / 'containerd-state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.address}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.dir / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.pause_ref}"
  # no CAP_SYS_RESOURCE in this VM: without this every sandbox fails in runc
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.dir / 'cni' / 'net.d'}"
""")
        self.cluster._spawn("containerd", ["containerd", f"--config={cfg}", "--log-level=warn"])
        self.cluster._wait("containerd", lambda: self.ctr("version", check=False).returncode == 0, 30)

    def _import_pause(self) -> None:
        if self.pause_ref not in self._image_refs():
            self.ctr("images", "import", "-", input=pause_image_archive(self.bin / "pause", self.pause_ref))

    def _clear_stale_containers(self) -> None:
        """containerd's root persists (images): drop containers a killed run left in it."""
        ids = self.ctr("containers", "list", "-q").stdout.decode().split()
        for cid in ids:
            self.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
            self.ctr("tasks", "delete", "-f", cid, check=False)
            self.ctr("containers", "delete", cid, check=False)

    def _image_refs(self) -> set[str]:
        return set(self.ctr("images", "list", "-q").stdout.decode().split())

    def import_images(self, refs: Iterable[str]) -> list[str]:
        """Import buildah's local images into containerd's k8s.io namespace
        (no registry): `buildah push REF docker-archive:/dev/stdout:REF | ctr import`."""
        have = self._image_refs()
        done = []
        for ref in refs:
            if ref in have:
                continue
            push = subprocess.Popen(["buildah", "push", "-q", ref, f"docker-archive:/dev/stdout:{ref}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            imp = subprocess.run(["ctr", "--address", self.address, "-n", "k8s.io", "images", "import",
                                  "-"], stdin=push.stdout, capture_output=True)
            push.stdout.close()  # type: ignore[union-attr]
            err = push.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
            if push.wait() != 0 or imp.returncode != 0:
                raise RealNodeError(f"import of {ref} failed: {err[-1000:]} {imp.stderr.decode()[-1000:]}")
            done.append(ref)
        return done

    def prune_images(self, keep: Iterable[str], repository: str = "localhost/renderfarm/") -> list[str]:
        """Drop the project's images this node no longer runs. containerd's root lives in
        the cache across clusters, and each source change brings new image tags: left
        alone it grew to 24 GB on one developer machine. An image is named twice (its
        tag, and the ``sha256:`` id the CRI plugin adds), so both names go, by manifest
        digest; containerd's garbage collector then frees the content and snapshots."""
        removed = stale_image_refs(self.ctr("images", "list").stdout.decode(), keep, repository)
        for ref in removed:
            self.ctr("images", "rm", ref, check=False)
        return removed

    def _write_cni(self) -> None:
        conf = {
            "cniVersion": "0.4.0",
            "name": "rf-localkube",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.dir / "cni" / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (self.dir / "cni" / "net.d" / "10-rf-localkube.conflist").write_text(json.dumps(conf, indent=1))

    def _start_coredns(self) -> None:
        corefile = self.dir / "Corefile"
        corefile.write_text(f""".:53 {{
    bind {NODE_IP}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.dir / 'coredns.kubeconfig'}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
""")
        self.cluster._spawn("coredns", [str(self.bin / "coredns"), "-conf", str(corefile)])

    def _start_kube_proxy(self) -> None:
        cfg = self.dir / "kube-proxy.yaml"
        hp, mp = _free_ports(2)
        cfg.write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.dir / "kube-proxy.kubeconfig")},
            "mode": "iptables",
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_CIDR,
            "bindAddress": NODE_IP,
            "healthzBindAddress": f"127.0.0.1:{hp}",
            "metricsBindAddress": f"127.0.0.1:{mp}",
            # leave the host's conntrack settings alone
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            # no route_localnet sysctl
            "iptables": {"localhostNodePorts": False},
            "nodePortAddresses": [f"{NODE_IP}/32"],
        }, indent=1))
        self.cluster._spawn("kube-proxy", [str(self.bin / "kube-proxy"), f"--config={cfg}"])

    def _start_kubelet(self) -> None:
        kroot = self.dir / "kubelet"
        kroot.mkdir(parents=True, exist_ok=True)
        port, hport = _free_ports(2)
        self.kubelet_port = port
        cfg = self.dir / "kubelet.yaml"
        cfg.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": hport,
            "tlsCertFile": str(self.pki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(self.pki / "kubelet-serving.key"),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.address}",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "clusterDNS": [NODE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "podLogsDir": str(self.dir / "pod-logs"),
            "volumePluginDir": str(self.dir / "volume-plugins"),
            # a shared disk: never evict imported images, never garbage-collect them
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "registerNode": True,
            "rotateCertificates": False,
            "nodeStatusReportFrequency": "10s",
            "resolvConf": "/etc/resolv.conf",
            "staticPodPath": "",
            "maxPods": 110,
        }, indent=1))
        labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
        self.cluster._spawn("kubelet", [
            str(self.bin / "kubelet"),
            f"--config={cfg}",
            f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
            f"--root-dir={kroot}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={labels}",
            "--v=1",
        ])

    def _ready(self) -> bool | str:
        try:
            node = self.cluster.api_get(f"/api/v1/nodes/{NODE_NAME}")
        except Exception as exc:  # noqa: BLE001
            return f"not registered: {exc}"
        conds = {c["type"]: c for c in node.get("status", {}).get("conditions", [])}
        ready = conds.get("Ready", {})
        return True if ready.get("status") == "True" else f"Ready={ready.get('status')}: {ready.get('message')}"

    # -- stop -------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Tear down (the cluster has already stopped its processes); return what still differs."""
        state = self.state or read_state()
        if not state or state.get("workdir") != str(self.cluster.workdir):
            return []
        with _lock():
            left = teardown(state)
            state_file().unlink(missing_ok=True)
        self.state = None
        return left


def _free_ports(count: int) -> list[int]:
    import socket

    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "guard":
        return guard(int(argv[1]))
    if argv == ["reap"]:
        reap_stale()
        return 0
    print("usage: realnode.py guard OWNER_PID | reap", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
