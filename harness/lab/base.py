"""The lab interface every backend (netns, vm, hosts) implements."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from metrolab.harness import capabilities
from metrolab.harness.errors import CapabilityError
from metrolab.harness.lab.plan import LabPlan, build_plan
from metrolab.harness.spec.resolve import Topology
from metrolab.netem.profile import Impairment


class Lab(abc.ABC):
    backend: str = "?"

    def __init__(self, topology: Topology, lab_id: str):
        self.topology = topology
        self.lab_id = lab_id
        self.plan: LabPlan = build_plan(topology)
        self.applied: dict[str, list[dict]] = {}  # per link, what the shaper reported for each end
        # links whose queues a policy of this run acts on (set before up()): they keep the TBF rate
        # stage at every point, so a policy's points and the baselines they are compared with share
        # one shaper (and one buffer: netem's rate would queue up to its packet limit instead)
        self.tbf_links: set[str] = set()
        # hosts hand their links wire-sized packets (set before up(); a topology that impairs a link
        # per packet sets it too): a qdisc loses, duplicates, reorders and jitters a buffer at a
        # time, and a TCP sender's GSO buffer holds up to 44 packets, lost as one (up to 44 times
        # fewer loss events than the rate says). A run sets it for all its points, baselines
        # included: it costs TCP CPU, which must be the same wherever two points are compared
        self.wire_packets = False

    @abc.abstractmethod
    def up(self) -> None:
        """Build everything; on any failure undo what was built and re-raise."""

    @abc.abstractmethod
    def down(self) -> None:
        """Remove everything this lab created. Safe to call twice."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """Nodes, links, addresses and qdiscs as read back from the lab."""

    @abc.abstractmethod
    def impair(self, link: str, imp: Impairment, strict: bool = True) -> None:
        """Replace the impairment on both ends of `link`."""

    @abc.abstractmethod
    def ns(self, node: str) -> str | None:
        """The network namespace a process for `node` starts in (None: the machine's own)."""

    @abc.abstractmethod
    def spawn(self, node: str, argv: list[str], env: dict[str, str], **popen_kw):
        """`python ARGV` where `node` lives, with `env` over that place's environment: a process
        handle (communicate, poll, wait, kill, returncode)."""

    @abc.abstractmethod
    def on(self, node: str, fn, *args, **kw):
        """fn(*args, **kw) where `node` lives (its namespace here, its machine on a testbed)."""

    @abc.abstractmethod
    def link_counters(self, link: str, ecn: bool) -> tuple[int, int, int, int]:
        """Both directions of `link`: bytes sent, packets its queues dropped, CE marks (read only
        when `ecn`), packets sent."""

    def staged(self, link: str, imp: Impairment) -> Impairment:
        """`imp` as `link` takes it: in the TBF rate stage where a policy of this run acts on it."""
        return dataclasses.replace(imp, tbf_stage=True) if link in self.tbf_links else imp

    def rate_stage(self, links: Sequence[str]) -> str | None:
        """What carries the rate of `links` as last impaired (`netem`, `tbf`; joined where the ends
        differ), from what the shaper reported (`applied`, kept by every backend)."""
        got = {a.get("params", {}).get("rate_stage") for lk in links for a in self.applied.get(lk, [])}
        return ",".join(sorted(s for s in got if s)) or None

    def node_caps(self, node: str) -> tuple[bool, bool]:
        """(sch_netem, nftables) where `node` lives: what its queues can be built of."""
        caps = capabilities.probe()
        return caps.has("netem"), caps.has("nft")

    def policy_touch(self, node: str, nft: Sequence[tuple[str, str]] = (),
                     netlink: Sequence[tuple[str, dict]] = ()) -> None:
        """Called before a policy changes `node`: the nft tables ((family, name)) and routes and
        rules (("route" | "rule", arguments)) it is about to add; its sysctls may change too. A
        backend whose nodes outlive the lab journals them, so that `down` and a clean after a
        kill put the node back (metrolab.harness.policy.node.clear); a namespace goes with the lab."""
        return None

    def sonic_nodes(self) -> frozenset[str]:
        """The topology's switches that are SONiC switches (their policies go to config_db through
        the management plane: `sonic_apply`); only a testbed has them."""
        return frozenset()

    def sonic_ports(self, node: str) -> dict[str, tuple[str, float | None]]:
        """SONiC switch `node`'s ports in the lab: link -> (port name, its speed in Gb/s as the
        switch's PORT table has it, or None)."""
        raise NotImplementedError(f"{self.backend}: no SONiC switches")

    def sonic_apply(self, node: str, fragment: dict) -> list[str]:
        """Writes a config_db fragment on SONiC switch `node` (its own tables saved first)."""
        raise NotImplementedError(f"{self.backend}: no SONiC switches")

    def sonic_restore(self, node: str) -> None:
        """Puts SONiC switch `node`'s tables back as they were before `sonic_apply`."""
        raise NotImplementedError(f"{self.backend}: no SONiC switches")

    def sonic_counters(self, node: str, ports: list[str], priorities: list[int]) -> dict:
        """SONiC switch `node`'s ASIC counters for `ports` (metrolab.harness.policy.sonic_db.counters)."""
        raise NotImplementedError(f"{self.backend}: no SONiC switches")

    def check_queue_link(self, link: str) -> None:
        """Refuses (CapabilityError) a policy's queues on `link` where this backend cannot place them."""
        return None

    def check_srv6(self) -> None:
        """Refuses (CapabilityError) SRv6 planned paths where this backend cannot address them."""
        return None

    def set_link(self, link: str, up: bool) -> None:
        """Both routers take `link` out of their routes (up=False), as on a loss of signal, or put
        it back: ECMP carries on over the paths that remain. (Dropping what is on the link is the
        impairment's job: metrolab.harness.runner.events cuts a link with both.)"""
        raise CapabilityError(f"the {self.backend} backend cannot reroute around link {link} (events: "
                              "link-down, flap, node-down)")

    def log_dir(self, node: str, run_dir: Path) -> str:
        """Where a rank on `node` writes its log."""
        return str(Path(run_dir) / "logs")

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()
