"""metrolab's ansible project: ansible-lint clean at the production profile, every playbook parses
with its roles, and the inventory a testbed writes is one the playbooks' groups match."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metrolab.harness.resources import ansible_dir
from metrolab.harness.testbed.ops import full_inventory
from metrolab.harness.testbed.resolve import load_testbed

pytestmark = pytest.mark.unit
PROJECT = ansible_dir()
BIN = Path(sys.executable).parent
PLAYBOOKS = ["site.yml", "check.yml", "clean.yml", "sonic-apply.yml"]
ROLES = ["roce_host", "metrolab", "ray_node", "wan_emulator", "linux_switch", "sonic"]


def test_ansible_lint_is_clean_at_the_production_profile():
    res = subprocess.run([str(BIN / "ansible-lint"), "--nocolor", "--format=pep8", "--offline"], cwd=PROJECT,
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, NO_COLOR="1"))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in res.stderr + res.stdout


def test_every_role_is_there_with_its_defaults_and_tasks():
    for role in ROLES:
        assert (PROJECT / "roles" / role / "tasks" / "main.yml").is_file(), role
        assert (PROJECT / "roles" / role / "meta" / "main.yml").is_file(), role


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbooks_parse_with_their_roles(playbook, tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump(full_inventory(load_testbed(PROJECT / "examples" / "testbed.yaml"))))
    res = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inv), playbook], cwd=PROJECT,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg")))
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_inventory_gives_every_play_its_hosts():
    inv = full_inventory(load_testbed(PROJECT / "examples" / "testbed.yaml"))
    groups = inv["all"]["children"]
    for play in yaml.safe_load((PROJECT / "site.yml").read_text()):
        for group in play["hosts"].split(":"):
            assert group in groups or group == "sonic_switch", (play["name"], group)  # the example has no SONiC
    assert inv["all"]["vars"]["metrolab_ray_head"] == "srv-a1"
    # each emulator's netem queue is sized for the BDP of the links it carries (≥ netem's 1000)
    assert all(inv["all"]["hosts"][f"wan-{i}"]["metrolab_wan_limit_packets"] >= 1000 for i in range(1, 5))
