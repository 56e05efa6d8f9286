"""Pure parts of the flow policies: u32 keys of a 5-tuple, which policies need learned flows,
which combinations are refused, and the elephants' shared capacity from a topology."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.policy.apply import marks_ecn, needs_flows
from harness.policy.model import FlowControl, LoadBalancing, PolicySpec, Slice
from harness.policy.planner import Flow
from harness.policy.qos import flow_keys

pytestmark = pytest.mark.unit


def test_flow_keys_match_protocol_addresses_and_both_ports():
    keys = flow_keys(Flow("10.1.0.1", "10.2.0.1", 41000, 5201, 6))
    assert keys == ["0x00060000/0x00ff0000+8", "0x0a010001/0xffffffff+12", "0x0a020001/0xffffffff+16",
                    f"0x{(41000 << 16) | 5201:08x}/0xffffffff+20"]


def test_which_policies_act_on_learned_flows():
    assert needs_flows(PolicySpec(name="p", switches=["s"], load_balancing=LoadBalancing(kind="planned")))
    assert needs_flows(PolicySpec(name="q", links=["l"], flow_control=FlowControl(kind="per-flow")))
    assert not needs_flows(PolicySpec(name="h", switches=["s"], load_balancing=LoadBalancing(kind="ecmp-l4")))
    assert not needs_flows(None)
    assert marks_ecn(PolicySpec(name="e", links=["l"], flow_control=FlowControl(kind="ecn")))


def test_slices_and_a_queue_replacing_policy_are_refused_together():
    with pytest.raises(ValidationError, match="separate policies"):
        PolicySpec(name="x", links=["l"], flow_control=FlowControl(kind="per-flow"),
                   slices=[Slice(name="t", dscp=26, guaranteed=1e6)])


def test_elephants_share_the_parallel_links_between_their_sites():
    from harness.scenario.spec import load_scenario
    from workloads.elephants import site_capacity
    topo = load_scenario("load-balancing").topology
    assert site_capacity(topo, ["a1"], "b1") == 200e6          # two 100 Mbit/s paths
    topo = load_scenario("flow-control").topology
    assert site_capacity(topo, ["a1", "a2", "a3"], "b1") == 100e6


def test_a_policy_buffer_binds_before_netems_packet_limit():
    """netem counts its child's packets against its own limit: a deep buffer under a delay line
    must raise that limit, or netem drops an incast the buffer would have held."""
    from harness.policy.qos import DEEP_FLOOR, red_params, with_flow_control
    from netem.profile import Impairment
    imp = Impairment(delay_s=0.0005, rate_bps=100e6, limit_packets=1040)
    deep = with_flow_control(imp, FlowControl(kind="deep-buffer"))
    assert deep.queue_bytes >= DEEP_FLOOR and deep.limit_packets >= 1040 + DEEP_FLOOR // 64
    shallow = with_flow_control(imp, FlowControl(kind="tail-drop"))
    assert shallow.queue_bytes == 32 * 1024
    ecn = with_flow_control(imp, FlowControl(kind="ecn", ecn_threshold="1ms"))
    lo, hi, limit = red_params(FlowControl(kind="ecn", ecn_threshold="1ms"), imp)
    assert (lo, hi) == (12500, 37500) and ecn.limit_packets >= 1040 + limit // 64
    assert with_flow_control(imp, None) is imp
    from harness.policy.qos import leaf_bytes
    sliced = with_flow_control(imp, None, slices=2)  # two tenant classes and the default, a queue each
    assert sliced.limit_packets >= 1040 + 3 * leaf_bytes(imp) // 64


def test_rdma_elephants_need_rdma_hosts_and_say_where():
    from harness.errors import SpecError
    from harness.scenario.spec import load_scenario
    from workloads.elephants import ElephantFlows
    scn = load_scenario("load-balancing-roce")
    w = scn.spec.workloads[0]
    assert ElephantFlows.needs_rdma_for(w)
    ElephantFlows.validate(w, scn.topology, 1.0)
    tcp = load_scenario("load-balancing")  # the same hosts without rdma: true
    w2 = w.model_copy(update={"params": dict(w.params)})
    with pytest.raises(SpecError, match="host needs rdma: true"):
        ElephantFlows.validate(w2, tcp.topology, 1.0)
