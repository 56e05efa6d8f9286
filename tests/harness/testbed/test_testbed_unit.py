"""Testbed files: the example validates against its topology, bad files fail with located errors
before anything is touched, and the ansible inventory is one ansible itself reads."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metrolab.harness.errors import SpecError, SpecErrors
from metrolab.harness.testbed import resolve
from metrolab.harness.testbed.derive import inventory
from metrolab.harness.testbed.resolve import load_testbed

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[3] / "ansible" / "examples" / "testbed.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def errors_of(data: dict) -> list[SpecError]:
    with pytest.raises((SpecError, SpecErrors)) as info:
        resolve.testbed_from_data(data, "tb.yaml")  # (not imported by name: pytest would collect it)
    return info.value.errors if isinstance(info.value, SpecErrors) else [info.value]


def test_the_example_maps_every_node_and_link_of_the_default_topology():
    tb = load_testbed(EXAMPLE)
    assert tb.topology.name == "metro-default"
    assert set(tb.spec.map.nodes) == set(tb.topology.nodes)
    assert {lm.link for lm in tb.spec.map.links} == {lk.name for lk in tb.topology.links}
    assert tb.machine_of("a1").name == "srv-a1" and [m.name for m in tb.by_role("wan-emulator")][:1] == ["wan-1"]


def _machine(d: dict, name: str) -> dict:
    return next(m for m in d["machines"] if m["name"] == name)


BAD = [
    # (what, mutate, field path, words of the message)
    ("unknown machine", lambda d: d["map"]["nodes"].update({"a1": "srv-zz"}), "map.nodes.a1", "no such machine"),
    ("unknown node", lambda d: d["map"]["nodes"].update({"zz": "srv-a1"}), "map.nodes.zz", "no such node"),
    ("node not mapped", lambda d: d["map"]["nodes"].pop("b2"), "map.nodes", "is not mapped"),
    ("missing port", lambda d: d["map"]["links"][0].update({"ports": ["srv-a1:ens9", "leaf-a:swp1"]}),
     "map.links[0].ports[0]", "has no interface ens9"),
    ("port on the wrong machine", lambda d: d["map"]["links"][0].update({"ports": ["srv-a2:ens1f0", "leaf-a:swp1"]}),
     "map.links[0].ports[0]", "maps to machine srv-a1"),
    ("wan link without an emulator", lambda d: d["map"]["links"][9].pop("emulator"), "map.links[9].emulator",
     "map it across a wan-emulator"),
    ("emulator that is not one", lambda d: d["map"]["links"][9].update({"emulator": "srv-s1"}),
     "map.links[9].emulator", "not a wan-emulator"),
    ("emulator without ports", lambda d: _machine(d, "wan-1").pop("wan_ports"), "machines[12].wan_ports",
     "names the two ports"),
    ("link not mapped", lambda d: d["map"]["links"].pop(3), "map.links", "is not mapped to ports"),
    ("unknown link", lambda d: d["map"]["links"][0].update({"link": "wan-zz"}), "map.links[0].link", "no such link"),
    ("bad port syntax", lambda d: d["map"]["links"][0].update({"ports": ["srv-a1", "leaf-a:swp1"]}),
     "map.links[0].ports", "MACHINE:IFACE"),
    ("unknown role", lambda d: _machine(d, "srv-a1").update({"roles": ["gpu-box"]}), "machines[0].roles[0]", ""),
    ("unknown field", lambda d: d.update({"colour": "red"}), "colour", "unknown field"),
    ("host on a switch", lambda d: d["map"]["nodes"].update({"a1": "leaf-a"}), "map.nodes.a1",
     "compute or storage"),
]


@pytest.mark.parametrize("what,mutate,path,words", BAD, ids=[b[0] for b in BAD])
def test_a_bad_testbed_names_file_field_and_value(what, mutate, path, words):
    data = copy.deepcopy(example())
    mutate(data)
    errs = errors_of(data)
    hit = [e for e in errs if e.path == path and words in e.message]
    assert hit, [str(e) for e in errs]
    assert all(e.file == "tb.yaml" for e in errs)


def test_the_inventory_is_one_ansible_reads(tmp_path):
    inv = inventory(load_testbed(EXAMPLE))
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inv))
    exe = Path(sys.executable).parent / "ansible-inventory"
    res = subprocess.run([str(exe), "-i", str(path), "--list"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert sorted(got["wan_emulator"]["hosts"]) == ["wan-1", "wan-2", "wan-3", "wan-4"]
    assert len(got["compute"]["hosts"]) == 4 and len(got["linux_switch"]["hosts"]) == 6
    hv = got["_meta"]["hostvars"]["srv-b2"]
    assert hv["ansible_host"] == "192.0.2.14" and hv["metrolab_interfaces"][0]["rdma"] == "soft-roce"
    assert hv["metrolab_testbed"] == "example-lab" and hv["metrolab_nodes"] == ["b2"]
    assert got["_meta"]["hostvars"]["wan-1"]["metrolab_wan_ports"] == ["eth1", "eth2"]


def test_the_cli_writes_the_inventory_and_refuses_a_bad_file(tmp_path):
    out = tmp_path / "inv.yml"
    res = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "testbed", "inventory", str(EXAMPLE), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(out.read_text())["all"]["vars"]["metrolab_testbed"] == "example-lab"
    bad = copy.deepcopy(example())
    bad["map"]["nodes"]["a1"] = "srv-zz"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "testbed", "show", str(tmp_path / "bad.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "map.nodes.a1: no such machine" in res.stderr and "'srv-zz'" in res.stderr


def test_the_ray_config_is_one_rays_launcher_accepts_and_never_stops_ray_by_name(tmp_path):
    from ray.autoscaler._private.util import validate_config

    from metrolab.harness.testbed.derive import ray_cluster_config
    tb = load_testbed(EXAMPLE)
    cfg = ray_cluster_config(tb)
    validate_config(cfg)  # Ray's own schema
    assert cfg["provider"] == {"type": "local", "head_ip": "192.0.2.11",
                               "worker_ips": [m.mgmt for m in tb.ray_machines() if m.name != "srv-a1"]}
    commands = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert not any("ray stop" in c for c in commands)
    assert '"host:srv-a1"' in cfg["head_start_ray_commands"][0] and "--ray-client-server-port=10001" in commands[0]
    # every worker names itself: the shell turns the launcher's one command into each machine's resource
    worker = cfg["worker_start_ray_commands"][0]
    (tmp_path / "machine").write_text("srv-b1\n")
    res = subprocess.run(["bash", "-c", 'printf "%s" ' + worker.split("--resources=", 1)[1].replace(
        "/opt/metrolab", str(tmp_path))], capture_output=True, text=True, check=True)
    assert json.loads(res.stdout) == {"host:srv-b1": 1}
    out = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "testbed", "ray-config", str(EXAMPLE), "-o",
                          str(tmp_path / "cluster.yaml")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and yaml.safe_load((tmp_path / "cluster.yaml").read_text()) == cfg
    data = copy.deepcopy(example())
    _machine(data, "srv-b1")["vars"] = {"metrolab_root": "/srv/metrolab"}
    with pytest.raises(SpecError, match="same commands"):
        ray_cluster_config(resolve.testbed_from_data(data, "tb.yaml"))


def test_the_walkthroughs_testbed_file_is_valid():
    text = (Path(__file__).resolve().parents[3] / "docs" / "testbed.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    tb = resolve.testbed_from_data(yaml.safe_load(block), "docs/testbed.md")
    assert tb.topology.name == "metro-pair" and tb.ray_head.name == "srv-a"
    assert [lm.emulator for lm in tb.spec.map.links] == [None, None, "wan-1"]


@pytest.mark.parametrize("policy,words", [
    ({"name": "pfc", "links": ["leaf-b-gw-b"], "flow_control": {"kind": "pause", "upstream": "wan-ab-1"}},
     ["policy pfc", "pause", "PFC"]),
    ({"name": "shallow", "links": ["wan-ab-1"], "flow_control": {"kind": "tail-drop"}},
     ["link wan-ab-1", "WAN emulator wan-1", "switch's own port"]),
    ({"name": "sr", "switches": ["gw-a"], "load_balancing": {"kind": "planned", "encap": "srv6"}},
     ["SRv6", "encap: route"]),
], ids=["pause", "queues-on-an-emulated-link", "srv6"])
def test_a_testbed_refuses_what_it_cannot_apply_of_a_policy_before_building_anything(policy, words):
    """The hosts backend's own refusals, decided from the testbed file alone (no machine is asked)."""
    from metrolab.harness.errors import CapabilityError
    from metrolab.harness.policy.apply import PolicyApplier
    from metrolab.harness.policy.model import PolicySpec
    from metrolab.harness.testbed.hosts import HostsLab
    applier = PolicyApplier(HostsLab(load_testbed(EXAMPLE)))
    with pytest.raises(CapabilityError) as err:
        applier.check(PolicySpec.model_validate(policy))
    assert all(w in str(err.value) for w in words), str(err.value)
    # the same kinds of policy on a switch's own port, and planned routes, are applied
    applier.check(PolicySpec.model_validate({"name": "ok", "links": ["leaf-b-gw-b"], "switches": ["gw-a"],
                                             "flow_control": {"kind": "per-flow"},
                                             "load_balancing": {"kind": "planned"}}))


