"""The address/route plan, computed without a kernel."""

import pytest

from metrolab.harness.lab.plan import build_plan, expected_path
from metrolab.harness.spec.loader import load_topology, topology_from_data
from tests.support.labs import three_sites

pytestmark = pytest.mark.unit


def test_parallel_wan_links_give_ecmp_routes():
    plan = build_plan(topology_from_data(three_sites(), "t"))
    topo = plan.topology
    r = [r for r in plan.routes_of("gw-a") if r.family == 4 and r.dst == f"{topo.nodes['b1'].address}/32"]
    assert len(r) == 1 and len(r[0].nexthops) == 2
    assert {nh.ifname for nh in r[0].nexthops} == {plan.ifaces[("gw-a", "wan-ab-1")].ifname,
                                                  plan.ifaces[("gw-a", "wan-ab-2")].ifname}
    # IPv6 next hops are the link-local peers, so the two parallel links stay distinct
    r6 = next(r for r in plan.routes_of("gw-a") if r.family == 6 and r.dst == f"{topo.nodes['b1'].address6}/128")
    assert {(nh.gateway, nh.ifname) for nh in r6.nexthops} == {("fe80::2", plan.ifaces[("gw-a", "wan-ab-1")].ifname),
                                                               ("fe80::2", plan.ifaces[("gw-a", "wan-ab-2")].ifname)}


def test_hosts_get_default_routes_and_never_transit():
    plan = build_plan(topology_from_data(three_sites(), "t"))
    for host in plan.topology.hosts():
        routes = plan.routes_of(host.name)
        # a default route per family, plus explicit routes to the neighbour switch
        nbr = {f"{plan.topology.nodes[i.peer_node].address6}/128" for i in plan.ifaces_of(host.name)}
        nbr |= {f"{plan.topology.nodes[i.peer_node].address}/32" for i in plan.ifaces_of(host.name)}
        assert {r.dst for r in routes} == {"default"} | nbr
        assert {r.family for r in routes if r.dst == "default"} == {4, 6}
    addr_of = {f"{n.address}/32": n.name for n in plan.topology.nodes.values()}
    addr_of |= {f"{n.address6}/128": n.name for n in plan.topology.nodes.values()}
    for route in plan.routes:
        for nh in route.nexthops:  # the next hop is a switch, or the destination itself
            assert plan.topology.nodes[nh.peer].is_switch or addr_of.get(route.dst) == nh.peer


def test_expected_path_follows_shortest_cost():
    data = three_sites()
    data["links"][5]["cost"] = 5  # gw-a -- gw-c made expensive: a -> c goes via b
    plan = build_plan(topology_from_data(data, "t"))
    paths = expected_path(plan, "a1", "c1")
    assert paths and all(p == ["a1", "leaf-a", "gw-a", "gw-b", "gw-c", "leaf-c", "c1"] for p in paths)


def test_interface_names_fit_the_kernel():
    plan = build_plan(load_topology())
    for iface in plan.ifaces.values():
        assert len(iface.ifname) <= 15
