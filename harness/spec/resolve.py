"""Turn a validated TopologySpec into a resolved Topology: every node named, addressed and
linked, or a list of located errors (file, field path, value)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Literal, cast

from metrolab.harness.errors import SpecError, SpecErrors
from metrolab.harness.spec.topology import HostSpec, LinkCommon, SiteSpec, SwitchSpec, TopologySpec
from metrolab.netem.models import fiber_delay_s, netem_limit_packets
from metrolab.netem.profile import Impairment, LossModel

DEFAULT_RATE_BPS = 10e9  # an unshaped veth; used only to size queues


@dataclass(frozen=True)
class Node:
    name: str
    kind: Literal["host", "switch"]
    site: str | None
    role: str  # host: the site kind; switch: leaf/spine/gateway
    address: ipaddress.IPv4Address
    address6: ipaddress.IPv6Address | None
    rdma: bool = False

    @property
    def is_switch(self) -> bool:
        return self.kind == "switch"


@dataclass(frozen=True)
class Link:
    name: str
    a: str
    b: str
    props: LinkCommon
    cost: int = 1

    @property
    def rate_bps(self) -> float | None:
        return self.props.rate

    def one_way_delay_s(self, group_index: float) -> float:
        p = self.props
        base = p.delay if p.delay is not None else fiber_delay_s(p.distance_km or 0.0, group_index)
        return base + p.hop_latency

    def impairment(self, group_index: float) -> Impairment:
        """The egress impairment each end of the link gets (links are symmetric)."""
        p = self.props
        delay = self.one_way_delay_s(group_index)
        loss = None
        if p.loss is not None:
            loss = LossModel(kind=p.loss.model, p=p.loss.p, r=p.loss.r, h=p.loss.h, k=p.loss.k,
                             correlation=p.loss.correlation)
        sizing_rate = p.rate or DEFAULT_RATE_BPS
        limit = netem_limit_packets(sizing_rate, delay + p.jitter, p.mtu, queue_packets=p.queue_packets or 1000)
        queue_bytes = (p.queue_packets or 0) * (p.mtu + 14) or None
        return Impairment(delay_s=delay, jitter_s=p.jitter, jitter_distribution=p.jitter_distribution,
                          loss=loss, duplicate=p.duplicate, reorder=p.reorder, rate_bps=p.rate,
                          limit_packets=limit, queue_bytes=queue_bytes)


@dataclass(frozen=True)
class Topology:
    name: str
    source: str
    group_index: float
    nodes: dict[str, Node]
    links: list[Link]
    sites: dict[str, SiteSpec]
    digest: str
    spec: TopologySpec = field(repr=False)

    def hosts(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "host"]

    def switches(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "switch"]

    def links_of(self, node: str) -> list[Link]:
        return [link for link in self.links if node in (link.a, link.b)]

    def own_impairment(self, link: str) -> Impairment:
        """The impairment the topology gives `link` (what a lab puts back after changing it)."""
        return next(x for x in self.links if x.name == link).impairment(self.group_index)


def _host_addresses(site: SiteSpec, idx: int, errors: list[SpecError], file: str):
    """Addresses for a site's hosts: explicit ones, the rest in order from the subnet."""
    path = f"sites[{idx}]"
    # the model's validator turned every name into a HostSpec
    hosts = [HostSpec(name=f"{site.name}-h{i + 1}") for i in range(site.hosts)] if isinstance(site.hosts, int) \
        else cast(list[HostSpec], site.hosts)
    usable = site.subnet.num_addresses - (2 if site.subnet.prefixlen < 31 else 0)
    if len(hosts) > usable:
        errors.append(SpecError(file, f"{path}.hosts", len(hosts),
                                f"{len(hosts)} hosts do not fit in subnet {site.subnet} ({usable} usable addresses)"))
        return []
    subnet6 = site.subnet6 or ipaddress.IPv6Network(f"fd00:{idx + 1:x}::/64")
    taken = {h.address for h in hosts if h.address is not None}
    free = (a for a in site.subnet.hosts() if a not in taken)
    out = []
    for j, h in enumerate(hosts):
        if h.address is not None and h.address not in site.subnet:
            errors.append(SpecError(file, f"{path}.hosts[{j}].address", str(h.address),
                                    f"address is outside the site's subnet {site.subnet}"))
            continue
        if h.address6 is not None and h.address6 not in subnet6:
            errors.append(SpecError(file, f"{path}.hosts[{j}].address6", str(h.address6),
                                    f"address is outside the site's subnet6 {subnet6}"))
            continue
        a4 = h.address or next(free)
        a6 = h.address6 or subnet6[j + 1]
        out.append((h, a4, a6))
    return out


