"""What a real node changes on the host, read and undone (Python standard library only).

`snapshot()` reads every host-wide thing the real node (realnode.py) touches:
mounts, network namespaces, links, iptables chains and rules (IPv4 and IPv6),
the sysctls that kubelet, kube-proxy and the CNI bridge plugin set, top-level
cgroups, and the fixed folders kubelet, containerd and CNI use.  `restore()`
undoes every difference from an earlier snapshot that the node can have made;
`differences()` lists what still differs (the teardown tests assert it is empty).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

# Folders that kubelet, containerd and the CNI plugins use whatever their
# configuration says (kubelet hard-codes device-plugins and /var/log/containers,
# containerd 1.6 puts shim sockets under /run/containerd, libcni caches results
# in /var/lib/cni).  Each is removed on teardown when it did not exist before.
WATCHED_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/lib/containerd",
    "/opt/containerd",
    "/var/lib/cni",
    "/run/cni",
    "/etc/cni",
    "/opt/cni",
    "/run/netns",
    "/etc/kubernetes",
)
# (/usr/libexec/kubernetes is not watched: kube-controller-manager makes it as its
# default FlexVolume folder, and other local clusters may run beside this one;
# localkube passes --flex-volume-plugin-dir, kubelet gets volumePluginDir.)

# sysctls set by kubelet (protectKernelDefaults: false), kube-proxy and the
# bridge plugin (ip_forward); each is put back to its old value.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)

# libcni's cache (containerd 1.6 cannot move it): one file per attachment
CNI_CACHE = Path("/var/lib/cni/results")
IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle", "raw")
# built-in chains of every table: their policy is compared, the chains themselves stay
_BUILTIN = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}
CGROUP_ROOT = Path("/sys/fs/cgroup")


# --------------------------------------------------------------------------
# reading


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def mounts() -> list[str]:
    """Mount points, in mount order (from /proc/self/mountinfo; octal escapes decoded)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point))
    return out


def netns() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except OSError:
        return []


def links() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir())


def iptables_rules(tool: str) -> dict[str, list[str]]:
    """table -> sorted chain declarations (`:CHAIN POLICY`) and rules (`-A ...`)."""
    out: dict[str, list[str]] = {}
    if not shutil.which(f"{tool}-save"):
        return out
    for table in TABLES:
        proc = subprocess.run([f"{tool}-save", "-t", table], capture_output=True, text=True)
        lines = []
        for ln in proc.stdout.splitlines():
            if ln.startswith(":"):
                name, policy = ln[1:].split()[:2]
                # an empty built-in chain with policy ACCEPT is what a table that
                # was never used looks like: not a difference
                if name in _BUILTIN and policy == "ACCEPT":
                    continue
                lines.append(f":{name} {policy}")
            elif ln.startswith("-A "):
                lines.append(ln)
        if lines:
            out[table] = sorted(lines)
    return out


def cgroups() -> dict[str, list[str]]:
    """hierarchy -> its top-level cgroups (kubelet makes `kubepods` there)."""
    out: dict[str, list[str]] = {}
    if not CGROUP_ROOT.is_dir():
        return out
    for h in sorted(CGROUP_ROOT.iterdir()):
        if h.is_dir() and not h.is_symlink():
            out[h.name] = sorted(p.name for p in h.iterdir() if p.is_dir())
    return out


def cni_cache() -> list[str]:
    try:
        return sorted(os.listdir(CNI_CACHE))
    except OSError:
        return []


def snapshot() -> dict[str, Any]:
    return {
        "cni_cache": cni_cache(),
        "mounts": mounts(),
        "netns": netns(),
        "links": links(),
        "iptables": {tool: iptables_rules(tool) for tool in IPTABLES},
        "sysctls": {name: _read(f"/proc/sys/{name}") for name in SYSCTLS},
        "cgroups": cgroups(),
        "paths": {p: os.path.lexists(p) for p in WATCHED_PATHS},
    }


def differences(before: dict[str, Any], after: dict[str, Any] | None = None) -> list[str]:
    """What differs between two snapshots (after: now), as readable lines."""
    after = after or snapshot()
    out: list[str] = []

    def sets(name: str, a: list[str], b: list[str]) -> None:
        extra, gone = sorted(set(b) - set(a)), sorted(set(a) - set(b))
        if extra:
            out.append(f"{name} added: {extra}")
        if gone:
            out.append(f"{name} removed: {gone}")

    sets("mounts", before["mounts"], after["mounts"])
    sets("netns", before["netns"], after["netns"])
    sets("links", before["links"], after["links"])
    sets("CNI cache entries", before.get("cni_cache", []), after.get("cni_cache", []))
    for tool in IPTABLES:
        for table in sorted(set(before["iptables"].get(tool, {})) | set(after["iptables"].get(tool, {}))):
            sets(f"{tool} -t {table}", before["iptables"].get(tool, {}).get(table, []),
                 after["iptables"].get(tool, {}).get(table, []))
    for name, value in before["sysctls"].items():
        if after["sysctls"].get(name) != value:
            out.append(f"sysctl {name}: {value} -> {after['sysctls'].get(name)}")
    for h in sorted(set(before["cgroups"]) | set(after["cgroups"])):
        sets(f"cgroups {h}", before["cgroups"].get(h, []), after["cgroups"].get(h, []))
    for path, existed in before["paths"].items():
        if after["paths"].get(path) != existed:
            out.append(f"{path}: {'existed' if existed else 'absent'} before, "
                       f"{'exists' if after['paths'].get(path) else 'absent'} now")
    return out


