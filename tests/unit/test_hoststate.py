"""hoststate.differences and the rule rewriting used to undo iptables changes (pure parts)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "k8s" / "dev"))

import hoststate  # noqa: E402


def snap(**over):
    base = {
        "cni_cache": [],
        "mounts": ["/", "/proc"],
        "netns": [],
        "links": ["eth0", "lo"],
        "iptables": {"iptables": {}, "ip6tables": {}},
        "sysctls": {"net/ipv4/ip_forward": "0"},
        "cgroups": {"memory": ["user.slice"]},
        "paths": {"/var/lib/kubelet": False, "/etc/cni": True},
    }
    base.update(over)
    return base


def test_identical_snapshots_have_no_differences() -> None:
    assert hoststate.differences(snap(), snap()) == []


def test_every_kind_of_leftover_is_reported() -> None:
    after = snap(
        cni_cache=["rf-localkube-abc-eth0"],
        mounts=["/", "/proc", "/run/netns/cni-1"],
        netns=["cni-1"],
        links=["eth0", "lo", "rfk0"],
        iptables={"iptables": {"nat": [":KUBE-SERVICES - "]}, "ip6tables": {}},
        sysctls={"net/ipv4/ip_forward": "1"},
        cgroups={"memory": ["kubepods", "user.slice"]},
        paths={"/var/lib/kubelet": True, "/etc/cni": True},
    )
    diff = hoststate.differences(snap(), after)
    text = "\n".join(diff)
    for expected in ("CNI cache entries added", "mounts added: ['/run/netns/cni-1']", "netns added", "links added: ['rfk0']",
                     "iptables -t nat added", "sysctl net/ipv4/ip_forward: 0 -> 1", "cgroups memory added: ['kubepods']",
                     "/var/lib/kubelet: absent before, exists now"):
        assert expected in text, (expected, diff)
    assert len(diff) == 8


def test_a_removed_path_that_existed_before_is_a_difference_too() -> None:
    diff = hoststate.differences(snap(), snap(paths={"/var/lib/kubelet": False, "/etc/cni": False}))
    assert diff == ["/etc/cni: existed before, absent now"]


def test_saved_rules_become_delete_commands_with_their_quoting() -> None:
    rule = '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD'
    assert hoststate._split_rule(rule, "-D") == ["-D", "FORWARD", "-m", "comment", "--comment",
                                                 "kubernetes forwarding rules", "-j", "KUBE-FORWARD"]
