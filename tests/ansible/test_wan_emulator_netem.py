"""The wan_emulator role on a kernel with netem (the guest kernel here, the runner's own on CI): a
bridge between the two ports, netem on each with the BDP-sized queue the controller computed, GRO
off on the ports so that netem loses wire packets, and a second run that changes nothing. The
emulator is a namespace with a port towards each of two others; ansible runs the role there with a
local connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyroute2.ethtool import Ethtool

from metrolab.harness.ansible_run import outcomes
from metrolab.harness.kernel.nsctx import in_netns, iproute
from metrolab.harness.lab.netns import remove_namespace
from metrolab.harness.lab.state import new_lab_id
from metrolab.harness.resources import ansible_dir
from metrolab.netem.models import binomial_interval
from metrolab.netem.probe import measure_rate

pytestmark = pytest.mark.requires("netem")
GRO = ansible_dir() / "roles" / "wan_emulator" / "files" / "gro.py"
PLAY = """- name: WAN emulator
  hosts: all
  gather_facts: false
  roles:
    - role: wan_emulator
"""


def run_role(ns: str, tmp: Path, limit: int) -> dict:
    (tmp / "play.yml").write_text(PLAY)
    project = ansible_dir()
    env = dict(os.environ, ANSIBLE_CONFIG=str(project / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(project / "roles"),
               ANSIBLE_STDOUT_CALLBACK="metrolab_json", ANSIBLE_CALLBACK_PLUGINS=str(project / "callback_plugins"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"), LC_ALL="C.UTF-8")
    extra = {"metrolab_wan_ports": ["eth1", "eth2"], "metrolab_wan_limit_packets": limit,
             "ansible_python_interpreter": sys.executable}
    res = subprocess.run(["ip", "netns", "exec", ns, str(Path(sys.executable).parent / "ansible-playbook"),
                          "-i", "em,", "-c", "local", str(tmp / "play.yml"), "-e", json.dumps(extra)],
                         capture_output=True, text=True, env=env, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return outcomes(json.loads(res.stdout))["em"].__dict__


@pytest.fixture
def emulator():
    lab = new_lab_id()
    names = {k: f"{lab}-{k}" for k in ("a", "em", "b")}
    from pyroute2 import netns
    try:
        for n in names.values():
            netns.create(n)
        h = iproute(names["em"])
        try:
            h.link("add", ifname="eth1", kind="veth", peer={"ifname": "p0", "net_ns_fd": names["a"]})
            h.link("add", ifname="eth2", kind="veth", peer={"ifname": "p0", "net_ns_fd": names["b"]})
        finally:
            h.close()
        for i, end in enumerate(("a", "b"), 1):
            h = iproute(names[end])
            try:
                idx = h.link_lookup(ifname="p0")[0]
                h.addr("add", index=idx, address=f"10.77.0.{i}", prefixlen=24)
                h.link("set", index=idx, state="up")
            finally:
                h.close()
        wire(names["a"])
        gro(names["em"], "on")  # as a NIC ships it: the ports merge what arrives
        yield names
    finally:
        for n in names.values():
            remove_namespace(n)


def wire(ns: str) -> None:
    """p0 of `ns` sends what a NIC puts on the wire: TSO off, so the kernel cuts TCP's buffers into
    wire packets at the device and sends each buffer's back to back, as TSO does (a veth merges what
    it receives, when GRO is on, only from a peer without TSO: veth_skb_is_eligible_for_gro)."""
    with in_netns(ns):
        eth = Ethtool()
    try:
        features = eth.get_features("p0")
        for name, f in features.features.items():
            if name.startswith("tx-tcp"):
                f.enable = False
        eth.set_features("p0", features)
    finally:
        eth.close()


def gro(ns: str, action: str) -> dict[str, bool]:
    res = subprocess.run(["ip", "netns", "exec", ns, "python3", str(GRO), action, "eth1", "eth2"],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def netem_counts(ns: str, port: str) -> tuple[int, int]:
    """(packets sent, dropped): netem counts the segments of a buffer it sends, a dropped buffer as one."""
    (q,) = json.loads(subprocess.run(["tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev", port, "root"],
                                     capture_output=True, text=True, check=True).stdout)
    return q["packets"], q["drops"]


def test_the_role_bridges_the_ports_with_bdp_sized_netem_and_gro_off_and_is_idempotent(emulator, tmp_path):
    names, emulator = emulator, emulator["em"]
    # 100 Gb/s across 500 km: 2.45 ms one way, ~20,400 packets of 1500 bytes in flight
    first = run_role(emulator, tmp_path, 21000)
    assert first["ok"] and any("Create the bridge" in t for t in first["changed"]), first
    assert any("GRO off" in t for t in first["changed"]), first  # the fixture turned it on
    q = json.loads(subprocess.run(["tc", "-n", emulator, "-j", "qdisc", "show"], capture_output=True,
                                  text=True, check=True).stdout)
    roots = {x["dev"]: x for x in q if x.get("root")}
    for port in ("eth1", "eth2"):
        assert roots[port]["kind"] == "netem" and roots[port]["options"]["limit"] == 21000, roots[port]
    links = json.loads(subprocess.run(["ip", "-n", emulator, "-j", "link"], capture_output=True, text=True,
                                      check=True).stdout)
    assert {x["ifname"] for x in links if x.get("master") == "br-metrolab"} == {"eth1", "eth2"}
    assert gro(emulator, "show") == {"eth1": False, "eth2": False}
    second = run_role(emulator, tmp_path, 21000)
    assert second["ok"] and second["changed"] == [], second

    # netem now loses wire packets: 1 % on the port towards b, a's TCP across the bridge; its drops
    # out of the packets offered within the binomial 99.9 % interval (with GRO left on the ports,
    # merged buffers are lost whole and far fewer wire packets are)
    p = 0.01
    subprocess.run(["tc", "-n", emulator, "qdisc", "change", "dev", "eth2", "root", "netem", "limit", "21000",
                    "loss", f"{p * 100}%"], check=True)
    sent0, dropped0 = netem_counts(emulator, "eth2")
    lab = SimpleNamespace(ns=lambda node: names[node])
    measure_rate(lab, SimpleNamespace(node="a", ifname="p0"), SimpleNamespace(node="b", ifname="p0"),
                 "10.77.0.1", "10.77.0.2", duration=2.0)
    sent, dropped = netem_counts(emulator, "eth2")
    dropped -= dropped0
    offered = sent - sent0 + dropped
    lo, hi = binomial_interval(offered, p, z=3.2905)
    print(f"netem dropped {dropped} of {offered} wire packets; 99.9 % interval [{lo:.0f}, {hi:.0f}]")
    assert offered > 2000 and lo <= dropped <= hi, (dropped, offered, (lo, hi))
