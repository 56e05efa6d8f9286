"""The hosts backend: the lab interface on a real testbed (a testbed file's machines).

`up` builds the topology's network on the machines' mapped ports as the netns backend builds it
in namespaces (the lab plan's addresses, permanent neighbours and routes, each link's own
impairment); `impair` puts a point's impairment on an emulated link's WAN emulator (its two
bridged ports, one direction each: `wan_ports[0]` faces the link's end a) or on both ends of a
plain link; counters are read on the machines; ranks start on their machines (Ray tasks and
actors pinned to `host:<machine>`). Machines that run no ranks — Linux switches, WAN emulators —
run no Ray node either: the same operations reach them over ssh (`metrolab.harness.testbed.agent`: the
code shipped once per session to the machine's own python3, nothing installed there). Every
change is journaled on the controller before it is made and undone by `down` — on success, error
and Ctrl-C — and by `metrolab testbed clean` after a killed run.

Policies run on the machines with the netns backend's own code (`metrolab.harness.policy.node`, run
there): queues on a switch's or host's port (tail-drop, deep buffer, ECN, per-flow, slices), the
ECMP hash, planned paths, access control, flow learning; what each is about to change is journaled
first and undone by `down` and `testbed clean` (the machine's sysctls put back as they were).

A node mapped to a SONiC switch is reached over ssh only (no Ray, nothing installed there): its
data plane — addresses, routes, port speeds — is the switch's own configuration (its owner's:
metrolab reads its ports' MACs for the hosts' neighbour entries and builds nothing on it); its
policies are config_db written through its management plane per point (`metrolab.harness.policy.
sonic_policy`: PFC, lossless buffers with distance headroom, WRED/ECN, the PFC watchdog, the
ECMP hash), its tables saved in the journal before the first write and put back after each
point, by `down` and by `testbed clean`; its ASIC's counters go into the rows. Its end of a link
is not shaped: a rate there is the port's speed; delay, jitter and loss need a WAN emulator.

Not yet on testbeds (refused with that reason): pause and backpressure on a Linux switch (the
namespace lab's emulation; a testbed's switches have their own PFC), a policy's queues on a link
that crosses a WAN emulator, SRv6 planned paths and IPv6, RDMA capacity checks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from metrolab.harness.errors import CapabilityError, LabError
from metrolab.harness.lab import remote
from metrolab.harness.lab.base import Lab
from metrolab.harness.lab.plan import Iface, LabPlan
from metrolab.harness.lab.state import LabState, all_states, new_lab_id, pid_alive
from metrolab.harness.policy import node as policy_node
from metrolab.harness.testbed.agent import SshAgent, ssh_agent
from metrolab.harness.testbed.cluster import TestbedRay
from metrolab.harness.testbed.resolve import Testbed, load_testbed
from metrolab.harness.testbed.sonic_mgmt import TABLES, SonicSwitch
from metrolab.netem.profile import Impairment
from metrolab.netem.shaper import Shaper

log = logging.getLogger(__name__)
NOT_CLEANED = "not cleaned: "  # how clean_journals names a lab it could not undo


@dataclass(frozen=True)
class Hop:
    """Where one direction of a link is shaped: egress `ifname` on `machine` (loss without netem:
    nft on `peer_ifname`'s ingress, on the same machine)."""
    machine: str
    ifname: str
    peer_ifname: str | None


def machine_plan(plan: LabPlan, tb: Testbed) -> LabPlan:
    """The lab plan with each interface renamed to the machine port the testbed maps it to."""
    ports = {}
    for lm in tb.spec.map.links:
        lk = next(x for x in tb.topology.links if x.name == lm.link)
        for node, port in zip((lk.a, lk.b), lm.ports):
            ports[(node, lm.link)] = port.split(":", 1)[1]
    out = LabPlan(plan.topology)
    for key, i in plan.ifaces.items():
        peer_key = (i.peer_node, i.link)
        out.ifaces[key] = replace(i, ifname=ports[key], peer_ifname=ports[peer_key])
    by_old = {(k[0], plan.ifaces[k].ifname): ports[k] for k in plan.ifaces}
    out.routes = [replace(r, nexthops=tuple(replace(h, ifname=by_old[(r.node, h.ifname)]) for h in r.nexthops))
                  for r in plan.routes]
    return out


class HostsLab(Lab):
    backend = "hosts"

    def __init__(self, testbed: Testbed, lab_id: str | None = None, ray=None):
        super().__init__(testbed.topology, lab_id or new_lab_id())
        self.tb = testbed
        self.plan = machine_plan(self.plan, testbed)
        self.ray = ray                    # a TestbedRay; connected in up() when not given
        self._own_ray = ray is None
        self.state: LabState | None = None
        self.caps: dict[str, dict] = {}
        self._sonic = frozenset(n for n in self.topology.nodes if "sonic-switch" in testbed.machine_of(n).roles)
        self._speeds: dict[str, dict[str, str]] = {}  # SONiC switch -> its PORT table, read once
        self.agent = ssh_agent(testbed)  # the machines without a Ray node: switches, WAN emulators

    # -- where things are ------------------------------------------------------------------
    def machine(self, node: str) -> str:
        return self.tb.spec.map.nodes[node]

    def ns(self, node: str) -> None:
        """Ranks and tasks run on the machine itself, in no namespace of ours."""
        return None

    def on(self, node: str, fn, *args, **kw):
        if node in self._sonic:
            raise CapabilityError(f"testbed {self.tb.name}: {node} is a SONiC switch ({self.machine(node)}): "
                                  "reached through its management plane only, nothing of metrolab runs there")
        return self.call(self.machine(node), fn, *args, **kw)

    def call(self, machine: str, fn, *args, **kw):
        """`fn` run on `machine`: a Ray task on a Ray node's machine, else over ssh."""
        return via(machine, self.agent, self.ray).on(machine, fn, *args, **kw)

    def spawn(self, node: str, argv: list[str], env: dict[str, str], timeout: float = 3600, **_popen):
        """`python ARGV` on the node's machine (a Ray task), as a process handle."""
        return RemoteProcess(self.ray, self.machine(node), argv, env, timeout)

    def journal(self) -> LabState:
        if self.state is None:
            raise LabError(f"lab {self.lab_id} has no journal: build it with up()")
        return self.state

    def hops(self, link: str) -> list[Hop]:
        """The two directions of `link`: a->b then b->a."""
        lm = next(x for x in self.tb.spec.map.links if x.link == link)
        a, b = self.plan.ends(link)
        if lm.emulator:
            em = self.tb.machine(lm.emulator)
            assert em.wan_ports is not None
            toward_a, toward_b = em.wan_ports
            return [Hop(em.name, toward_b, toward_a), Hop(em.name, toward_a, toward_b)]
        return [Hop(self.machine(a.node), a.ifname, None), Hop(self.machine(b.node), b.ifname, None)]

    def shaped_hops(self, link: str) -> list[Hop]:
        """The directions of `link` metrolab shapes: a SONiC switch's port is left as it is."""
        sonic = {self.machine(n) for n in self._sonic}
        return [h for h in self.hops(link) if h.machine not in sonic]

    def rxe_device(self, node: str) -> str:
        iface = self.plan.ifaces_of(node)[0]
        m = self.tb.machine(self.machine(node))
        dev = next((x.rdma for x in m.interfaces if x.name == iface.ifname), None)
        if dev is None:
            raise CapabilityError(f"testbed {self.tb.name}: machine {m.name} has no RDMA device on {iface.ifname}")
        return f"rxe_{iface.ifname}" if dev == "soft-roce" else dev

    # -- policies --------------------------------------------------------------------------------
    def node_caps(self, node: str) -> tuple[bool, bool]:
        caps = self.caps.get(self.machine(node))
        if caps is None:
            caps = self.caps[self.machine(node)] = self.on(node, remote.capabilities)
        return caps["netem"], caps["nft"]

    def policy_touch(self, node: str, nft=(), netlink=()) -> None:
        """Journal what a policy is about to change on `node`'s machine before it changes it: the
        first time, the sysctls a policy may set, as they are; then its nft tables, routes and rules."""
        state, machine = self.journal(), self.machine(node)
        touched = state.extra.setdefault("policy", {})
        if machine not in touched:
            touched[machine] = {"sysctls": self.call(machine, policy_node.read_sysctls,
                                                       list(policy_node.JOURNALED_SYSCTLS)),
                                "nft": [], "netlink": []}
        entry = touched[machine]
        entry["nft"] += [list(t) for t in nft if list(t) not in entry["nft"]]
        entry["netlink"] += [[w, kw] for w, kw in netlink if [w, kw] not in entry["netlink"]]
        state.save()

    # -- SONiC switches -------------------------------------------------------------------------
    def sonic_nodes(self) -> frozenset[str]:
        return self._sonic

    def _switch(self, node: str) -> SonicSwitch:
        return SonicSwitch(self.tb.machine_of(node), self.tb.known_hosts)

    def sonic_ports(self, node: str) -> dict[str, tuple[str, float | None]]:
        if node not in self._speeds:
            self._speeds[node] = {k.split("|", 1)[1]: v.get("speed", "")
                                  for k, v in self._switch(node).snapshot(("PORT",)).items()}
        out = {}
        for i in self.plan.ifaces_of(node):
            speed = self._speeds[node].get(i.ifname, "")
            out[i.link] = (i.ifname, int(speed) / 1000 if speed.isdigit() else None)  # PORT's speed is Mb/s
        return out

    def sonic_apply(self, node: str, fragment: dict) -> list[str]:
        """Journals the switch's tables (those metrolab writes) before the first write of the lab."""
        state, machine = self.journal(), self.machine(node)
        saved = state.extra.setdefault("sonic", {})
        if machine not in saved:
            saved[machine] = self._switch(node).snapshot(TABLES)
            state.save()
        return self._switch(node).apply(fragment)

    def sonic_restore(self, node: str) -> None:
        saved = self.journal().extra.get("sonic", {}).get(self.machine(node))
        if saved is not None:
            self._switch(node).restore(saved)

    def sonic_counters(self, node: str, ports: list[str], priorities: list[int]) -> dict:
        return self._switch(node).counters(ports, priorities, priorities)

    def check_queue_link(self, link: str) -> None:
        lm = next(x for x in self.tb.spec.map.links if x.link == link)
        if lm.emulator:
            raise CapabilityError(f"testbed {self.tb.name}: link {link} crosses WAN emulator {lm.emulator}; a "
                                  "policy's queues go on a switch's own port (a link between a switch and a host "
                                  "or another switch without an emulator): name such a link in the policy's links")

    def check_srv6(self) -> None:
        raise CapabilityError(f"testbed {self.tb.name}: SRv6 planned paths need the machines' IPv6 link-local "
                              "addresses, which the hosts backend does not read yet (IPv6 is not yet on testbeds); "
                              "use planned paths with encap: route")

    def log_dir(self, node: str, run_dir: Path) -> str:
        """Where a rank on `node` writes its log: under its machine's metrolab_root."""
        root = self.tb.machine(self.machine(node)).vars.get("metrolab_root", "/opt/metrolab")
        return f"{root}/runs/{Path(run_dir).name}/logs"

    # -- build ---------------------------------------------------------------------------------
    def node_config(self, node: str) -> tuple[list[dict], list[dict]]:
        me = self.topology.nodes[node]
        ports, routes = [], []
        for i in self.plan.ifaces_of(node):
            peer = self.topology.nodes[i.peer_node]
            ports.append({"ifname": i.ifname, "local": str(me.address),
                          "peer": str(peer.address) if me.is_switch else None,
                          "mtu": next(lk for lk in self.topology.links if lk.name == i.link).props.mtu})
        for r in self.plan.routes_of(node):
            if r.family != 4:
                continue
            hops = [{"gateway": h.gateway, "ifname": h.ifname} for h in r.nexthops]
            # a machine's default route is its owner's (management): a host reaches the lab's
            # prefixes by routes of their own instead
            for dst in (self.prefixes() if r.dst == "default" else [r.dst]):
                routes.append({"dst": dst, "nexthops": hops})
        return ports, routes

    def prefixes(self) -> list[str]:
        """Every IPv4 prefix the topology's addresses come from (its sites' and its infrastructure's)."""
        sites = self.topology.sites.values() if isinstance(self.topology.sites, dict) else self.topology.sites
        return sorted({str(s.subnet) for s in sites} | {str(self.topology.spec.infra_subnet)})

    def leftovers(self) -> list[str]:
        """Labs left on this testbed (by `lab up`, or a killed run): the machines still hold what they
        changed (a SONiC switch's tables too, which a new lab would otherwise save as the switch's own)."""
        mine = str(Path(self.tb.source).resolve())
        return [st.lab_id for st in all_states() if st.backend == "hosts" and st.extra.get("testbed") == mine
                and st.lab_id != self.lab_id and not pid_alive(st.pid)]

    def up(self) -> None:
        left = self.leftovers()
        if left:
            raise LabError(f"testbed {self.tb.name}: lab {', '.join(left)} is still on the machines (left up, or by "
                           f"a killed run); take it down first: metrolab lab down --lab {left[0]}, or metrolab "
                           f"testbed clean {self.tb.source} --keep-nodes")
        log.info("lab %s: building %s on testbed %s", self.lab_id, self.topology.name, self.tb.name)
        self.state = LabState(self.lab_id, self.backend, self.topology.source, self.topology.digest,
                              extra={"testbed": str(Path(self.tb.source).resolve()), "configured": {},
                                     "shaped": {}})
        self.state.save()
        try:
            if self.ray is None:
                self.ray = TestbedRay(self.tb, namespace=self.lab_id)
            ours = [n for n in self.topology.nodes if n not in self._sonic]
            missing = sorted({self.machine(n) for n in ours} - set(self.agent.machines) - set(self.ray.machines()))
            if missing:
                raise LabError(f"testbed {self.tb.name}: no Ray node on {', '.join(missing)} "
                               "(run `metrolab testbed provision`)")
            for m in {self.machine(n) for n in ours} | {h.machine for lk in self.topology.links
                                                        for h in self.shaped_hops(lk.name)}:
                self.caps[m] = self.call(m, remote.capabilities)
            self._check_impairments()
            macs = {}
            for node in self.topology.nodes:
                ifnames = [i.ifname for i in self.plan.ifaces_of(node)]
                macs[node] = (self._switch(node).macs(ifnames) if node in self._sonic
                              else self.on(node, remote.macs, ifnames))
            for node in ours:  # a SONiC switch's data plane is its own configuration
                ports, routes = self.node_config(node)
                neigh = [{"dst": str(self.topology.nodes[i.peer_node].address), "ifname": i.ifname,
                          "lladdr": macs[i.peer_node][i.peer_ifname]} for i in self.plan.ifaces_of(node)]
                machine = self.machine(node)
                # journal what is about to be added first: a kill during the call is cleanable
                self.state.extra["configured"][machine] = {"addresses": ports, "routes": routes, "neighbours": neigh}
                self.state.save()
                self.state.extra["configured"][machine] = self.on(node, remote.configure, ports, routes, neigh)
                self.state.save()
            for lk in self.topology.links:
                self.impair(lk.name, lk.impairment(self.topology.group_index))
            self.state.status = "up"
            self.state.save()
        except BaseException:
            self.down()
            raise

    def _check_impairments(self) -> None:
        """Refuse before changing anything what a machine's kernel cannot apply (the shaper's own check)."""
        for lk in self.topology.links:
            imp = lk.impairment(self.topology.group_index)
            ends = {lk.a, lk.b} & self._sonic
            if ends and (imp.netem_only() or imp.has_loss):
                raise CapabilityError(f"link {lk.name}: {', '.join(sorted(ends))} is a SONiC switch, whose port "
                                      f"metrolab does not shape: {', '.join(imp.netem_only()) or 'loss'} needs a "
                                      "WAN emulator on the link (map.links[].emulator)")
            for hop in self.shaped_hops(lk.name):
                caps = self.caps[hop.machine]
                missing = Shaper(None, hop.machine, caps["netem"], caps["nft"]).check(imp, f"link {lk.name}")
                if missing:
                    raise CapabilityError(f"link {lk.name}: {hop.machine} ({caps['kernel']}) cannot apply "
                                          f"{', '.join(missing)}")

    def impair(self, link: str, imp: Impairment, strict: bool = True, caps=None) -> None:
        imp = self.staged(link, imp)
        state = self.journal()
        out = []
        for hop in self.shaped_hops(link):
            state.extra["shaped"].setdefault(hop.machine, [])
            if [hop.ifname, hop.peer_ifname] not in state.extra["shaped"][hop.machine]:
                state.extra["shaped"][hop.machine].append([hop.ifname, hop.peer_ifname])
                state.save()
            out.append(self.call(hop.machine, remote.shape, hop.ifname, imp, strict, f"link {link}",
                                   hop.peer_ifname) | {"node": hop.machine})
        self.applied[link] = out
        state.extra["applied"] = self.applied
        state.save()

    def link_counters(self, link: str, ecn: bool) -> tuple[int, int, int, int]:
        sent = dropped = marked = packets = 0
        for hop in self.shaped_hops(link):
            s, d, m, p = self.call(hop.machine, remote.counters, [hop.ifname], ecn)
            sent, dropped, marked, packets = sent + s, dropped + d, marked + m, packets + p
        return sent, dropped, marked, packets

    def status(self) -> dict[str, Any]:
        return {"lab": self.lab_id, "backend": self.backend, "testbed": self.tb.name,
                "topology": self.topology.name, "applied": self.applied,
                "configured": (self.state.extra.get("configured") if self.state else {})}

    # -- teardown --------------------------------------------------------------------------------
    def close_handles(self) -> None:
        """Leave the lab up, drop this process's connections to the testbed (Ray's, ssh sessions)."""
        self.agent.close()
        if self._own_ray and self.ray is not None:
            self.ray.close()
            self.ray = None

    def down(self) -> None:
        if self.state is None:
            return
        if self.ray is None and (self.state.extra.get("configured") or self.state.extra.get("shaped")):
            self.ray = TestbedRay(self.tb)
        errors = undo(self.state, self.ray, self.tb, self.agent)
        self.agent.close()
        if self._own_ray and self.ray is not None:
            self.ray.close()
            self.ray = None
        self.state.remove()
        self.state = None
        if errors:
            raise LabError(f"lab {self.lab_id}: teardown left " + "; ".join(errors))


class RemoteProcess:
    """What run_ranks and run_pair use of a Popen (communicate, poll, wait, kill, returncode) for a
    process on a testbed machine: a Ray task running it to completion there."""

    def __init__(self, ray, machine: str, argv: list[str], env: dict[str, str], timeout: float):
        self.ray, self.machine = ray, machine
        task = ray.ray.remote(num_cpus=0, resources={f"host:{machine}": 0.001})(remote.run_python)
        self.ref = task.remote(argv, env, timeout)
        self.returncode: int | None = None
        self.pid = -1
        self._out: tuple[str, str] | None = None

    def _take(self, timeout: float | None) -> None:
        if self._out is not None:
            return
        try:
            rc, out, err = self.ray.ray.get(self.ref, timeout=timeout)
        except self.ray.ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"{self.machine}: no result within {timeout} s") from None
        except Exception as exc:  # noqa: BLE001 — a cancelled or lost task: the process is gone
            rc, out, err = -9, "", f"{self.machine}: {type(exc).__name__}: {exc}"
        self.returncode, self._out = rc, (out, err)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self._take(timeout)
        assert self._out is not None
        return self._out

    def poll(self) -> int | None:
        ready, _ = self.ray.ray.wait([self.ref], timeout=0)
        if ready:
            self._take(None)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        self._take(timeout)
        return self.returncode

    def kill(self) -> None:
        if self._out is None:
            try:
                self.ray.ray.cancel(self.ref, force=True)
            except Exception:  # noqa: BLE001 — already done
                pass


