"""The shaper on real interfaces: TBF rate, nft loss, replace semantics, refusal without netem."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from metrolab.harness import capabilities
from metrolab.harness.errors import CapabilityError
from metrolab.netem.models import binomial_interval
from metrolab.netem.probe import measure_loss, measure_rate
from metrolab.netem.profile import Impairment, LossModel
from metrolab.netem.shaper import nft_loss_drops
from tests.support.labs import in_ns, lab_up, two_hosts

pytestmark = pytest.mark.requires("netns")


def qdisc_kinds(lab, node, ifname) -> list[str]:
    h = lab.handle(node)
    idx = h.link_lookup(ifname=ifname)[0]
    return [q.get_attr("TCA_KIND") for q in h.get_qdiscs(index=idx) if q["parent"] == 0xFFFFFFFF]


@pytest.mark.parametrize("rate", [100e6, 400e6])
def test_tbf_rate_within_5_percent(lab_factory, rate):
    lab = lab_factory(two_hosts(rate=int(rate)))
    a, b = lab.plan.ends("h1-sw")
    # the shaper is the ceiling and a stall of the sender or the sink (Python threads on 2 cores)
    # only idles the link below it (a suite run read 93.7 % at 100 Mbit/s): the best of three, so a
    # shaper too slow or too fast still fails
    runs = [measure_rate(lab, a, b, "10.9.0.1", str(lab.topology.nodes["sw"].address), duration=2.0)
            for _ in range(3)]
    wire, goodput = max(runs)
    assert wire == pytest.approx(rate, rel=0.05), runs
    assert goodput < wire  # headers are on the wire, not in the payload


def test_nft_loss_within_binomial_99_9_interval(lab_factory):
    if capabilities.probe().has("netem"):
        pytest.skip("this kernel has netem, so the shaper uses it instead of nft (covered in the guest tier)")
    p, n = 0.05, 20000
    lab = lab_factory(two_hosts(loss=p))
    a, b = lab.plan.ends("h1-sw")
    sent, received = measure_loss(lab.ns("h1"), a.ifname, "10.9.0.1", lab.ns("sw"), b.ifname,
                                  str(lab.topology.nodes["sw"].address), n, pace_bps=200e6, settle=0.5)
    lost = sent - received
    lo, hi = binomial_interval(n, p, z=3.2905)  # 99.9 %: 99 % fails a correct shaper 1 run in 100
    assert lo <= lost <= hi
    # the nft rule made those drops (its counter also sees the odd ARP/ND packet it dropped)
    assert lost <= nft_loss_drops(lab.ns("sw"), b.ifname) <= lost + 10


def test_new_profile_replaces_the_old_one(lab_factory):
    lab = lab_factory(two_hosts(rate="100mbit", loss=0.01))
    lab.impair("h1-sw", Impairment(rate_bps=50e6, loss=LossModel(p=0.02)))
    a, b = lab.plan.ends("h1-sw")
    if capabilities.probe().has("netem"):  # a hosted runner, the guest: netem carries rate and loss
        assert qdisc_kinds(lab, "h1", a.ifname) == ["netem"]
        assert lab.rate_stage(["h1-sw"]) == "netem"  # what a sweep's rows record
        netem = json.loads(in_ns(lab, "h1", "tc", "-j", "qdisc", "show", "dev", a.ifname).stdout)[0]["options"]
        assert netem["rate"]["rate"] == 50e6 / 8 and netem["loss-random"]["loss"] == 0.02, netem
    else:  # this machine's host kernel: TBF carries the rate, an nft rule on the peer's ingress the loss
        assert qdisc_kinds(lab, "h1", a.ifname) == ["tbf"]
        assert lab.rate_stage(["h1-sw"]) == "tbf"
        h = lab.handle("h1")
        idx = h.link_lookup(ifname=a.ifname)[0]
        tbf = next(q for q in h.get_qdiscs(index=idx) if q.get_attr("TCA_KIND") == "tbf")
        assert tbf.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")["rate"] == 50e6 / 8
        rules = json.loads(in_ns(lab, "sw", "nft", "-j", "list", "ruleset").stdout)["nftables"]
        rules = [r for r in rules if "rule" in r and r["rule"]["table"] == f"metrolab_loss_{b.ifname}"]
        assert len(rules) == 1
        assert "2000000" in json.dumps(rules)  # 0.02 x 1e8: the new threshold, alone
    lab.impair("h1-sw", Impairment())  # an empty profile clears everything
    assert qdisc_kinds(lab, "h1", a.ifname) in ([], ["noqueue"])
    for node in ("h1", "sw"):
        rules = json.loads(in_ns(lab, node, "nft", "-j", "list", "ruleset").stdout)["nftables"]
        assert not any("rule" in r for r in rules)


def test_delay_without_netem_is_refused_before_anything_is_built():
    if capabilities.probe().has("netem"):
        pytest.skip("this kernel has netem: delay is applied (guest tier covers it)")
    with pytest.raises(CapabilityError, match=r"link h1-sw: .*lacks sch_netem.*delay 0\.48"), \
            lab_up(two_hosts(distance_km=100)):
        pass
    assert not any(p for p in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout.split()
                   if p.startswith("ml") and "-h1" in p)


def test_best_effort_applies_the_rest_and_says_what_it_skipped(lab_factory):
    if capabilities.probe().has("netem"):
        pytest.skip("this kernel has netem: nothing is skipped")
    lab = lab_factory(two_hosts(rate="100mbit", distance_km=100), strict=False)
    a, _ = lab.plan.ends("h1-sw")
    assert qdisc_kinds(lab, "h1", a.ifname) == ["tbf"]
    assert lab.applied["h1-sw"][0]["skipped"] == ["delay 0.489672 ms"]


def _tc_netem_works() -> bool:
    """Ground truth from iproute2's tc, independent of metrolab's probe."""
    ns = "mlgroundtruth"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "x0", "type", "veth", "peer", "name", "x1"], check=True)
        return subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "x0", "root", "netem",
                               "delay", "1ms"], capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def test_doctor_json_matches_the_kernel():
    res = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "doctor", "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    caps = json.loads(res.stdout)["capabilities"]
    assert caps["netem"]["present"] == _tc_netem_works()
    assert caps["nft"]["present"] is True
    assert caps["tbf"]["present"] is True
    if "fc" in json.loads(res.stdout)["kernel"]:  # this machine's and CI's host kernel
        assert caps["netem"]["present"] is False and caps["rxe"]["present"] is False