def test_a_sonic_switch_takes_pfc_ecn_and_the_hash_and_refuses_the_rest_before_anything_is_built():
    """gw-b on a SONiC switch: its port pause is the switch's PFC (no emulation refused), its
    ports' queues are the ASIC's (tail-drop refused with the reason); nothing of metrolab runs there."""
    from metrolab.harness.errors import CapabilityError
    from metrolab.harness.policy.apply import PolicyApplier
    from metrolab.harness.policy.model import PolicySpec
    from metrolab.harness.testbed.hosts import HostsLab
    data = example()
    _machine(data, "gw-b")["roles"] = ["sonic-switch"]
    lab = HostsLab(resolve.testbed_from_data(data, str(EXAMPLE)))
    assert lab.sonic_nodes() == {"gw-b"} and "gw-b" not in {m.name for m in lab.tb.ray_machines()}
    applier = PolicyApplier(lab)
    for ok in ({"name": "pfc", "links": ["leaf-b-gw-b"], "flow_control": {"kind": "pause", "upstream": "wan-ab-1"}},
               {"name": "ecn", "links": ["leaf-b-gw-b"], "flow_control": {"kind": "ecn"}},
               {"name": "hash", "switches": ["gw-a", "gw-b"], "load_balancing": {"kind": "ecmp-l3"}}):
        applier.check(PolicySpec.model_validate(ok))
    with pytest.raises(CapabilityError, match="tail-drop on SONiC switch gw-b: its buffers are the ASIC's"):
        applier.check(PolicySpec.model_validate({"name": "shallow", "links": ["leaf-b-gw-b"],
                                                 "flow_control": {"kind": "tail-drop"}}))
    with pytest.raises(CapabilityError, match=r"gw-b is a SONiC switch .*nothing of metrolab runs there"):
        lab.on("gw-b", print)