def attach(state: LabState) -> HostsLab:
    """A hosts lab left up by `metrolab lab up --testbed` (its journal names the testbed file)."""
    lab = HostsLab(load_testbed(state.extra["testbed"]), lab_id=state.lab_id)
    lab.state = state
    lab.applied = state.extra.get("applied", {})
    return lab


def via(machine: str, agent: SshAgent, ray):
    """What reaches `machine`: the ssh agent where it runs no Ray node, else the testbed's Ray."""
    return agent if machine in agent.machines else ray


def undo(state: LabState, ray, tb: Testbed, agent: SshAgent | None = None) -> list[str]:
    """Undo what a hosts lab's journal records (its own run, or a killed one's); what could not be
    undone, by machine. `agent`: the lab's own ssh sessions (else sessions of its own, closed after)."""
    mine = agent is None
    agent = agent or ssh_agent(tb)
    try:
        return _undo(state, ray, tb, agent)
    finally:
        if mine:
            agent.close()


def _undo(state: LabState, ray, tb: Testbed, agent: SshAgent) -> list[str]:
    errors = []

    def call(machine: str, fn, *args):
        return via(machine, agent, ray).on(machine, fn, *args)
    if ray is not None:
        try:  # the ranks first: they hold ports and addresses
            ray.kill_actors(state.lab_id)
        except Exception as exc:  # noqa: BLE001 — undo the rest, report this one
            errors.append(f"ranks not stopped ({exc})")
    for machine, saved in state.extra.get("sonic", {}).items():
        try:
            SonicSwitch(tb.machine(machine), tb.known_hosts).restore(saved, TABLES)
        except Exception as exc:  # noqa: BLE001 — undo the rest, report this one
            errors.append(f"{machine}: SONiC tables not restored ({exc})")
    for machine, journal in state.extra.get("policy", {}).items():
        try:
            call(machine, policy_node.clear, journal)
        except Exception as exc:  # noqa: BLE001 — undo the rest, report this one
            errors.append(f"{machine}: policy not removed ({exc})")
    for machine, hops in state.extra.get("shaped", {}).items():
        try:
            call(machine, remote.unshape, [tuple(h) for h in hops])
        except Exception as exc:  # noqa: BLE001 — undo the rest, report this one
            errors.append(f"{machine}: impairment not removed ({exc})")
    for machine, added in state.extra.get("configured", {}).items():
        try:
            call(machine, remote.unconfigure, added)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{machine}: addresses and routes not removed ({exc})")
    return errors


__all__ = ["NOT_CLEANED", "HostsLab", "Iface", "attach", "clean_journals", "machine_plan", "undo"]


def clean_journals(tb: Testbed | None = None) -> list[str]:
    """Undo every hosts lab journaled on this controller (of testbed `tb`, or of any testbed whose
    file is still there) whose run is gone; what was removed, and what not (NOT_CLEANED first)."""
    out = []
    for st in all_states():
        if st.backend != "hosts" or (st.pid != os.getpid() and pid_alive(st.pid)):
            continue
        path = str(st.extra.get("testbed") or "")
        if tb is not None and Path(path).resolve() != Path(tb.source).resolve():
            continue
        try:
            bed = tb or load_testbed(path)
            with TestbedRay(bed) as ray:
                errors = undo(st, ray, bed)
        except Exception as exc:  # noqa: BLE001 — a testbed not reachable now: keep its journal
            out.append(f"{NOT_CLEANED}{st.lab_id} ({exc})")
            continue
        if errors:
            out.append(f"{NOT_CLEANED}{st.lab_id}: " + "; ".join(errors))
            continue
        st.remove()
        out.append(f"{st.lab_id} (testbed {Path(path).name})")
    return out
