"""Switch policies a scenario names: flow control, load balancing, tenant slices and an access
allow-list, each applied to switches or links; a sweep can switch between them (`sweep.policy`).

    policies:
      - name: deep
        links: [wan-ab-1, wan-ab-2]
        flow_control: {kind: deep-buffer}
      - name: planned
        switches: [gw-a, gw-b]
        load_balancing: {kind: planned}
      - name: tenants
        links: [wan-ab-1]
        slices:
          - {name: training, dscp: 26, guaranteed: 150mbit, ceiling: 200mbit}
          - {name: bulk, source: s1, guaranteed: 20mbit}
          - {name: control, dscp: 46, guaranteed: 2mbit, strict: true}
      - name: agents
        allow: [{a: a1, b: b1, ports: [29500], proto: tcp}]
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from metrolab.harness.errors import SpecError
from metrolab.harness.spec.topology import NAME
from metrolab.netem.units import parse_rate, parse_size, parse_time


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlowControl(_Strict):
    """tail-drop: a shallow buffer (`buffer`, default 32 KiB); deep-buffer: at least the link's
    bandwidth-delay product (emulated lossless); ecn: CE marking above `ecn_threshold`; per-flow:
    one queue per 5-tuple (`flows` classes) so an elephant cannot starve a mouse.

    pause / backpressure (emulated, metrolab.harness.policy.backpressure; the guest kernel's sch_plug): the
    policy's one link is the congested one, `upstream` the link whose far end feeds it; when the
    congested egress's queue passes `xoff` the upstream egress stops, one one-way delay later —
    all of it (pause: port-level PFC on one priority) or only that flow (backpressure: flow-level,
    a queue per learned 5-tuple on both sides). The congested queue holds xoff + `headroom`;
    the default headroom is what `metrolab sonic render` computes for the upstream link's distance
    and rate with `response` as the peer's response time (the emulated controller's reaction)."""

    kind: Literal["tail-drop", "deep-buffer", "ecn", "per-flow", "pause", "backpressure"]
    buffer: int | None = Field(default=None, description="bytes")
    ecn_threshold: float = Field(default=0.001, gt=0, description="seconds of queue before marking")
    flows: int = Field(default=16, ge=2, le=1024)
    upstream: str | None = Field(default=None, description="pause/backpressure: the link the signal crosses")
    headroom: int | None = Field(default=None, description="pause/backpressure: bytes above xoff")
    xoff: int | None = Field(default=None, description="pause/backpressure: bytes queued before a pause (4 MTU)")
    response: float = Field(default=0.5, ge=0, description="pause/backpressure: the peer's response time the "
                            "default headroom allows for (the emulated controller's reaction; tens of ms "
                            "under TCG, so 0.5 s)")

    @field_validator("buffer", "xoff", mode="before")
    @classmethod
    def _buffer(cls, v):
        if v is None:
            return None
        n = parse_size(v) if isinstance(v, str) else int(v)
        if n < 1500:
            raise ValueError("a buffer holds at least one 1500-byte packet")
        return n

    @field_validator("headroom", mode="before")
    @classmethod
    def _headroom(cls, v):
        if v is None:
            return None
        n = parse_size(v) if isinstance(v, str) else int(v)
        if n < 0:
            raise ValueError("headroom is >= 0 bytes")
        return n

    @field_validator("ecn_threshold", "response", mode="before")
    @classmethod
    def _threshold(cls, v):
        return parse_time(v)

    @property
    def pauses(self) -> bool:
        return self.kind in ("pause", "backpressure")

    @model_validator(mode="after")
    def _upstream(self):
        if self.pauses and self.upstream is None:
            raise ValueError(f"{self.kind}: name the upstream link the pause signal crosses (upstream)")
        if not self.pauses and (self.upstream, self.headroom, self.xoff) != (None, None, None):
            raise ValueError(f"{self.kind}: upstream, headroom and xoff are for pause and backpressure")
        return self


class LoadBalancing(_Strict):
    """ecmp-l3 / ecmp-l4: the kernel's multipath hash over addresses or the 5-tuple; planned: a
    controller learns the workload's flows and pins each to a path with a per-flow policy route,
    to the link's next hop (encap: route) or in SRv6 to a segment only that link leads to
    (encap: srv6; the link's mtu must hold the 64 extra bytes)."""

    kind: Literal["ecmp-l3", "ecmp-l4", "planned"]
    encap: Literal["route", "srv6"] = "route"


class Slice(_Strict):
    """A tenant class on a link: its traffic (by DSCP or source) in a queue of its own with a
    guaranteed rate, borrowing up to `ceiling`. `strict`: served before every other class while
    under its guaranteed rate (priority scheduling for control traffic, white paper 4.3.3: a small
    message does not wait behind a deep buffer's bulk); its guaranteed rate bounds what it can
    take from the rest."""

    name: str = Field(pattern=NAME)
    dscp: int | None = Field(default=None, ge=0, le=63)
    source: str | None = Field(default=None, description="a host name or a CIDR")
    guaranteed: float
    ceiling: float | None = None
    strict: bool = False

    @field_validator("guaranteed", "ceiling", mode="before")
    @classmethod
    def _rates(cls, v):
        return None if v is None else parse_rate(v)

    @model_validator(mode="after")
    def _check(self):
        if (self.dscp is None) == (self.source is None):
            raise ValueError(f"slice {self.name}: key it by exactly one of dscp or source")
        if self.guaranteed <= 0:
            raise ValueError(f"slice {self.name}: guaranteed rate must be > 0")
        if self.ceiling is not None and self.ceiling < self.guaranteed:
            raise ValueError(f"slice {self.name}: ceiling {self.ceiling:g} bit/s is below its guaranteed "
                             f"{self.guaranteed:g} bit/s")
        return self


class Allow(_Strict):
    a: str
    b: str
    ports: list[int] = Field(default_factory=list, description="destination ports on b (empty: any)")
    proto: Literal["tcp", "udp", "any"] = "any"

    @field_validator("ports")
    @classmethod
    def _ports(cls, v):
        bad = [p for p in v if not 0 < p < 65536]
        if bad:
            raise ValueError(f"port {bad[0]} is not in 1..65535")
        return v


class PolicySpec(_Strict):
    name: str = Field(pattern=NAME)
    switches: list[str] | None = None
    links: list[str] | None = None
    flow_control: FlowControl | None = None
    load_balancing: LoadBalancing | None = None
    slices: list[Slice] = Field(default_factory=list)
    allow: list[Allow] | None = None

    @model_validator(mode="after")
    def _something(self):
        if not (self.flow_control or self.load_balancing or self.slices or self.allow is not None):
            raise ValueError(f"policy {self.name} sets nothing (flow_control, load_balancing, slices or allow)")
        names = [s.name for s in self.slices]
        if len(set(names)) != len(names):
            raise ValueError(f"policy {self.name}: slice names repeat")
        if self.slices and self.flow_control is not None and self.flow_control.kind in ("per-flow", "ecn"):
            raise ValueError(f"policy {self.name}: slices and {self.flow_control.kind} both replace the link's "
                             "queue; put them in separate policies")
        if self.name == "none":
            raise ValueError("'none' is the absence of a policy; name yours otherwise")
        return self


def congested_switch(congested, upstream) -> str | None:
    """The node the congested link and the upstream link share (whose egress congests)."""
    common = {congested.a, congested.b} & {upstream.a, upstream.b}
    return next(iter(common)) if len(common) == 1 else None


def _check_pause(p: PolicySpec, topo, links: dict, file: str, at: str) -> list[SpecError]:
    fc = p.flow_control
    assert fc is not None and fc.upstream is not None  # pause kinds only, upstream required
    if p.links is None or len(p.links) != 1:
        return [SpecError(file, f"{at}.links", p.links, f"{fc.kind} watches one congested link; name exactly one")]
    if fc.upstream not in links:
        return [SpecError(file, f"{at}.flow_control.upstream", fc.upstream, f"no such link in {topo.name}")]
    congested, upstream = links.get(p.links[0]), links[fc.upstream]
    if congested is None:
        return []  # reported above
    node = congested_switch(congested, upstream)
    if node is None or congested is upstream:
        return [SpecError(file, f"{at}.flow_control.upstream", fc.upstream,
                          f"shares no single node with {congested.name}: the pause goes one hop upstream")]
    if topo.nodes[node].kind != "switch":
        return [SpecError(file, f"{at}.flow_control.upstream", fc.upstream,
                          f"{congested.name} and {fc.upstream} meet at {node}, not a switch")]
    errs = []
    for name in (congested.name, upstream.name):
        if not links[name].rate_bps:
            errs.append(SpecError(file, f"{at}.links", name, f"{fc.kind} needs a rate on {name}"))
    return errs


def queue_links(policies: list[PolicySpec]) -> set[str]:
    """The links whose queues `policies` act on: a flow control's or slices' links, a pause's
    upstream (load balancing and allow-lists leave the queues alone)."""
    out: set[str] = set()
    for p in policies:
        fc = p.flow_control
        if fc is not None or p.slices:
            out |= set(p.links or [])
        if fc is not None and fc.upstream:
            out.add(fc.upstream)
    return out


def check_against(policies: list[PolicySpec], topo, file: str) -> list[SpecError]:
    """Every switch, link and host a policy names exists in the topology; slices fit their links."""
    errs: list[SpecError] = []
    switches = {n.name for n in topo.switches()}
    hosts = {n.name for n in topo.hosts()}
    links = {lk.name: lk for lk in topo.links}
    for i, p in enumerate(policies):
        at = f"policies[{i}]"
        for j, s in enumerate(p.switches or []):
            if s not in switches:
                errs.append(SpecError(file, f"{at}.switches[{j}]", s, f"not a switch of {topo.name} "
                                      f"(switches: {', '.join(sorted(switches))})"))
        for j, name in enumerate(p.links or []):
            if name not in links:
                errs.append(SpecError(file, f"{at}.links[{j}]", name, f"no such link in {topo.name}"))
        if (p.flow_control or p.slices) and not p.links:
            errs.append(SpecError(file, f"{at}.links", None, "flow control and slices apply to links: name them"))
        if p.flow_control is not None and p.flow_control.pauses:
            errs += _check_pause(p, topo, links, file, at)
        if p.load_balancing and not p.switches:
            errs.append(SpecError(file, f"{at}.switches", None, "load balancing applies to switches: name them"))
        for j, sl in enumerate(p.slices):
            if sl.source is not None and sl.source not in hosts:
                try:
                    ipaddress.ip_network(sl.source, strict=False)
                except ValueError:
                    errs.append(SpecError(file, f"{at}.slices[{j}].source", sl.source, "neither a host nor a CIDR"))
        total = sum(s.guaranteed for s in p.slices)
        for name in p.links or []:
            rate = links[name].rate_bps if name in links else None
            if p.slices and rate and total > rate:
                errs.append(SpecError(file, f"{at}.slices", f"{total:g} bit/s", f"guaranteed rates exceed link "
                                      f"{name}'s {rate:g} bit/s"))
        for j, a in enumerate(p.allow or []):
            for end in ("a", "b"):
                if getattr(a, end) not in hosts:
                    errs.append(SpecError(file, f"{at}.allow[{j}].{end}", getattr(a, end), f"not a host of {topo.name}"))
    names = [p.name for p in policies]
    for i, n in enumerate(names):
        if names.index(n) != i:
            errs.append(SpecError(file, f"policies[{i}].name", n, "policy names must be unique"))
    return errs
