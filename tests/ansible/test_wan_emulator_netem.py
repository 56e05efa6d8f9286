"""The wan_emulator role on a kernel with netem (the guest kernel here, the runner's own on CI): a
bridge between the two ports, netem on each with the BDP-sized queue the controller computed, and
a second run that changes nothing. The emulator is a namespace with a port towards each of two
others; ansible runs the role there with a local connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metrolab.harness.ansible_run import outcomes
from metrolab.harness.kernel.nsctx import iproute
from metrolab.harness.lab.netns import remove_namespace
from metrolab.harness.lab.state import new_lab_id
from metrolab.harness.resources import ansible_dir

pytestmark = pytest.mark.requires("netem")
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
        yield names["em"]
    finally:
        for n in names.values():
            remove_namespace(n)


def test_the_role_bridges_the_ports_with_bdp_sized_netem_and_is_idempotent(emulator, tmp_path):
    # 100 Gb/s across 500 km: 2.45 ms one way, ~20,400 packets of 1500 bytes in flight
    first = run_role(emulator, tmp_path, 21000)
    assert first["ok"] and any("Create the bridge" in t for t in first["changed"]), first
    q = json.loads(subprocess.run(["tc", "-n", emulator, "-j", "qdisc", "show"], capture_output=True,
                                  text=True, check=True).stdout)
    roots = {x["dev"]: x for x in q if x.get("root")}
    for port in ("eth1", "eth2"):
        assert roots[port]["kind"] == "netem" and roots[port]["options"]["limit"] == 21000, roots[port]
    links = json.loads(subprocess.run(["ip", "-n", emulator, "-j", "link"], capture_output=True, text=True,
                                      check=True).stdout)
    assert {x["ifname"] for x in links if x.get("master") == "br-metrolab"} == {"eth1", "eth2"}
    second = run_role(emulator, tmp_path, 21000)
    assert second["ok"] and second["changed"] == [], second
