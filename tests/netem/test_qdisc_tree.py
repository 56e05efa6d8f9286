"""The qdisc tree every impairment builds under every policy, read back from the kernel (kinds,
parents, limits, rates), as pyroute2's own tc tests do. One shape whichever tool wrote netem:
netem 1: at the root (delay line, loss, jitter). Without a policy netem carries the rate itself;
with one (or with jitter, which must keep reordering) the rate stage is its child 10:, where the
policy acts (TBF with the policy's byte limit, RED under TBF, or HTB with a bfifo per class). A
kernel without netem has the rate stage at the root (1:) and loss in nftables."""

from __future__ import annotations

import pytest

from metrolab.harness import capabilities
from metrolab.harness.policy import qos
from metrolab.harness.policy.apply import PolicyApplier
from metrolab.harness.policy.model import FlowControl, PolicySpec, Slice
from metrolab.harness.policy.planner import Flow
from metrolab.netem.profile import Impairment, LossModel
from metrolab.netem.tree import Qdisc, read_tree
from tests.support.labs import two_hosts

RATE = 100e6
BASE = {"rate_bps": RATE, "limit_packets": 2000, "extra": {"raw_delay": True}}  # raw: no calibration
IMPAIRMENTS = {
    "rate": ({}, ()),
    "random-loss": ({"loss": LossModel(p=0.01)}, ()),
    "delay": ({"delay_s": 0.5e-3}, ("netem",)),
    "jitter-uniform": ({"delay_s": 0.5e-3, "jitter_s": 50e-6}, ("netem",)),
    "jitter-normal": ({"delay_s": 0.5e-3, "jitter_s": 50e-6, "jitter_distribution": "normal"}, ("netem",)),  # tc
    "correlated-loss": ({"delay_s": 0.5e-3, "loss": LossModel(p=0.01, correlation=0.25)}, ("netem",)),
    "gilbert-elliott": ({"delay_s": 0.5e-3, "loss": LossModel(kind="gilbert-elliott", p=0.01, r=0.3,
                                                              h=0.2, k=1.0)}, ("netem",)),       # tc
    "duplicate": ({"delay_s": 0.5e-3, "duplicate": 0.01}, ("netem",)),
    "reorder": ({"delay_s": 0.5e-3, "reorder": 0.01}, ("netem",)),
}
POLICIES = {
    "none": (None, ()),
    "tail-drop": ({"flow_control": FlowControl(kind="tail-drop")}, ()),
    "deep-buffer": ({"flow_control": FlowControl(kind="deep-buffer")}, ()),
    "ecn": ({"flow_control": FlowControl(kind="ecn", ecn_threshold=0.001)}, ("red",)),
    "per-flow": ({"flow_control": FlowControl(kind="per-flow", flows=2)}, ()),
    "slices": ({"slices": [Slice(name="t1", dscp=26, guaranteed=40e6), Slice(name="t2", dscp=10, guaranteed=20e6,
                                                                           ceiling=50e6)]}, ()),
}
FLOWS = [Flow("10.9.0.1", "10.9.0.2", 40000 + i, 5201, bytes=1 << 20) for i in range(2)]


def cases():
    """Every impairment alone and under a multi-class policy; every policy behind a delay line (the
    netem stage) and behind a bare rate (no netem: the host's tree). The tree composes netem's stage
    with the policy's, so these 26 pairs cover what the full cross product did in 54 (3 min of the
    guest tier)."""
    pairs = [(i, p) for i in IMPAIRMENTS for p in ("none", "slices")] + \
        [(i, p) for i in ("delay", "rate") for p in POLICIES]
    for iname, pname in dict.fromkeys(pairs):
        needs = tuple(dict.fromkeys(IMPAIRMENTS[iname][1] + POLICIES[pname][1]))
        yield pytest.param(iname, pname, id=f"{iname}-{pname}",
                           marks=[pytest.mark.requires(*(needs or ("netns",)))])


def expected(imp: Impairment, pname: str, netem: bool) -> list[Qdisc]:
    """The tree the design promises (module docstring), from the policy's own sizing functions."""
    spec = POLICIES[pname][0] or {}
    fc = spec.get("flow_control")
    shaped = qos.with_flow_control(imp, fc, len(spec.get("slices", [])))
    if netem and pname == "none" and not imp.jitter_s:  # netem's own rate, nothing under it
        return [Qdisc("netem", "1:", "root", shaped.limit_packets, int(RATE / 8))]
    tree = [Qdisc("netem", "1:", "root", shaped.limit_packets)] if netem else []
    stage, parent = ("10:", "1:1") if netem else ("1:", "root")
    major = stage[:-1]
    classes = len(spec["slices"]) if "slices" in spec else (fc.flows if fc and fc.kind == "per-flow" else 0)
    if classes:
        tree.append(Qdisc("htb", stage, parent, None))
        minors = [0x10 + i for i in range(classes)] + [qos.DEFAULT_CLASS]
        tree += sorted((Qdisc("bfifo", f"{0x100 + m:x}:", f"{major}:{m:x}", qos.leaf_bytes(shaped)) for m in minors),
                       key=lambda q: q.handle)
        return tree
    tbf_limit = shaped.queue_bytes or max(int(RATE / 8 * 0.05), 16 * 1024)
    tree.append(Qdisc("tbf", stage, parent, tbf_limit, int(RATE / 8)))  # netem itself does not shape here
    if fc is not None and fc.kind == "ecn":
        tree.append(Qdisc("red", "20:", f"{major}:1", qos.red_params(fc, shaped)[2]))
    return tree


@pytest.fixture(scope="module")
def pair(module_labs):
    return module_labs(two_hosts(rate="100mbit"))


@pytest.mark.parametrize("iname,pname", list(cases()))
def test_tree_shape(pair, iname, pname):
    netem = capabilities.probe().has("netem")
    if not netem and IMPAIRMENTS[iname][1]:
        pytest.fail(f"{iname} needs netem and the `requires` marker should have sent it to the guest")
    imp = Impairment(**BASE, **IMPAIRMENTS[iname][0])
    spec = POLICIES[pname][0]
    applier = PolicyApplier(pair, base={"h1-sw": imp})
    pair.impair("h1-sw", imp)
    try:
        if spec is not None:
            applier.apply(PolicySpec(name=pname, links=["h1-sw"], **spec), flows=FLOWS)
        for end in pair.plan.ends("h1-sw"):
            got = read_tree(pair.handle(end.node), pair.ns(end.node), end.ifname)
            want = expected(imp, pname, netem)
            assert got == want, f"{end.node}:{end.ifname}\n got  {got}\n want {want}"
    finally:
        applier.clear()
        pair.impair("h1-sw", Impairment())
