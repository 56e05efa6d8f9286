"""Applies a scenario's policy to the lab's nodes, replacing the previous one: everything the
old policy installed is removed (links re-impaired with their base impairment, rules and tables
deleted, nft tables dropped, the ECMP hash back to the lab's L4 default, a SONiC switch's tables
put back) before the new one goes in, so switching policies between sweep points leaves nothing
stale. On a testbed's SONiC switches the policy is config_db (metrolab.harness.policy.sonic_policy).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import time

from metrolab.harness import capabilities
from metrolab.harness.errors import CapabilityError, LabError
from metrolab.harness.policy import acl, ecmp, node, qos, sonic, sonic_policy
from metrolab.harness.policy.backpressure import Backpressure
from metrolab.harness.policy.model import congested_switch
from metrolab.harness.policy.planner import plan

log = logging.getLogger(__name__)


def needs_flows(policy) -> bool:
    """Planned paths, per-flow queues and flow-level backpressure act on the learned 5-tuples."""
    return policy is not None and (
        (policy.load_balancing is not None and policy.load_balancing.kind == "planned")
        or (policy.flow_control is not None and policy.flow_control.kind in ("per-flow", "backpressure")))


def marks_ecn(policy) -> bool:
    return policy is not None and policy.flow_control is not None and policy.flow_control.kind == "ecn"


class PolicyApplier:
    def __init__(self, lab, base: dict | None = None):
        """`base`: link name -> the Impairment the link has without a policy (the sweep point's)."""
        self.lab = lab
        self.base = dict(base or {})
        self.current = None
        self._acl_hosts: list[str] = []
        self._links: list[str] = []
        self._hash_switches: list[str] = []
        self._planned: list = []
        self._planned_for: tuple | None = None  # (switches, flows, encap) the plan was made for
        self.plans: dict[str, dict[tuple, str]] = {}  # switch -> {5-tuple: planned link}, for the record
        self.pause: Backpressure | None = None  # the running emulation (pause / backpressure policies)
        self.rate_divisor = 1.0  # the runner's auto scale: slice rates divided like the links' rates
        self.sonic: dict[str, dict] = {}  # SONiC switch -> its ports and pause roles, while a policy is there

    def _scaled(self, slices):
        d = self.rate_divisor
        if d == 1:
            return slices
        return [s.model_copy(update={"guaranteed": s.guaranteed / d,
                                     "ceiling": s.ceiling / d if s.ceiling else None}) for s in slices]

    def addresses(self, host: str) -> list[str]:
        n = self.lab.topology.nodes[host]
        return [str(n.address)] + ([str(n.address6)] if n.address6 else [])

    def _ends(self) -> dict[str, tuple[str, str]]:
        return {lk.name: (lk.a, lk.b) for lk in self.lab.topology.links}

    def _on_sonic(self, link: str) -> bool:
        return bool(set(self._ends()[link]) & self.lab.sonic_nodes())

    def _congested(self, policy) -> str | None:
        """Pause / backpressure: the switch whose egress congests (where the policy's link and its
        upstream meet)."""
        links = {lk.name: lk for lk in self.lab.topology.links}
        return congested_switch(links[policy.links[0]], links[policy.flow_control.upstream])

    def check(self, policy) -> None:
        """Refuses, before anything is built, what of `policy` this lab cannot apply."""
        fc = policy.flow_control
        sonic = self.lab.sonic_nodes()
        for n in sorted(sonic):
            why = sonic_policy.refusal(policy, n, self._ends())
            if why:
                raise CapabilityError(why)
        if (fc is not None and fc.pauses and getattr(self.lab, "backend", "netns") == "hosts"
                and self._congested(policy) not in sonic):
            raise CapabilityError(f"policy {policy.name}: {fc.kind} is emulated in the lab's namespaces; a "
                                  "testbed's Linux switches have none: map the congested switch to a SONiC "
                                  "switch (its PFC, configured per point) or use metrolab sonic render")
        if policy.slices or (fc is not None and not fc.pauses):
            for link in policy.links or []:
                if not self._on_sonic(link):  # a SONiC port's queues are its ASIC's (refusal above)
                    self.lab.check_queue_link(link)
        lb = policy.load_balancing
        if lb is not None and lb.kind == "planned" and lb.encap == "srv6":
            self.lab.check_srv6()

    def apply(self, policy, flows=None, learning: bool = False) -> None:
        """Make `policy` (a PolicySpec, or None) the one in force; `flows` are the workload's
        learned 5-tuples (planned paths and per-flow queues need them). `learning`: the controller
        has not learned them yet, so what needs them waits (the switches hash, the link keeps its
        own queue) and the rest of the policy (a deep buffer, slices, an allow-list) is in force
        while the flows are learned."""
        self.clear()
        if policy is None:
            return
        self.check(policy)  # the runner refuses it before anything is built; a caller of its own here
        log.info("policy %s on links %s, switches %s", policy.name, ", ".join(policy.links or []) or "-",
                 ", ".join(policy.switches or []) or "-")
        caps = capabilities.probe()
        hosts = {h.name: str(h.address) for h in self.lab.topology.hosts()}
        try:
            fc = policy.flow_control
            sonic = self.lab.sonic_nodes()
            # flow-level backpressure without flows yet: the links keep their own queues while learning;
            # a SONiC switch pauses by itself (its PFC, written below)
            if (fc is not None and fc.pauses and not (learning and fc.kind == "backpressure")
                    and self._congested(policy) not in sonic):
                self._install_pause(policy, flows or [], caps)
            for link in policy.links or []:
                if (fc is None and not policy.slices) or (fc is not None and fc.pauses) or self._on_sonic(link):
                    continue
                if learning and not policy.slices and fc is not None and fc.kind == "per-flow":
                    continue
                self._links.append(link)
                own = self.base.get(link) or self.lab.topology.own_impairment(link)
                imp = qos.with_flow_control(own, fc, len(policy.slices))
                self.lab.impair(link, imp, caps=caps)
                if policy.slices:
                    tree: tuple | None = ("slices", (self._scaled(policy.slices), hosts))
                elif fc is not None and fc.kind == "per-flow":
                    tree = ("per-flow", sorted(flows or [], key=lambda f: (-f.bytes, f.key))[:fc.flows])
                elif fc is not None and fc.kind == "ecn":
                    tree = ("ecn", fc)
                else:
                    tree = None  # tail-drop, deep buffer: the link's own queue, sized
                if tree is not None:
                    for end in self.lab.plan.ends(link):
                        netem, nft = self.lab.node_caps(end.node)
                        self.lab.on(end.node, node.queues, end.ifname, imp, *tree, netem, nft)
            lb = policy.load_balancing
            linux = [s for s in policy.switches or [] if s not in sonic]
            if lb is not None and linux:
                self._hash_switches = linux
                if lb.kind in ("ecmp-l3", "ecmp-l4"):
                    ecmp.set_hash(self.lab, linux, lb.kind[-2:])
                elif learning:
                    ecmp.set_hash(self.lab, linux, "l4")  # what the switches do until planned
                else:
                    self._install_planned(linux, flows or [], lb.encap)
            for n in sorted(sonic):
                self._install_sonic(policy, n)
            if policy.allow is not None:
                addrs = {h.name: self.addresses(h.name) for h in self.lab.topology.hosts()}
                for h in acl.agent_hosts(policy.allow):
                    self._acl_hosts.append(h)  # recorded first: a failure half-way still gets cleared
                    self.lab.policy_touch(h, nft=[("inet", acl.TABLE)])
                    self.lab.on(h, node.nft, acl.script(h, policy.allow, addrs))
        except BaseException:
            self.clear()
            raise
        self.current = policy

    def _install_sonic(self, policy, n: str) -> None:
        """`policy`'s config_db on SONiC switch `n`, sized for this point's links."""
        ends = self._ends()
        if not sonic_policy.touches(policy, n, ends):
            return
        links = {lk.name: lk for lk in self.lab.topology.links}
        mine = self.lab.sonic_ports(n)
        base = {lk: self.base.get(lk) or self.lab.topology.own_impairment(lk) for lk in mine}
        ports = sonic_policy.ports_of(n, links, mine, base)
        fragment = sonic_policy.fragment(policy, n, ports, ends)
        if not fragment:
            return
        fc = policy.flow_control
        pause = None
        if fc is not None and fc.kind == "pause" and self._congested(policy) == n:
            pause = (mine[policy.links[0]][0], mine[fc.upstream][0])
        self.sonic[n] = {"ports": [p.name for p in ports], "pause": pause}  # first: a failure is still restored
        self.lab.sonic_apply(n, fragment)
        log.info("policy %s on SONiC switch %s: %s", policy.name, n, ", ".join(sorted(fragment)))

    def _install_pause(self, policy, flows, caps) -> None:
        """The backpressure emulation on the policy's congested link, fed through `upstream`."""
        fc = policy.flow_control
        links = {lk.name: lk for lk in self.lab.topology.links}
        congested, upstream = links[policy.links[0]], links[fc.upstream]
        node = congested_switch(congested, upstream)
        assert node is not None  # checked with the scenario (model.check_against)
        feeder = upstream.b if upstream.a == node else upstream.a
        imps = {}
        for lk in (congested, upstream):
            imps[lk.name] = qos.classful(self.base.get(lk.name) or self.lab.topology.own_impairment(lk.name))
            self._links.append(lk.name)  # re-impaired with their base when the policy goes
        up = imps[upstream.name]
        rate = up.rate_bps
        assert rate  # checked with the scenario (model.check_against: pause needs rates)
        delay = up.delay_s or 0.0
        headroom = fc.headroom
        if headroom is None:  # the SONiC figure for this span, with the emulated peer's response time
            km = delay * sonic.C_FIBER_KM_S
            headroom = sonic.headroom(km, rate / 1e9, mtu=1500, response_s=fc.response)["xoff"]
        deep = max(qos.DEEP_FLOOR, int(rate / 8 * (2 * delay + fc.response)))  # upstream never drops
        up = dataclasses.replace(up, queue_bytes=deep)
        netem = caps.has("netem")
        for name, imp in imps.items():
            held = deep if name == upstream.name else headroom + (fc.xoff or 6000)
            per = len(flows) + 1 if fc.kind == "backpressure" else 1
            if imp.limit_packets:  # netem's packet limit must not bind before the queues' bytes
                imp = dataclasses.replace(imp, limit_packets=imp.limit_packets + per * -(-held // 64))
            self.lab.impair(name, imp, caps=caps)
        crossing = _crossing(self.lab, flows, congested, node)
        bp = Backpressure(self.lab, scope="flow" if fc.kind == "backpressure" else "port",
                          congested=(node, congested.name), upstream=(feeder, upstream.name), flows=crossing,
                          congested_imp=imps[congested.name], upstream_imp=up, headroom=headroom, xoff=fc.xoff,
                          delay_s=delay, netem=(netem, netem))
        bp.install()
        self.pause = bp
        bp.start()
        log.info("%s on %s (from %s): xoff %d B, headroom %d B, signal delay %.2f ms", fc.kind, congested.name,
                 upstream.name, bp.xoff, headroom, delay * 1e3)

    def counters(self) -> dict:
        """What the policy in force counts, cumulative: its flow-controlled links' queues (both
        directions), and with pause / backpressure the emulation's PFC-like counters."""
        p = self.current
        out: dict = {}
        if p is not None and p.flow_control is not None:
            mine = [lk for lk in p.links or [] if not self._on_sonic(lk)]  # a SONiC port counts itself (below)
            if mine:
                out["links"] = {lk: self.lab.link_counters(lk, False) for lk in mine}
        if self.pause is not None:
            out["pause"] = self.pause.snapshot()
        if self.sonic:
            out["sonic"] = {n: self.lab.sonic_counters(n, s["ports"], list(sonic_policy.PRIORITIES))
                            | {"pause": s["pause"]} for n, s in self.sonic.items()}
        return out

    @staticmethod
    def metrics(before: dict, after: dict) -> dict:
        """One repetition's: the policy's queues' drops and loss; with pause / backpressure, pauses
        sent, time paused, the congested egress's own drops and loss, its deepest queue, the
        controller's slowest reaction and the time its queues sat empty waiting for a resume."""
        out: dict = {}
        if "links" in before and "links" in after:
            drops = sum(after["links"][k][1] - before["links"][k][1] for k in after["links"])
            packets = sum(after["links"][k][3] - before["links"][k][3] for k in after["links"])
            # nothing counted is not measured: never a loss of 0 (metrolab.harness.scenario.verdict judges the counts)
            out |= {"queue_drops": drops, "queue_packets": packets,
                    "queue_loss": drops / (drops + packets) if drops + packets else None}
        if "pause" in before and "pause" in after:
            b, a = before["pause"], after["pause"]
            drops, packets = a["drops"] - b["drops"], a["packets"] - b["packets"]
            out |= {"pause_frames": a["pauses"] - b["pauses"], "pause_s": a["pause_s"] - b["pause_s"],
                    "congested_drops": drops, "congested_packets": packets,
                    "congested_loss": drops / (drops + packets) if drops + packets else None,
                    "congested_max_backlog": a["max_backlog"], "pause_reaction_max_s": a["reaction_max_s"],
                    "pause_starved_s": a["starved_s"] - b["starved_s"]}
        if "sonic" in before and "sonic" in after:
            out |= sonic_policy.combine([sonic_policy.metrics(before["sonic"][n], after["sonic"][n],
                                                              *(after["sonic"][n].get("pause") or (None, None)))
                                         for n in after["sonic"]])
        return out

    def replan(self, down: set[str]) -> float | None:
        """The controller's answer to links going down or coming back: the planned paths made
        again over the links that are up (seconds it took), or None where no plan is in force.
        Without it a flow pinned to a cut link is lost with it (its policy route still points there)."""
        if self._planned_for is None:
            return None
        t0 = time.monotonic()
        for inst in self._planned:
            ecmp.remove_planned(self.lab, inst)
        self._planned, self.plans = [], {}
        switches, flows, encap = self._planned_for
        self._install_planned(switches, flows, encap, exclude=down)
        took = time.monotonic() - t0
        log.info("re-planned around %s in %.3f s", ", ".join(sorted(down)) or "nothing", took)
        return took

    def _install_planned(self, switches: list[str], flows, encap: str = "route", exclude=frozenset()) -> None:
        if not flows:
            raise ValueError("planned paths need the workload's flows (none were learned)")
        self._planned_for = (switches, flows, encap)
        for s in switches:
            # the flows this switch forwards over parallel links that are up, grouped by the links
            # they may take (one left: the switch's ECMP already uses only it)
            by_paths: dict[tuple, list] = {}
            for f in flows:
                try:
                    paths = tuple(sorted(set(ecmp.parallel_links(self.lab, s, f.dst)) - set(exclude)))
                except LabError:
                    continue  # delivered locally (a connected subnet): nothing to choose
                if len(paths) > 1:
                    by_paths.setdefault(paths, []).append(f)
            if not by_paths:
                continue
            assignment: dict[tuple, str] = {}
            for paths, mine in by_paths.items():
                assignment |= plan(mine, list(paths))
            self.plans[s] = assignment
            # one installation per switch: its tables and rule priorities are numbered together
            self._planned.append(ecmp.install_planned(self.lab, s, [f for m in by_paths.values() for f in m],
                                                      assignment, encap))

    def close(self) -> None:
        """Stop a running pause emulation, and nothing else (the rest goes with the lab's namespaces):
        its thread polls the lab, and its netlink sockets hold two of the namespaces, which would
        otherwise outlive the lab's removal, devices and all, as long as the process does."""
        if self.pause is not None:
            bp, self.pause = self.pause, None
            try:
                bp.stop()
            except LabError as exc:  # its points checked it as they ended (counters()): said, not raised
                log.warning("%s", exc)

    def clear(self) -> None:
        if self.pause is not None:
            bp, self.pause = self.pause, None
            try:
                bp.remove()  # released and taken out before the links get their own queues back
            except LabError as exc:  # its points checked it as they ended (counters()); clear the rest
                log.warning("%s", exc)
        for n in list(self.sonic):
            self.lab.sonic_restore(n)
            del self.sonic[n]
        for h in self._acl_hosts:
            self.lab.on(h, node.nft, acl.clear_script())
        for inst in self._planned:
            ecmp.remove_planned(self.lab, inst)
        if self._hash_switches:
            ecmp.set_hash(self.lab, self._hash_switches, "l4")  # the lab's default
        for link in self._links:
            self.lab.impair(link, self.base.get(link) or self.lab.topology.own_impairment(link))
        self._acl_hosts, self._planned, self._hash_switches, self._links = [], [], [], []
        self.plans, self._planned_for = {}, None
        self.current = None


def _crossing(lab, flows, congested, node: str) -> list:
    """The learned flows that leave `node` over the congested link: to its far end's addresses
    where that is a host; every flow `node` forwards otherwise."""
    far = congested.b if congested.a == node else congested.a
    n = lab.topology.nodes[far]
    if n.is_switch:
        return list(flows)
    mine = {str(n.address)} | ({str(n.address6)} if n.address6 else set())
    return [f for f in flows if str(ipaddress.ip_address(f.dst)) in mine]
