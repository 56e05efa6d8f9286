"""`metrolab testbed check`'s judgement on facts (pure) and the facts script on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metrolab.harness.testbed import check, versions
from metrolab.harness.testbed.resolve import load_testbed

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[3] / "ansible" / "examples" / "testbed.yaml"
CONTROLLER = {"python": "3.11.7", "metrolab": "0.1.0", "torch": "2.13.0+cpu", "ray": "2.60.0", "pyroute2": "0.9.7",
              "pydantic": "2.14.4", "ansible-core": "2.19.14", "pyverbs": "44.0-2"}


def good_facts(tb) -> dict:
    """Facts of a healthy lab: every interface up at its MTU, RDMA where named, netem on emulators."""
    out = {}
    for m in tb.spec.machines:
        rdma = [{"device": x.rdma if x.rdma != "soft-roce" else f"rxe_{x.name}", "port": 1, "state": "4: ACTIVE",
                 "netdev": x.name, "rocev2_gids": [{"index": 1, "gid": "0000:0000:0000:0000:0000:ffff:0a01:0001"}]}
                for x in m.interfaces if x.rdma]
        lossless = {"driver": "mlx5_core", "pfc": {"cap": 8, "on": [3]}, "ecn": {"roce_np": [3], "roce_rp": [3]},
                    "ets": {"tsa": {"0": "ets", "3": "ets"}, "bw": {"0": 50, "3": 50}}}
        out[m.name] = {"kernel": "6.1.0", "os": {"id": "debian", "version_id": "12"}, "python": "3.11.2",
                       "netem": True, "rdma": rdma, "uid": 0,
                       "interfaces": {x.name: {"exists": True, "mtu": 9000, "operstate": "up", "gro": False,
                                               **(lossless if x.rdma else {})} for x in m.interfaces},
                       "versions": dict(CONTROLLER, python="3.11.2")}
    return out


def judge(tb, facts, needs_netem=False, unreachable=None):
    nodes = {m.name: {"NodeManagerAddress": m.mgmt} for m in tb.ray_machines()}
    clocks = {m.name: {"offset_s": 0.0002, "uncertainty_s": 0.0005} for m in tb.ray_machines()}
    return check.judge(tb, facts, unreachable or {}, CONTROLLER, nodes, clocks, needs_netem)


def levels(findings, machine, what):
    return [f.level for f in findings if f.machine == machine and f.check.startswith(what)]


def test_a_healthy_lab_is_ok_and_python_patch_levels_do_not_matter():
    tb = load_testbed(EXAMPLE)
    findings = judge(tb, good_facts(tb))
    assert {f.level for f in findings} == {"ok"}, [f for f in findings if f.level != "ok"]
    assert len([f for f in findings if f.check == "mtu path"]) == len(tb.spec.map.links)


def test_what_spoils_a_run_fails_and_what_limits_it_warns():
    tb = load_testbed(EXAMPLE)
    f = good_facts(tb)
    f["srv-a1"]["versions"]["torch"] = "2.12.0"                       # mixed torch
    f["srv-b2"]["rdma"] = []                                          # Soft-RoCE never made
    f["srv-a2"]["rdma"][0]["rocev2_gids"] = []                        # no address: no RoCEv2 GID
    f["gw-a"]["interfaces"]["swp10"]["mtu"] = 1400                    # the WAN path below 1500
    f["wan-2"]["netem"] = False
    f["wan-3"]["interfaces"]["eth2"]["gro"] = True                   # merged buffers to netem (after a reboot)
    f["wan-4"]["interfaces"]["eth1"]["gro"] = None                   # a driver without the ethtool call
    f["srv-s1"]["versions"] = None                                    # never provisioned
    findings = judge(tb, f, unreachable={"leaf-s": "ssh: connection refused"})
    assert levels(findings, "srv-a1", "versions") == ["fail"]
    assert levels(findings, "srv-b2", "rdma") == ["fail"]
    assert "no RoCE v2 GID" in next(x.detail for x in findings if x.machine == "srv-a2" and x.check.startswith("rdma"))
    assert levels(findings, "wan-ab-1", "mtu path") == ["fail"]
    assert levels(findings, "wan-2", "netem") == ["warn"]              # rate and loss points still run
    assert levels(judge(tb, f, needs_netem=True), "wan-2", "netem") == ["fail"]
    assert levels(findings, "wan-3", "gro") == ["fail"] and levels(findings, "wan-1", "gro") == ["ok"]
    assert levels(findings, "wan-4", "gro") == ["warn"]                # unread is not "off"
    assert levels(findings, "srv-s1", "versions") == ["fail"]
    assert levels(findings, "leaf-s", "reachable") == ["fail"]
    rep = check.CheckReport(tb.name, {}, findings)
    assert rep.verdict == "fail" and rep.to_dict()["verdict"] == "fail"


def test_what_would_spoil_a_lossless_roce_run_is_flagged_per_nic():
    tb = load_testbed(EXAMPLE)
    f = good_facts(tb)
    f["srv-a1"]["interfaces"]["ens1f0"]["pfc"]["on"] = []              # PFC off
    f["srv-a2"]["interfaces"]["ens1f0"]["ecn"] = {"roce_np": [3], "roce_rp": []}  # no DCQCN reaction
    f["srv-b1"]["interfaces"]["ens1f0"] |= {"driver": "e1000e", "pfc": None}      # no DCB at all
    f["srv-s1"]["os"] = {"id": "centos", "version_id": "7"}
    findings = {(x.machine, x.check): x for x in judge(tb, f)}
    assert findings[("srv-a1", "lossless ens1f0")].level == "warn"
    assert "PFC off on every priority" in findings[("srv-a1", "lossless ens1f0")].detail
    assert findings[("srv-a2", "lossless ens1f0")].level == "warn"
    assert "priority 3: roce_rp" in findings[("srv-a2", "lossless ens1f0")].detail
    assert findings[("srv-b1", "lossless ens1f0")].level == "warn"
    assert "e1000e" in findings[("srv-b1", "lossless ens1f0")].detail
    assert "PFC not readable" in findings[("srv-b1", "lossless ens1f0")].detail
    # Soft-RoCE has no PFC: the path's switches make it lossless, nothing to flag on the NIC
    assert findings[("srv-b2", "lossless ens1f0")].level == "ok"
    assert findings[("srv-s1", "system")].level == "warn" and "debian 12" in findings[("srv-s1", "system")].detail
    assert findings[("srv-s2", "system")].level == "ok"
    assert "PFC on priority 3; ECN (DCQCN) on; ETS on" in judge_detail(tb, good_facts(tb), "srv-a1")


def judge_detail(tb, facts, machine: str) -> str:
    return next(x.detail for x in judge(tb, facts) if x.machine == machine and x.check.startswith("lossless"))


def test_a_clock_off_beyond_its_uncertainty_warns():
    tb = load_testbed(EXAMPLE)
    nodes = {m.name: {"NodeManagerAddress": m.mgmt} for m in tb.ray_machines()}
    clocks = {m.name: {"offset_s": 0.0, "uncertainty_s": 0.0002} for m in tb.ray_machines()}
    clocks["srv-b1"] = {"offset_s": 0.004, "uncertainty_s": 0.001}
    clocks["srv-b2"] = {"offset_s": 0.004, "uncertainty_s": 0.005}   # not known to be off
    findings = check.judge(tb, good_facts(tb), {}, CONTROLLER, nodes, clocks, False)
    assert levels(findings, "srv-b1", "clock") == ["warn"] and levels(findings, "srv-b2", "clock") == ["ok"]


def test_versions_differ_on_packages_and_python_minor_only():
    assert versions.differences(CONTROLLER, dict(CONTROLLER, python="3.11.2")) == {}
    assert versions.differences(CONTROLLER, dict(CONTROLLER, python="3.12.1")) == {"python": ("3.11.7", "3.12.1")}
    assert versions.differences(CONTROLLER, dict(CONTROLLER, ray=None)) == {"ray": ("2.60.0", None)}


def test_the_facts_script_runs_on_the_standard_library_and_compare_exits_3_on_a_difference():
    script = Path(check.__file__).with_name("machine_facts.py")
    res = subprocess.run(["/usr/bin/python3", "-I", str(script), sys.prefix, "lo", "nosuch0"],
                         capture_output=True, text=True, timeout=120, check=True)
    facts = json.loads(res.stdout)
    assert facts["interfaces"]["lo"]["exists"] and not facts["interfaces"]["nosuch0"]["exists"]
    assert facts["interfaces"]["lo"]["gro"] is True  # the kernel's default for a device (veths clear it)
    assert facts["versions"]["metrolab"] == versions.collect()["metrolab"]
    mine = versions.collect()
    same = subprocess.run([sys.executable, "-m", "metrolab.harness.testbed.versions", "--compare", json.dumps(mine)],
                          capture_output=True, text=True, timeout=60)
    assert same.returncode == 0, same.stdout
    other = subprocess.run([sys.executable, "-m", "metrolab.harness.testbed.versions", "--compare",
                            json.dumps(dict(mine, ray="1.0.0"))], capture_output=True, text=True, timeout=60)
    assert other.returncode == 3 and json.loads(other.stdout)["differences"] == {"ray": ["1.0.0", mine["ray"]]}


def test_a_sonic_switchs_management_plane_and_its_mapped_ports_are_checked():
    import yaml

    from metrolab.harness.testbed import resolve
    data = yaml.safe_load(EXAMPLE.read_text())
    next(m for m in data["machines"] if m["name"] == "gw-b")["roles"] = ["sonic-switch"]
    tb = resolve.testbed_from_data(data, str(EXAMPLE))
    mapped = sorted({p.split(":")[1] for lm in tb.spec.map.links for p in lm.ports if p.startswith("gw-b:")})
    ports = {f"PORT|{p}": {"speed": "400000", "admin_status": "up"} for p in mapped}
    found = check.sonic_findings(tb, {"gw-b": ports})
    assert [f.level for f in found] == ["ok"] * (1 + len(mapped)) and "400 Gb/s" in found[1].detail
    found = check.sonic_findings(tb, {"gw-b": {k: v for k, v in ports.items() if k != f"PORT|{mapped[0]}"}})
    bad = [f for f in found if f.level == "fail"]
    assert len(bad) == 1 and bad[0].check == f"port {mapped[0]}" and f"no PORT|{mapped[0]}" in bad[0].detail
    found = check.sonic_findings(tb, {"gw-b": "SONiC switch gw-b (192.0.2.32): snapshot: RedisError: no Redis"})
    assert [(f.check, f.level) for f in found] == [("sonic", "fail")] and "no Redis" in found[0].detail


def test_a_machine_reached_over_ssh_only_runs_the_operations_from_the_bundle():
    tb = load_testbed(str(EXAMPLE))
    agent = {m.name for m in tb.spec.machines} - {m.name for m in tb.ray_machines()}
    assert agent and all(not {"compute", "storage"} & set(tb.machine(n).roles) for n in agent)
    got = {f.machine: f for f in check.agent_findings({
        "sw": {"python": "3.11.2", "foreign": []}, "old": {"python": "3.10.12", "foreign": []},
        "odd": {"python": "3.12.3", "foreign": ["pydantic_core"]},
        "gone": "LabError: machine gone (10.0.0.9): remote.imports over ssh failed (255): Connection refused"})}
    assert got["sw"].level == "ok" and "nothing of metrolab or Ray installed" in got["sw"].detail
    assert got["old"].level == "fail" and "3.10.12" in got["old"].detail and "3.11" in got["old"].detail
    assert got["odd"].level == "fail" and "pydantic_core" in got["odd"].detail
    assert got["gone"].level == "fail" and "Connection refused" in got["gone"].detail


def test_facts_are_read_past_what_the_login_shell_printed():
    # a sandbox run's b1, verbatim but shortened: ~/.bashrc's pyenv complained before the script
    # printed (the script module runs under a tty: one stream); no JSON at all is not facts
    said = ("cannot rehash: /root/.pyenv/shims isn't writable\r\n"
            '{"kernel": "6.18.44", "uid": 0, "interfaces": {"eth0": {"mtu": 1500}}}\r\n')
    assert check.facts_json(said) == {"kernel": "6.18.44", "uid": 0, "interfaces": {"eth0": {"mtu": 1500}}}
    with pytest.raises(json.JSONDecodeError):
        check.facts_json("cannot rehash: /root/.pyenv/shims isn't writable\r\n")