def test_the_sonic_example_puts_ray_on_the_servers_and_reaches_the_rest_by_ssh():
    """ansible/examples/testbed-sonic.yaml, the lab engineer's case: three RoCE servers, a SONiC
    switch, a Linux WAN emulator."""
    from metrolab.harness.testbed.agent import ssh_agent
    from metrolab.harness.testbed.hosts import HostsLab
    tb = load_testbed(EXAMPLE.with_name("testbed-sonic.yaml"))
    servers = {"srv-a1", "srv-a2", "srv-b1"}
    assert {m.name for m in tb.ray_machines()} == servers and tb.ray_head.name == "srv-a1"
    assert set(ssh_agent(tb).machines) == {"wan-1"}  # ssh only; the SONiC switch through its management plane
    assert set(inventory(tb)["all"]["children"]["ray_nodes"]["hosts"]) == servers
    lab = HostsLab(tb)
    assert lab.sonic_nodes() == {"gw-a"}
    # the 100 km span is shaped on the emulator's two ports, the SONiC switch's ports not at all
    assert {lk.name: {h.machine for h in lab.shaped_hops(lk.name)} for lk in tb.topology.links} == {
        "a1-gw-a": {"srv-a1"}, "a2-gw-a": {"srv-a2"}, "wan-ab": {"wan-1"}}
