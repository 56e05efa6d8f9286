"""The netns backend: every host and switch a namespace, every link a veth pair, built with
pyroute2 and journalled so that a killed run can be cleaned."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from metrolab.harness import capabilities
from metrolab.harness.errors import CapabilityError, LabError
from metrolab.harness.kernel.counters import if_counters
from metrolab.harness.kernel.nsctx import NETNS_RUN_DIR, in_netns, iproute, pids_in_netns, wire_sized, write_sysctl
from metrolab.harness.kernel.zygote import python_popen
from metrolab.harness.lab import rxe
from metrolab.harness.lab.base import Lab
from metrolab.harness.lab.delivery import steer
from metrolab.harness.lab.routes import route_request
from metrolab.harness.lab.state import LabState, new_lab_id
from metrolab.harness.spec.loader import topology_from_data
from metrolab.harness.spec.resolve import Topology
from metrolab.netem import tree
from metrolab.netem.calibrate import NetemFit, measure_fit
from metrolab.netem.profile import Impairment
from metrolab.netem.shaper import Applied, Shaper

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02
AF_INET, AF_INET6 = 2, 10
NUD_PERMANENT = 0x80


class Interrupted(BaseException):
    """SIGTERM turned into an exception, so teardown runs as for Ctrl-C."""


class SignalGuard:
    """Turn SIGINT/SIGTERM/SIGHUP into an `Interrupted` raised at the build's next checkpoint.

    Raising straight from the handler is not safe: it can land inside pyroute2's asyncio loop,
    which swallows it, and the build would go on as if nothing happened.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.owner = os.getpid()
        self.received: int | None = None
        self._old = {}

    def _handler(self, signum, _frame):
        if os.getpid() != self.owner:  # a helper pyroute2 forked: die as the signal says
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum

    def check(self) -> None:
        if self.received is not None:
            raise Interrupted(f"interrupted by signal {self.received}")

    def __enter__(self) -> SignalGuard:
        self._old = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM/SIGHUP until the block is done: pyroute2 creates a namespace in a
    forked helper, and an interrupt that lands mid-way would let it finish after teardown."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def remove_namespace(name: str) -> None:
    """Stop every process left inside `name`, then delete it (its veths go with it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = pids_in_netns(name)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while pids and time.monotonic() < deadline and pids_in_netns(name):
            time.sleep(0.05)
    if (NETNS_RUN_DIR / name).exists():
        netns.remove(name)


class NetnsLab(Lab):
    backend = "netns"

    def __init__(self, topology: Topology, lab_id: str | None = None, strict: bool = True,
                 state: LabState | None = None, in_order: bool = True):
        super().__init__(topology, lab_id or (state.lab_id if state else new_lab_id()))
        self.strict = strict
        # veths deliver each flow in order (metrolab.harness.lab.delivery): the kernel's own delivery swaps
        # packets behind a shaped egress, which an RC QP takes for loss
        self.in_order = in_order
        self._handles: dict[str, IPRoute] = {}
        self.links_down: set[str] = set()  # by set_link (events), so that a restore skips what is still down
        self.state = state
        # netem's own per-qdisc delivery fit, measured before the first delay is applied
        fit = state.extra.get("netem_fit") if state else None
        self.netem_fit: NetemFit | None = NetemFit(**fit) if fit else None

    # -- names ---------------------------------------------------------------------------
    def ns(self, node: str) -> str:
        return f"{self.lab_id}-{node}"

    def handle(self, node: str) -> IPRoute:
        h = self._handles.get(node)
        if h is None:
            h = self._handles[node] = iproute(self.ns(node))
        return h

    # -- build ---------------------------------------------------------------------------
    def up(self) -> None:
        log.info("lab %s: building %s (%d nodes, %d links)", self.lab_id, self.topology.name,
                 len(self.topology.nodes), len(self.topology.links))
        topo = self.topology
        caps = capabilities.probe()
        self.state = LabState(self.lab_id, self.backend, topo.source, topo.digest,
                              extra={"topology": topo.spec.model_dump(mode="json"), "strict": self.strict})
        self.state.save()
        try:
            with SignalGuard() as guard:
                self._check_impairments(caps)
                self._check_rdma(caps)
                steps = ([(self._create_node, (n.name, n.is_switch)) for n in topo.nodes.values()]
                         + [(self._create_link, (lk.name,)) for lk in topo.links]
                         + ([(self._deliver_in_order, ())] if self.in_order else [])
                         + [(self._address_node, (n,)) for n in topo.nodes]
                         + [(self._pin_neighbours, (lk.name,)) for lk in topo.links]
                         + [(self._add_rxe, (h.name,)) for h in topo.hosts() if h.rdma]
                         + [(self._add_route, (r,)) for r in self.plan.routes]
                         + ([(self._wire_sized, ())] if self.wire_packets or any(
                             lk.impairment(topo.group_index).per_packet for lk in topo.links) else [])
                         + [(self.impair, (lk.name, lk.impairment(topo.group_index), self.strict, caps))
                            for lk in topo.links])
                for fn, fn_args in steps:
                    guard.check()
                    fn(*fn_args)
                guard.check()
                self.state.status = "up"
                self.state.extra["applied"] = self.applied
                self.state.save()
        except BaseException:
            if os.getpid() == self.state.pid:  # never from a forked helper
                self.down()
            raise

    def _check_impairments(self, caps) -> None:
        """Refuse before building anything if an impairment cannot be applied here."""
        if not self.strict:
            return
        shaper = Shaper(None, "", caps.has("netem"), caps.has("nft"))
        for link in self.topology.links:
            imp = link.impairment(self.topology.group_index)
            missing = shaper.check(imp, link.name)
            if missing:
                raise CapabilityError(
                    f"link {link.name}: this kernel ({caps.kernel}) lacks sch_netem, so it cannot apply "
                    f"{', '.join(missing)}; use the vm backend (--backend vm) or --best-effort to skip them")

    def _check_rdma(self, caps) -> None:
        rdma_hosts = [h.name for h in self.topology.hosts() if h.rdma]
        if rdma_hosts and not caps.has("rxe"):
            raise CapabilityError(f"hosts {', '.join(rdma_hosts)} need Soft-RoCE, which this kernel ({caps.kernel}) "
                                  f"lacks ({caps.items['rxe'].detail}); use the vm backend (--backend vm)")

    def _calibrate(self):
        """netem's delivery fit on this kernel, measured once per lab (see netem/calibrate.py)."""
        if self.netem_fit is None:
            with signals_deferred():
                self.netem_fit = measure_fit(self.lab_id, self.state.record_namespace
                                             if self.state else (lambda name: None))
            if self.state is not None:
                self.state.extra["netem_fit"] = dataclasses.asdict(self.netem_fit)
                self.state.save()
        return self.netem_fit

    @property
    def netem_offset_s(self) -> float | None:
        return self.netem_fit.offset_s if self.netem_fit else None

    def journal(self) -> LabState:
        if self.state is None:
            raise LabError(f"lab {self.lab_id} has no journal: build it with up()")
        return self.state

    def _create_node(self, node: str, is_switch: bool) -> None:
        name = self.ns(node)
        self.journal().record_namespace(name)  # journal first: a kill after this line is cleanable
        with signals_deferred():
            netns.create(name)
        # new interfaces must not wait for IPv6 DAD; switches forward; ECMP paths are asymmetric
        settings = {"net.ipv6.conf.default.accept_dad": 0, "net.ipv6.conf.all.accept_dad": 0,
                    "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0}
        if is_switch:
            settings |= {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1,
                         "net.ipv4.fib_multipath_hash_policy": 1, "net.ipv6.fib_multipath_hash_policy": 1}
        for key, value in settings.items():
            write_sysctl(name, key, value)
        h = self.handle(node)
        h.link("set", index=h.link_lookup(ifname="lo")[0], state="up")

    def _create_link(self, link_name: str) -> None:
        a, b = self.plan.ends(link_name)
        link = next(x for x in self.topology.links if x.name == link_name)
        ha = self.handle(a.node)
        ha.link("add", ifname=a.ifname, kind="veth", mtu=link.props.mtu,
                peer={"ifname": b.ifname, "net_ns_fd": self.ns(b.node), "mtu": link.props.mtu})

    def _deliver_in_order(self) -> None:
        """Without this, packets leaving a shaped egress can swap on the next veth, which an RC QP
        takes for loss (harness/lab/delivery.py)."""
        steer({self.ns(n): [e.ifname for e in self.plan.ifaces_of(n)] for n in self.topology.nodes})

    def _address_node(self, node: str) -> None:
        h = self.handle(node)
        me = self.topology.nodes[node]
        for iface in self.plan.ifaces_of(node):
            idx = h.link_lookup(ifname=iface.ifname)[0]
            peer = self.topology.nodes[iface.peer_node]
            if me.is_switch:
                h.addr("add", index=idx, local=str(me.address), address=str(peer.address), prefixlen=32)
            else:  # no peer: rxe takes the RoCEv2 GID from this field
                h.addr("add", index=idx, local=str(me.address), address=str(me.address), prefixlen=32)
            if me.address6 is not None:
                h.addr("add", index=idx, local=str(me.address6), address=str(peer.address6), prefixlen=128,
                       flags=IFA_F_NODAD)
            h.link("set", index=idx, state="up")
            if me.address6 is not None:
                h.addr("add", index=idx, address=iface.ll6, prefixlen=64, flags=IFA_F_NODAD)

    def _pin_neighbours(self, link_name: str) -> None:
        """Permanent ARP/ND entries for the gateway addresses on both ends of a link.

        A lab has no reason to resolve neighbours at run time: resolution would cost the first packet
        a round trip across an emulated WAN, and the kernel's rdma_cm cannot answer a connection
        request whose reply path still needs resolving (the passive side's QP attributes fail)."""
        ends = self.plan.ends(link_name)
        macs = {}
        for end in ends:
            h = self.handle(end.node)
            macs[end.node] = h.get_links(h.link_lookup(ifname=end.ifname)[0])[0].get_attr("IFLA_ADDRESS")
        for end in ends:
            h = self.handle(end.node)
            idx = h.link_lookup(ifname=end.ifname)[0]
            peer = self.topology.nodes[end.peer_node]
            entries = [(AF_INET, str(peer.address))]
            if peer.address6 is not None:
                entries.append((AF_INET6, end.peer_ll6))
            for family, dst in entries:
                h.neigh("replace", family=family, dst=dst, lladdr=macs[end.peer_node], ifindex=idx,
                        state=NUD_PERMANENT)

    def _add_rxe(self, node: str) -> None:
        """A Soft-RoCE device on the host's (first) lab interface."""
        iface = self.plan.ifaces_of(node)[0]
        name = rxe.device_name(self.lab_id, node)
        journal = self.journal()
        journal.extra.setdefault("rxe", []).append(name)  # journal first
        journal.save()
        rxe.add(self.ns(node), name, iface.ifname)

    def _wire_sized(self) -> None:
        """Every host's TCP in wire-sized packets (`Lab.wire_packets`): one segment per GSO buffer.
        A socket takes the limit when it connects, so this comes before anything runs on the hosts."""
        for host in self.topology.hosts():
            h = self.handle(host.name)
            for iface in self.plan.ifaces_of(host.name):
                wire_sized(h, iface.ifname)
        self.wire_packets = True
        self.journal().extra["wire_packets"] = True

    def rxe_device(self, node: str) -> str:
        return rxe.device_name(self.lab_id, node)

    def _add_route(self, route) -> None:
        h = self.handle(route.node)
        kw = route_request(h, route.dst, route.family, [(nh.gateway, nh.ifname) for nh in route.nexthops])
        try:
            h.route("add", **kw)
        except NetlinkError as exc:
            raise LabError(f"route {route.dst} on {route.node} via "
                           f"{', '.join(f'{n.gateway} dev {n.ifname}' for n in route.nexthops)}: {exc}") from exc

    def spawn(self, node: str, argv: list[str], env: dict[str, str], timeout: float | None = None, **popen_kw):
        """`python ARGV` in the node's namespace (forked from the zygote in the guest); the caller
        keeps the time (`timeout` is for backends whose processes run elsewhere)."""
        return python_popen(argv, netns=self.ns(node), env=dict(os.environ) | env, **popen_kw)

    def on(self, node: str, fn, *args, **kw):
        """fn runs in this thread inside the node's namespace (sockets it makes stay there)."""
        with in_netns(self.ns(node)):
            return fn(*args, **kw)

    def link_counters(self, link: str, ecn: bool) -> tuple[int, int, int, int]:
        sent = dropped = marked = packets = 0
        for end in self.plan.ends(link):
            h = self.handle(end.node)
            c = if_counters(h, end.ifname)
            _, d, m = tree.counts(tree.read_tree(h, self.ns(end.node), end.ifname, netlink_only=not ecn))
            sent, packets, dropped, marked = sent + c["tx_bytes"], packets + c["tx_packets"], dropped + d, marked + m
        return sent, dropped, marked if ecn else 0, packets

    # -- impairment ----------------------------------------------------------------------
    def shaper(self, node: str, caps=None) -> Shaper:
        caps = caps or capabilities.probe()
        return Shaper(self.handle(node), self.ns(node), caps.has("netem"), caps.has("nft"))

    def impair(self, link: str, imp: Impairment, strict: bool = True, caps=None) -> None:
        caps = caps or capabilities.probe()
        imp = self.staged(link, imp)
        if imp.delay_s and caps.has("netem") and not imp.extra.get("raw_delay"):
            # netem delivers late: configure what lands on target (a sweep's points ask for their raw
            # delay: the delay line's overhead is common to all of them and cancels; points.py)
            imp = dataclasses.replace(imp, delay_s=self._calibrate().configure_for(imp.delay_s))
        out: list[Applied] = []
        for end in self.plan.ends(link):
            peer = (self.ns(end.peer_node), end.peer_ifname)
            out.append(self.shaper(end.node, caps).apply(end.ifname, imp, strict, where=f"link {link}", peer=peer))
        self.applied[link] = [asdict(a) | {"node": e.node} for a, e in zip(out, self.plan.ends(link))]
        if self.state is not None and self.state.status == "up":
            self.state.extra["applied"] = self.applied
            self.state.save()

    def set_link(self, link: str, up: bool) -> None:
        """Both routers take `link` out of their routes at once (up=False: loss-of-signal detection;
        ECMP's other next hops carry on, a destination left with none is unreachable) or put it back
        as the plan has it, less links still down. The interfaces stay up, so nothing else the
        kernel holds (addresses, neighbours, a policy's own routes) changes."""
        if up:
            self.links_down.discard(link)
        else:
            self.links_down.add(link)
        self._reroute(link)
        log.info("lab %s: link %s %s", self.lab_id, link, "back in the routes" if up else "out of the routes")

    def _reroute(self, link: str) -> None:
        on_link = {(e.node, e.ifname) for e in self.plan.ends(link)}
        link_of = {(i.node, i.ifname): i.link for i in self.plan.ifaces.values()}
        for r in self.plan.routes:
            if not any((r.node, nh.ifname) in on_link for nh in r.nexthops):
                continue
            hops = [(nh.gateway, nh.ifname) for nh in r.nexthops if link_of[(r.node, nh.ifname)] not in self.links_down]
            h = self.handle(r.node)
            if hops:
                h.route("replace", **route_request(h, r.dst, r.family, hops))
            else:
                try:  # the plan's own (static) route, not the kernel's peer route to the same address
                    h.route("del", dst=r.dst, family=2 if r.family == 4 else 10, proto=4)
                except NetlinkError as exc:
                    if exc.code != 3:  # ESRCH: gone already
                        raise

    # -- teardown ------------------------------------------------------------------------
    def close_handles(self) -> None:
        for h in self._handles.values():
            try:
                h.close()
            except Exception:  # noqa: BLE001 — closing: a dead handle is already closed
                pass
        self._handles.clear()

    def down(self) -> None:
        log.info("lab %s: taking it down", self.lab_id)
        self.close_handles()
        names = list(self.state.namespaces) if self.state else [self.ns(n) for n in self.topology.nodes]
        errors = []
        with _ignore_signals():
            for dev in (self.state.extra.get("rxe", []) if self.state else []):
                try:
                    rxe.delete(dev)
                except Exception as exc:  # noqa: BLE001 — teardown goes on and reports each failure
                    errors.append(f"{dev}: {exc}")
            for name in reversed(names):
                try:
                    remove_namespace(name)
                except Exception as exc:  # noqa: BLE001 — keep removing the rest
                    errors.append(f"{name}: {exc}")
            if self.state is not None:
                if errors:
                    self.state.status = "down-failed"
                    self.state.save()
                else:
                    self.state.remove()
        if errors:
            raise LabError("teardown left namespaces behind: " + "; ".join(errors))

    # -- read back -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        nodes, links = [], []
        for node in self.topology.nodes.values():
            h = self.handle(node.name)
            ifaces = []
            for iface in self.plan.ifaces_of(node.name):
                found = h.link_lookup(ifname=iface.ifname)
                if not found:
                    ifaces.append({"ifname": iface.ifname, "present": False})
                    continue
                idx = found[0]
                addrs = [f"{a.get('IFA_LOCAL') or a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                         for a in h.get_addr(index=idx) if a.get("IFA_LOCAL") or (a["family"] == AF_INET6
                         and not str(a.get("IFA_ADDRESS", "")).startswith("fe80"))]
                qdiscs = [q.kind for q in tree.read_tree(h, self.ns(node.name), iface.ifname)]
                link = h.get_links(idx)[0]
                ifaces.append({"ifname": iface.ifname, "link": iface.link, "peer": iface.peer_node,
                               "addresses": addrs, "qdiscs": qdiscs, "state": link.get("IFLA_OPERSTATE"),
                               "mtu": link.get("IFLA_MTU"), "gso_max_segs": link.get("IFLA_GSO_MAX_SEGS")})
            routes = len(h.get_routes(family=AF_INET, table=254)) + len(h.get_routes(family=AF_INET6, table=254))
            nodes.append({"node": node.name, "kind": node.kind, "site": node.site, "role": node.role,
                          "namespace": self.ns(node.name), "address": str(node.address),
                          "address6": str(node.address6) if node.address6 else None,
                          "interfaces": ifaces, "routes": routes})
        for link in self.topology.links:
            a, b = self.plan.ends(link.name)
            imp = link.impairment(self.topology.group_index)
            links.append({"link": link.name, "a": f"{a.node}:{a.ifname}", "b": f"{b.node}:{b.ifname}",
                          "rate_bps": imp.rate_bps, "delay_ms": imp.delay_s * 1e3,
                          "loss": imp.loss.mean_loss if imp.loss else 0.0, "distance_km": link.props.distance_km,
                          "applied": self.applied.get(link.name, [])})
        return {"lab": self.lab_id, "backend": self.backend, "topology": self.topology.name,
                "source": self.topology.source, "nodes": nodes, "links": links}


@contextmanager
def _ignore_signals():
    """Teardown must finish: hold off SIGINT/SIGTERM while namespaces are removed."""
    old = {}
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            old[s] = signal.signal(s, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def attach(state: LabState) -> NetnsLab:
    """A handle on a lab built by another process, from its journal."""
    topo = topology_from_data(state.extra["topology"], state.topology)
    lab = NetnsLab(topo, state=state, strict=state.extra.get("strict", True))
    lab.applied = state.extra.get("applied", {})
    lab.wire_packets = state.extra.get("wire_packets", False)
    return lab
