"""Pure parts of the flow policies: u32 keys of a 5-tuple, which policies need learned flows,
which combinations are refused, and the elephants' shared capacity from a topology."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from metrolab.harness.policy.apply import marks_ecn, needs_flows
from metrolab.harness.policy.model import FlowControl, LoadBalancing, PolicySpec, Slice
from metrolab.harness.policy.planner import Flow
from metrolab.harness.policy.qos import flow_keys

pytestmark = pytest.mark.unit


def test_flow_keys_match_protocol_addresses_and_both_ports():
    keys = flow_keys(Flow("10.1.0.1", "10.2.0.1", 41000, 5201, 6))
    assert keys == ["0x00060000/0x00ff0000+8", "0x0a010001/0xffffffff+12", "0x0a020001/0xffffffff+16",
                    f"0x{(41000 << 16) | 5201:08x}/0xffffffff+20"]


def test_which_policies_act_on_learned_flows():
    assert needs_flows(PolicySpec(name="p", switches=["s"], load_balancing=LoadBalancing(kind="planned")))
    assert needs_flows(PolicySpec(name="q", links=["l"], flow_control=FlowControl(kind="per-flow")))
    assert not needs_flows(PolicySpec(name="h", switches=["s"], load_balancing=LoadBalancing(kind="ecmp-l4")))
    assert needs_flows(PolicySpec(name="b", links=["l"], flow_control=FlowControl(kind="backpressure", upstream="u")))
    assert not needs_flows(PolicySpec(name="c", links=["l"], flow_control=FlowControl(kind="pause", upstream="u")))
    assert not needs_flows(None)
    assert marks_ecn(PolicySpec(name="e", links=["l"], flow_control=FlowControl(kind="ecn")))


def test_slices_and_a_queue_replacing_policy_are_refused_together():
    with pytest.raises(ValidationError, match="separate policies"):
        PolicySpec(name="x", links=["l"], flow_control=FlowControl(kind="per-flow"),
                   slices=[Slice(name="t", dscp=26, guaranteed=1e6)])


def test_elephants_share_the_parallel_links_between_their_sites():
    from metrolab.harness.scenario.spec import load_scenario
    from metrolab.workloads.elephants import site_capacity
    topo = load_scenario("load-balancing").topology
    assert site_capacity(topo, ["a1"], "b1") == 200e6          # two 100 Mbit/s paths
    topo = load_scenario("flow-control").topology
    assert site_capacity(topo, ["a1", "a2", "a3"], "b1") == 100e6


def test_a_policy_buffer_binds_before_netems_packet_limit():
    """netem counts its child's packets against its own limit: a deep buffer under a delay line
    must raise that limit, or netem drops an incast the buffer would have held."""
    from metrolab.harness.policy.qos import DEEP_FLOOR, red_params, with_flow_control
    from metrolab.netem.profile import Impairment
    imp = Impairment(delay_s=0.0005, rate_bps=100e6, limit_packets=1040)
    deep = with_flow_control(imp, FlowControl(kind="deep-buffer"))
    assert deep.queue_bytes >= DEEP_FLOOR and deep.limit_packets >= 1040 + DEEP_FLOOR // 64
    shallow = with_flow_control(imp, FlowControl(kind="tail-drop"))
    assert shallow.queue_bytes == 32 * 1024
    ecn = with_flow_control(imp, FlowControl(kind="ecn", ecn_threshold="1ms"))
    lo, hi, limit = red_params(FlowControl(kind="ecn", ecn_threshold="1ms"), imp)
    assert (lo, hi) == (12500, 37500) and ecn.limit_packets >= 1040 + limit // 64
    assert with_flow_control(imp, None) is imp
    from metrolab.harness.policy.qos import leaf_bytes
    sliced = with_flow_control(imp, None, slices=2)  # two tenant classes and the default, a queue each
    assert sliced.limit_packets >= 1040 + 3 * leaf_bytes(imp) // 64


def test_every_queue_policy_takes_the_tbf_rate_stage_and_a_plain_link_netems_own():
    """netem's rate queues inside netem, where no policy reaches: a policy's impairment puts the
    rate in the TBF child; a link without one (or with jitter, or a byte buffer) says where its rate is."""
    from metrolab.harness.policy.qos import with_flow_control
    from metrolab.netem.profile import Impairment
    from metrolab.netem.shaper import netem_tc_args
    imp = Impairment(delay_s=0.0025, rate_bps=100e6, limit_packets=1040)
    assert imp.rate_in_netem and netem_tc_args("wan", imp, 1040)[-2:] == ["rate", "100000000bit"]
    for fc in ("tail-drop", "deep-buffer", "ecn", "per-flow"):
        assert not with_flow_control(imp, FlowControl(kind=fc)).rate_in_netem, fc
    assert not with_flow_control(imp, None, slices=2).rate_in_netem
    for other in ({"jitter_s": 1e-4}, {"queue_bytes": 64_000}, {"rate_bps": None}):
        changed = Impairment(**{**imp.to_dict(), "loss": None, **other})
        assert not changed.rate_in_netem and "rate" not in netem_tc_args("wan", changed, 1040), other


def test_the_links_whose_queues_a_scenarios_policies_act_on():
    """They keep the TBF rate stage at every point of a run (Lab.tbf_links), baselines included."""
    from metrolab.harness.policy.model import queue_links
    from metrolab.harness.scenario.spec import load_scenario
    assert queue_links(load_scenario("flow-control").spec.policies) == {"wan"}
    assert queue_links(load_scenario("load-balancing").spec.policies) == set()  # paths, not queues
    pause = PolicySpec(name="p", links=["down"], flow_control=FlowControl(kind="pause", upstream="up"))
    assert queue_links([pause]) == {"down", "up"}


def test_rdma_elephants_need_rdma_hosts_and_say_where():
    from metrolab.harness.errors import SpecError
    from metrolab.harness.scenario.spec import load_scenario
    from metrolab.workloads.elephants import ElephantFlows
    scn = load_scenario("load-balancing-roce")
    w = scn.spec.workloads[0]
    assert ElephantFlows.needs_rdma_for(w)
    ElephantFlows.validate(w, scn.topology, 1.0)
    tcp = load_scenario("load-balancing")  # the same hosts without rdma: true
    w2 = w.model_copy(update={"params": dict(w.params)})
    with pytest.raises(SpecError, match="host needs rdma: true"):
        ElephantFlows.validate(w2, tcp.topology, 1.0)


def test_the_incast_victim_and_its_capacity_come_from_the_topology():
    from metrolab.harness.errors import SpecError
    from metrolab.harness.scenario.spec import load_scenario
    from metrolab.workloads.elephants import ElephantFlows, ElephantParams
    scn = load_scenario("flow-control-roce")
    w = scn.spec.workloads[0]
    hosts = ElephantFlows.hosts(w, scn.topology)
    ElephantFlows.validate(w, scn.topology, 1.0)
    p = ElephantParams.model_validate(ElephantFlows.resolve(dict(w.params), hosts, scn.topology))
    assert p.victim_capacity == 20e6 and p.capacity == 20e6  # b2's port; b1's port (given)
    no_cap = {k: v for k, v in w.params.items() if k != "capacity"}
    assert ElephantFlows.resolve(no_cap, hosts, scn.topology)["capacity"] == 100e6  # a1-a3's sites: the WAN
    for victim, text in ((["a4", "b1"], "not one of the workload's hosts"), (["a4", "a4"], "one host")):
        bad = w.model_copy(update={"params": {**w.params, "victim": victim}})
        with pytest.raises(SpecError, match=text):
            ElephantFlows.validate(bad, scn.topology, 1.0)


def test_pause_metrics_per_repetition_are_differences_of_the_counters():
    from metrolab.harness.policy.apply import PolicyApplier
    before = {"links": {"l": (0, 5, 0, 100)}, "pause": {"pauses": 3, "pause_s": 1.0, "drops": 2, "packets": 50,
                                                       "max_backlog": 9, "reaction_max_s": 0.1, "starved_s": 0.25}}
    after = {"links": {"l": (9, 5, 0, 300)}, "pause": {"pauses": 10, "pause_s": 2.5, "drops": 2, "packets": 250,
                                                      "max_backlog": 7000, "reaction_max_s": 0.05, "starved_s": 1.0}}
    m = PolicyApplier.metrics(before, after)
    assert m == {"queue_drops": 0, "queue_packets": 200, "queue_loss": 0.0, "pause_frames": 7, "pause_s": 1.5,
                 "congested_drops": 0, "congested_packets": 200, "congested_loss": 0.0, "congested_max_backlog": 7000,
                 "pause_reaction_max_s": 0.05, "pause_starved_s": 0.75}
    # nothing counted is not measured: no rate of 0
    idle = {"links": {"l": (0, 0, 0, 0)}}
    assert PolicyApplier.metrics(idle, idle)["queue_loss"] is None
    assert PolicyApplier.metrics({}, {}) == {}


def test_slice_rates_follow_the_runners_auto_scale():
    from metrolab.harness.policy.apply import PolicyApplier
    from metrolab.harness.policy.model import Slice
    applier = PolicyApplier(lab=None)
    slices = [Slice(name="t", dscp=26, guaranteed=8e6, ceiling=16e6), Slice(name="c", dscp=46, guaranteed=1e6)]
    assert applier._scaled(slices) is slices
    applier.rate_divisor = 4.0
    scaled = applier._scaled(slices)
    assert [(s.guaranteed, s.ceiling) for s in scaled] == [(2e6, 4e6), (0.25e6, None)]
    assert slices[0].guaranteed == 8e6  # the scenario's own stay as written