# --------------------------------------------------------------------------
# undoing

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def _umount(point: str) -> None:
    if _libc.umount2(point.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL (not a mount point any more), ENOENT
            raise OSError(err, os.strerror(err), point)


def unmount_new(before: dict[str, Any], under: list[str]) -> None:
    """Unmount (lazily, innermost first) every mount made since `before`
    that lies under one of the folders `under`."""
    old = set(before["mounts"])
    prefixes = [p.rstrip("/") + "/" for p in under] + [p.rstrip("/") for p in under]
    for _ in range(5):  # stacked mounts on one point come off one per pass
        todo = [m for m in mounts() if m not in old and any(m == p or m.startswith(p) for p in prefixes)]
        if not todo:
            return
        for point in reversed(todo):
            _umount(point)


def _kill_cgroup_procs(top: Path) -> None:
    for procs in top.rglob("cgroup.procs"):
        for pid in (_read(str(procs)) or "").split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass


# Only what the node makes is undone (another tool may change the host meanwhile;
# differences() still reports anything new).
NODE_CGROUPS = ("kubepods",)  # kubelet's cgroupfs root of every pod
NODE_CHAIN_PREFIXES = ("KUBE-", "CNI-")  # kube-proxy, kubelet's canaries, CNI plugins


def remove_new_cgroups(before: dict[str, Any]) -> None:
    """Kill what runs in the node's cgroups made since `before` and remove them (bottom-up)."""
    now = cgroups()
    targets = [CGROUP_ROOT / h / name for h, names in now.items()
               for name in names if name not in before["cgroups"].get(h, []) and name.startswith(NODE_CGROUPS)]
    for top in targets:
        _kill_cgroup_procs(top)
    deadline = time.monotonic() + 10
    for top in targets:
        while top.exists():
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in dirs + [top]:
                try:
                    d.rmdir()
                except OSError:
                    pass
            if top.exists():
                if time.monotonic() > deadline:
                    raise OSError(f"cannot remove cgroup {top}")
                _kill_cgroup_procs(top)
                time.sleep(0.1)


def _iptables(tool: str, *args: str) -> None:
    subprocess.run([tool, "-w", "5", *args], capture_output=True, text=True)


def restore_iptables(before: dict[str, Any]) -> None:
    """Delete the rules and chains added since `before` (kube-proxy's KUBE-*,
    kubelet's canaries, the CNI plugins' CNI-* chains)."""
    for tool in IPTABLES:
        if not shutil.which(tool):
            continue
        old_tables = before["iptables"].get(tool, {})
        now = iptables_rules(tool)
        for table, lines in now.items():
            old = set(old_tables.get(table, []))
            new_rules = [ln for ln in lines if ln.startswith("-A ") and ln not in old
                         and any(p in ln for p in NODE_CHAIN_PREFIXES)]
            new_chains = [ln[1:].split()[0] for ln in lines
                          if ln.startswith(":") and ln not in old and ln[1:].startswith(NODE_CHAIN_PREFIXES)]
            for rule in new_rules:
                _iptables(tool, "-t", table, *_split_rule(rule, "-D"))
            for chain in new_chains:
                _iptables(tool, "-t", table, "-F", chain)
            for chain in new_chains:
                _iptables(tool, "-t", table, "-X", chain)


def _split_rule(rule: str, op: str) -> list[str]:
    import shlex

    parts = shlex.split(rule)
    parts[0] = op
    return parts


def restore_sysctls(before: dict[str, Any]) -> None:
    for name, value in before["sysctls"].items():
        if value is None:
            continue
        path = Path(f"/proc/sys/{name}")
        if _read(str(path)) != value:
            try:
                path.write_text(value + "\n")
            except OSError:
                pass


def remove_new_netns(before: dict[str, Any]) -> None:
    for name in set(netns()) - set(before["netns"]):
        path = f"/run/netns/{name}"
        _umount(path)
        try:
            os.unlink(path)
        except OSError:
            pass


def remove_new_links(before: dict[str, Any]) -> None:
    for name in set(links()) - set(before["links"]):
        subprocess.run(["ip", "link", "delete", name], capture_output=True)


def remove_new_cni_cache(before: dict[str, Any]) -> None:
    """Cache entries of attachments that were never deleted (killed sandboxes), when
    /var/lib/cni existed before (else remove_new_paths takes the whole folder)."""
    for name in set(cni_cache()) - set(before.get("cni_cache", [])):
        try:
            (CNI_CACHE / name).unlink()
        except OSError:
            pass


def remove_new_paths(before: dict[str, Any]) -> None:
    for path, existed in before["paths"].items():
        if not existed and os.path.lexists(path):
            unmount_new(before, [path])
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