def _common(model: LinkCommon) -> LinkCommon:
    """The shared link properties of an already validated model (no re-parsing of units)."""
    return LinkCommon.model_construct(**{k: getattr(model, k) for k in LinkCommon.model_fields})


def resolve(spec: TopologySpec, file: str = "<topology>") -> Topology:
    errors: list[SpecError] = []
    nodes: dict[str, Node] = {}
    where: dict[str, str] = {}

    def add(node: Node, path: str):
        if node.name in nodes:
            errors.append(SpecError(file, path, node.name, f"duplicate node name (first defined at {where[node.name]})"))
            return
        nodes[node.name] = node
        where[node.name] = path

    sites: dict[str, SiteSpec] = {}
    for i, site in enumerate(spec.sites):
        if site.name in sites:
            errors.append(SpecError(file, f"sites[{i}].name", site.name, "duplicate site name"))
        sites[site.name] = site
        for j, (h, a4, a6) in enumerate(_host_addresses(site, i, errors, file)):
            add(Node(h.name, "host", site.name, site.kind, a4, a6 if spec.ipv6 else None, h.rdma),
                f"sites[{i}].hosts[{j}]")

    # the model's validators turned every name into a SwitchSpec
    switch_specs: list[tuple[str, SwitchSpec, str | None]] = [
        (f"sites[{i}].switches[{j}]", cast(SwitchSpec, s), site.name)
        for i, site in enumerate(spec.sites) for j, s in enumerate(site.switches)]
    switch_specs += [(f"switches[{j}]", cast(SwitchSpec, s), None) for j, s in enumerate(spec.switches)]
    infra4 = list(spec.infra_subnet.hosts()) if spec.infra_subnet.prefixlen < 31 else list(spec.infra_subnet)
    if len(switch_specs) > len(infra4):
        errors.append(SpecError(file, "infra_subnet", str(spec.infra_subnet),
                                f"{len(switch_specs)} switches do not fit ({len(infra4)} usable addresses)"))
    else:
        for k, (path, s, site_name) in enumerate(switch_specs):
            add(Node(s.name, "switch", site_name, s.role, infra4[k],
                     spec.infra_subnet6[k + 1] if spec.ipv6 else None), path)

    # host addresses must not collide with each other or with switch addresses
    seen: dict[ipaddress.IPv4Address, str] = {}
    for n in nodes.values():
        if n.address in seen:
            errors.append(SpecError(file, where[n.name], str(n.address),
                                    f"address of {n.name} is also used by {seen[n.address]}"))
        seen[n.address] = n.name

    links: list[Link] = []
    names: dict[str, str] = {}

    def add_link(link: Link, path: str):
        for end in ("a", "b"):
            ref = getattr(link, end)
            if ref not in nodes:
                errors.append(SpecError(file, f"{path}.{end}", ref, "link refers to a node that does not exist"))
                return
        if link.a == link.b:
            errors.append(SpecError(file, path, link.a, "link connects a node to itself"))
            return
        if nodes[link.a].kind == "host" and nodes[link.b].kind == "host":
            pass  # host-to-host links are allowed (direct attach)
        if link.name in names:
            errors.append(SpecError(file, f"{path}.name", link.name, f"duplicate link name (first at {names[link.name]})"))
            return
        p = link.props
        if p.delay is not None and p.distance_km is not None:
            errors.append(SpecError(file, f"{path}.delay", p.delay, "give distance_km or delay, not both"))
            return
        names[link.name] = path
        links.append(link)

    for i, site in enumerate(spec.sites):
        if site.access is None:
            continue
        acc = site.access
        props = _common(acc)
        for h in [n for n in nodes.values() if n.kind == "host" and n.site == site.name]:
            add_link(Link(f"{h.name}-{acc.switch}", h.name, acc.switch, props), f"sites[{i}].access.switch")

    pair_count: dict[tuple[str, str], int] = {}
    for i, ls in enumerate(spec.links):
        a, b = sorted((ls.a, ls.b))
        pair = (a, b)
        pair_count[pair] = pair_count.get(pair, 0) + 1
        name = ls.name or (f"{ls.a}-{ls.b}" if pair_count[pair] == 1 else f"{ls.a}-{ls.b}-{pair_count[pair]}")
        add_link(Link(name, ls.a, ls.b, _common(ls), ls.cost),
                 f"links[{i}]")

    for n in nodes.values():
        if n.kind == "host" and not any(n.name in (link.a, link.b) for link in links):
            errors.append(SpecError(file, where[n.name], n.name,
                                    "host has no link (add one under links, or set the site's access switch)"))

    if errors:
        raise SpecErrors(errors)
    digest = hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
    return Topology(spec.name, file, spec.group_index, nodes, links, sites, digest, spec)
