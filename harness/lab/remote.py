"""What the hosts backend does on a machine: each function runs there (a Ray task pinned to the
machine), with pyroute2 on the machine's own netlink and metrolab's own shaper. Arguments and
results are plain data; every function is safe to repeat, and `unconfigure` undoes exactly what
`configure` reports it added."""

from __future__ import annotations

import importlib
import os
import platform
import socket
import subprocess
import sys
from dataclasses import asdict
from typing import Any

from pyroute2 import NetlinkError

from metrolab.harness.capabilities import probe
from metrolab.harness.kernel.counters import if_counters
from metrolab.harness.kernel.nsctx import iproute_here
from metrolab.harness.kernel.sh import die_with_parent
from metrolab.harness.lab.routes import route_request
from metrolab.netem import tree
from metrolab.netem.shaper import Shaper

AF_INET = 2


def _ipr():
    return iproute_here()


# the modules whose functions the hosts backend runs on a machine: importable from the ssh agent's
# bundle by the machine's own python3 (metrolab.harness.testbed.agent), nothing compiled among them
OPERATIONS = ("metrolab.harness.lab.remote", "metrolab.harness.policy.node", "metrolab.harness.policy.qos", "metrolab.harness.kernel.counters",
              "metrolab.netem.shaper", "metrolab.harness.capabilities", "metrolab.harness.kernel.nsctx", "metrolab.harness.lab.routes")


def imports(modules: tuple[str, ...] = OPERATIONS) -> dict[str, Any]:
    """Import `modules` here: this Python's version and what they pulled in beyond the standard
    library and the agent's bundle (empty: the machine needs nothing installed). What the
    machine's own site loaded before (sitecustomize, .pth hooks) is not theirs."""
    before = set(sys.modules)
    for name in modules:
        importlib.import_module(name)
    ours = {"metrolab", "pyroute2", "__mp_main__"}  # the last: multiprocessing's alias of __main__
    new = {n.split(".")[0] for n in set(sys.modules) - before}
    foreign = new - set(sys.stdlib_module_names) - set(sys.builtin_module_names) - ours
    return {"python": platform.python_version(), "foreign": sorted(foreign)}


def capabilities() -> dict[str, Any]:
    caps = probe()
    return {"netem": caps.has("netem"), "nft": caps.has("nft"), "kernel": caps.kernel}


def configure(ports: list[dict], routes: list[dict], neighbours: list[dict]) -> dict[str, list]:
    """Addresses on the machine's ports (`{ifname, local, peer, mtu}`: a /32 with the neighbour
    as its peer, as the lab plan addresses a node), permanent neighbour entries, then routes
    (`{dst, nexthops: [{gateway, ifname}]}`). Returns what it added, for `unconfigure`."""
    added: dict[str, list] = {"addresses": [], "routes": [], "neighbours": [], "up": []}
    with _ipr() as ipr:
        try:
            for p in ports:
                idx = _index(ipr, p["ifname"])
                link = ipr.get_links(idx)[0]
                if p.get("mtu") and link.get_attr("IFLA_MTU") != p["mtu"]:
                    ipr.link("set", index=idx, mtu=p["mtu"])
                have = {(a.get_attr("IFA_LOCAL"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=AF_INET)}
                if (p["local"], 32) not in have:
                    ipr.addr("add", index=idx, local=p["local"], address=p.get("peer") or p["local"], prefixlen=32)
                    added["addresses"].append(p)
                if not link["flags"] & 1:  # IFF_UP
                    ipr.link("set", index=idx, state="up")
                    added["up"].append(p["ifname"])
            for n in neighbours:
                ipr.neigh("replace", family=AF_INET, dst=n["dst"], lladdr=n["lladdr"],
                          ifindex=_index(ipr, n["ifname"]), state=0x80)  # NUD_PERMANENT
                added["neighbours"].append(n)
            for r in routes:
                for h in r["nexthops"]:
                    _index(ipr, h["ifname"])  # a missing port named, not an IndexError
                kw = route_request(ipr, r["dst"], 4, [(h["gateway"], h["ifname"]) for h in r["nexthops"]])
                try:
                    ipr.route("add", **kw)
                except NetlinkError as exc:
                    if exc.code != 17:  # EEXIST: a route of the lab's owner; keep theirs, add nothing
                        raise
                    continue
                added["routes"].append(r)
        except BaseException:
            _undo(ipr, added)
            raise
    return added


def unconfigure(added: dict[str, list]) -> None:
    with _ipr() as ipr:
        _undo(ipr, added)


def _undo(ipr, added: dict[str, list]) -> None:
    for r in reversed(added.get("routes", [])):
        try:
            ipr.route("del", dst=r["dst"], family=AF_INET)
        except NetlinkError:
            pass
    for n in added.get("neighbours", []):
        try:
            ipr.neigh("del", family=AF_INET, dst=n["dst"], ifindex=_index(ipr, n["ifname"]))
        except (NetlinkError, LookupError):
            pass
    for p in added.get("addresses", []):
        try:
            ipr.addr("del", index=_index(ipr, p["ifname"]), local=p["local"], address=p.get("peer") or p["local"],
                     prefixlen=32)
        except (NetlinkError, LookupError):
            pass
    for ifname in added.get("up", []):
        try:
            ipr.link("set", index=_index(ipr, ifname), state="down")
        except (NetlinkError, LookupError):
            pass


def _index(ipr, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"{socket.gethostname()}: no interface {ifname}")
    return found[0]


def macs(ifnames: list[str]) -> dict[str, str]:
    with _ipr() as ipr:
        return {i: ipr.get_links(_index(ipr, i))[0].get_attr("IFLA_ADDRESS") for i in ifnames}


def shape(ifname: str, imp, strict: bool, where: str, peer_ifname: str | None) -> dict:
    """The impairment on the egress of `ifname` (loss without netem: nft on `peer_ifname`'s ingress,
    on this machine — a WAN emulator's other port)."""
    caps = probe()
    with _ipr() as ipr:
        shaper = Shaper(ipr, None, caps.has("netem"), caps.has("nft"))
        return asdict(shaper.apply(ifname, imp, strict, where=where, peer=(None, peer_ifname) if peer_ifname else None))


def unshape(ifnames: list[tuple[str, str | None]]) -> None:
    """Every (ifname, peer_ifname) back to no impairment."""
    caps = probe()
    with _ipr() as ipr:
        shaper = Shaper(ipr, None, caps.has("netem"), caps.has("nft"))
        for ifname, peer in ifnames:
            shaper.clear(ifname, (None, peer) if peer else None)


def counters(ifnames: list[str], ecn: bool) -> tuple[int, int, int, int]:
    """(bytes sent, packets dropped by the root qdisc, CE marks, packets sent) summed over ifnames."""
    sent = dropped = marked = packets = 0
    with _ipr() as ipr:
        for i in ifnames:
            c = if_counters(ipr, i)
            _, d, m = tree.counts(tree.read_tree(ipr, None, i, netlink_only=not ecn))
            sent, packets, dropped, marked = sent + c["tx_bytes"], packets + c["tx_packets"], dropped + d, marked + m
    return sent, dropped, marked if ecn else 0, packets


def run_python(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """`python ARGV` on this machine (this venv's Python, this machine's environment plus `env`), to
    completion or `timeout`; (exit code, stdout, stderr). The process dies with the task's worker
    (a cancelled task leaves nothing running)."""
    proc = subprocess.Popen([sys.executable, *argv], env=os.environ | env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n(killed after {timeout:g} s)"
    return proc.returncode, out, err
