"""Applies a scenario's policy to the lab's namespaces, replacing the previous one: everything the
old policy installed is removed (links re-impaired with their base impairment, rules and tables
deleted, nft tables dropped, the ECMP hash back to the lab's L4 default) before the new one goes
in, so switching policies between sweep points leaves nothing stale.
"""

from __future__ import annotations

import logging

from harness import capabilities, sh
from harness.errors import LabError
from harness.policy import acl, ecmp, qos

log = logging.getLogger(__name__)


def needs_flows(policy) -> bool:
    """Planned paths and per-flow queues act on the workload's learned 5-tuples."""
    return policy is not None and (
        (policy.load_balancing is not None and policy.load_balancing.kind == "planned")
        or (policy.flow_control is not None and policy.flow_control.kind == "per-flow"))


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
        self.plans: dict[str, dict[tuple, str]] = {}  # switch -> {5-tuple: planned link}, for the record

    def addresses(self, host: str) -> list[str]:
        n = self.lab.topology.nodes[host]
        return [str(n.address)] + ([str(n.address6)] if n.address6 else [])

    def apply(self, policy, flows=None, learning: bool = False) -> None:
        """Make `policy` (a PolicySpec, or None) the one in force; `flows` are the workload's
        learned 5-tuples (planned paths and per-flow queues need them). `learning`: the controller
        has not learned them yet, so what needs them waits (the switches hash, the link keeps its
        own queue) and the rest of the policy (a deep buffer, slices, an allow-list) is in force
        while the flows are learned."""
        self.clear()
        if policy is None:
            return
        log.info("policy %s on links %s, switches %s", policy.name, ", ".join(policy.links or []) or "-",
                 ", ".join(policy.switches or []) or "-")
        caps = capabilities.probe()
        hosts = {h.name: str(h.address) for h in self.lab.topology.hosts()}
        try:
            for link in policy.links or []:
                if policy.flow_control is None and not policy.slices:
                    continue
                if learning and not policy.slices and policy.flow_control.kind == "per-flow":
                    continue
                self._links.append(link)
                fc = policy.flow_control
                imp = qos.with_flow_control(self.base.get(link) or self._own(link), fc, len(policy.slices))
                self.lab.impair(link, imp, caps=caps)
                for end in self.lab.plan.ends(link):
                    shaper = self.lab.shaper(end.node, caps)
                    if policy.slices:
                        qos.install_slices(shaper, end.ifname, imp, policy.slices, hosts, netem=caps.has("netem"))
                    elif fc is not None and fc.kind == "per-flow":
                        heavy = sorted(flows or [], key=lambda f: (-f.bytes, f.key))[:fc.flows]
                        qos.install_per_flow(shaper, end.ifname, imp, heavy, netem=caps.has("netem"))
                    elif fc is not None and fc.kind == "ecn":
                        qos.install_ecn(shaper, end.ifname, imp, fc, netem=caps.has("netem"))
            lb = policy.load_balancing
            if lb is not None:
                self._hash_switches = list(policy.switches)
                if lb.kind in ("ecmp-l3", "ecmp-l4"):
                    ecmp.set_hash(self.lab, policy.switches, lb.kind[-2:])
                elif learning:
                    ecmp.set_hash(self.lab, policy.switches, "l4")  # what the switches do until planned
                else:
                    self._install_planned(policy.switches, flows or [], lb.encap)
            if policy.allow is not None:
                addrs = {h.name: self.addresses(h.name) for h in self.lab.topology.hosts()}
                for h in acl.agent_hosts(policy.allow):
                    self._acl_hosts.append(h)  # recorded first: a failure half-way still gets cleared
                    sh.nft(acl.script(h, policy.allow, addrs), netns=self.lab.ns(h))
        except BaseException:
            self.clear()
            raise
        self.current = policy

    def _own(self, link: str):
        lk = next(x for x in self.lab.topology.links if x.name == link)
        return lk.impairment(self.lab.topology.group_index)

    def _install_planned(self, switches: list[str], flows, encap: str = "route") -> None:
        from harness.policy.planner import plan
        if not flows:
            raise ValueError("planned paths need the workload's flows (none were learned)")
        for s in switches:
            # the flows this switch forwards over parallel links, grouped by the links they may take
            by_paths: dict[tuple, list] = {}
            for f in flows:
                try:
                    paths = tuple(sorted(ecmp.parallel_links(self.lab, s, f.dst)))
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

    def clear(self) -> None:
        for h in self._acl_hosts:
            sh.nft(acl.clear_script(), netns=self.lab.ns(h))
        for inst in self._planned:
            ecmp.remove_planned(self.lab, inst)
        if self._hash_switches:
            ecmp.set_hash(self.lab, self._hash_switches, "l4")  # the lab's default
        for link in self._links:
            self.lab.impair(link, self.base.get(link) or self._own(link))
        self._acl_hosts, self._planned, self._hash_switches, self._links = [], [], [], []
        self.plans = {}
        self.current = None
