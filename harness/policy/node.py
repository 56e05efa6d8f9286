"""What a policy does on one node, run where the node lives (`lab.on`: inside its namespace in the
netns lab, on its machine on a testbed). The same code on every backend: plain data in and out,
each function works on this thread's network namespace. Routes and rules added half-way are
removed by `netlink_add` itself; a half-built queue tree goes when the link is impaired again
(metrolab.harness.policy.apply clears a failed policy).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from metrolab.harness.errors import LabError
from metrolab.harness.kernel import sh
from metrolab.harness.kernel.nsctx import iproute_here
from metrolab.harness.policy import qos
from metrolab.netem.shaper import Shaper

HASH_SYSCTLS = ("net.ipv4.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_policy")
HASH_SEED = "net.ipv4.fib_multipath_hash_seed"
JOURNALED_SYSCTLS = (*HASH_SYSCTLS, HASH_SEED)  # what a policy may set on a machine


def _ipr():
    return iproute_here()


def queues(ifname: str, imp, kind: str, spec: Any, netem: bool, nft: bool) -> Any:
    """A flow-control queue tree on `ifname` (already shaped with `imp`): `slices` (spec: the
    slices and the hosts' addresses), `per-flow` (spec: the flows) or `ecn` (spec: the policy's
    flow control)."""
    with _ipr() as ipr:
        shaper = Shaper(ipr, None, netem, nft)
        if kind == "slices":
            slices, addresses = spec
            return qos.install_slices(shaper, ifname, imp, slices, addresses, netem=netem)
        if kind == "per-flow":
            return qos.install_per_flow(shaper, ifname, imp, spec, netem=netem)
        if kind == "ecn":
            return qos.install_ecn(shaper, ifname, imp, spec, netem=netem)
    raise ValueError(f"no queue tree {kind!r}")


def nft(script: str, check: bool = True) -> None:
    sh.nft(script, check=check)


def nft_read(command: str) -> tuple[int, str, str]:
    res = sh.nft_json(command)
    return res.rc, res.stdout, res.stderr


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys", *key.split("."))


def read_sysctls(keys: list[str]) -> dict[str, str | None]:
    """The values of `keys` here (None: this kernel has no such key)."""
    out: dict[str, str | None] = {}
    for k in keys:
        try:
            out[k] = _sysctl_path(k).read_text().strip()
        except OSError:
            out[k] = None
    return out


def write_sysctls(values: dict[str, str | int], optional: tuple[str, ...] = ()) -> None:
    """Set net.* sysctls here; a key in `optional` that this kernel lacks is left out."""
    for k, v in values.items():
        try:
            _sysctl_path(k).write_text(str(v))
        except OSError as exc:
            if k not in optional:
                raise LabError(f"sysctl {k}={v}: {exc}") from exc


def _resolved(ipr, kw: dict) -> dict:
    """A route's or rule's arguments with its output interface named (`oif: "eth1"`) resolved here."""
    kw = dict(kw)
    if isinstance(kw.get("oif"), str):
        found = ipr.link_lookup(ifname=kw["oif"])
        if not found:
            raise LabError(f"{socket.gethostname()}: no interface {kw['oif']}")
        kw["oif"] = found[0]
    return kw


def netlink_add(ops: list[tuple[str, dict]]) -> None:
    """Add each ("route" | "rule", arguments) in order; on a failure what was added is removed."""
    done: list[tuple[str, dict]] = []
    with _ipr() as ipr:
        try:
            for what, kw in ops:
                getattr(ipr, what)("add", **_resolved(ipr, kw))
                done.append((what, kw))
        except BaseException:
            _delete(ipr, done)
            raise


def netlink_del(ops: list[tuple[str, dict]]) -> None:
    """Delete each ("route" | "rule", arguments) in reverse order; one already gone is skipped."""
    with _ipr() as ipr:
        _delete(ipr, ops)


def _delete(ipr, ops: list[tuple[str, dict]]) -> None:
    for what, kw in reversed(ops):
        try:
            getattr(ipr, what)("del", **_resolved(ipr, kw))
        except Exception:  # noqa: BLE001 — already gone (or its interface is)
            pass


def clear(journal: dict) -> list[str]:
    """What a policy journaled here (`Lab.policy_touch`), undone: its nft tables deleted, its
    routes and rules removed, the sysctls it may change put back to their values before the run.
    Exactly what was journaled: the machine's own tables, rules and routes are never looked at.
    What it changed."""
    out = []
    for family, name in journal.get("nft", []):
        rc, _, _ = nft_read(f"list table {family} {name}")
        if rc == 0:
            sh.nft(f"delete table {family} {name}")
            out.append(f"nft table {family} {name}")
    ops = [(what, kw) for what, kw in journal.get("netlink", [])]
    if ops:
        netlink_del(ops)
    saved = journal.get("sysctls", {})
    now = read_sysctls(list(saved))
    back = {k: v for k, v in saved.items() if v is not None and now.get(k) != v}
    write_sysctls(back)
    out += [f"sysctl {k}={v}" for k, v in back.items()]
    return out
