"""The ray_node role's systemd unit, rendered by ansible from the role's own template and defaults
and checked by systemd's own parser (`systemd-analyze verify`: every directive known, ExecStart's
program there). This machine's init is not systemd, so the unit is not started here (the sandbox
runs nodes as processes): that it starts at boot and restarts a failed node is verified only on a
machine booted with systemd."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metrolab.harness.resources import ansible_dir

pytestmark = pytest.mark.unit
ROLE = ansible_dir() / "roles" / "ray_node"
BIN = Path(sys.executable).parent


def render(tmp_path: Path, **extra) -> Path:
    out = tmp_path / f"metrolab-ray-{'head' if extra.get('ray_node_head') else 'worker'}.service"
    play = [{"hosts": "all", "connection": "local", "gather_facts": False,
             "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
             "tasks": [{"name": "The unit", "ansible.builtin.template": {
                 "src": str(ROLE / "templates" / "metrolab-ray.service.j2"), "dest": str(out), "mode": "0644"}}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {"ray_node_venv": sys.prefix, "ray_node_dir": str(tmp_path / "ray"), "ray_node_ip": "192.0.2.10",
           "metrolab_ray_address": "192.0.2.1:6379", "ansible_python_interpreter": sys.executable, **extra}
    res = subprocess.run([str(BIN / "ansible-playbook"), "-i", "srv-a1,", "-e", yaml.safe_dump(env, default_flow_style=True),
                          str(tmp_path / "play.yml")], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, ANSIBLE_CONFIG=str(ansible_dir() / "ansible.cfg")))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def exec_start(unit: Path) -> list[str]:
    line = next(ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.partition("=")[2])


def test_the_unit_is_one_systemd_accepts_and_starts_the_node_the_process_path_starts(tmp_path):
    head = render(tmp_path, ray_node_head=True, ray_node_num_cpus=4)
    worker = render(tmp_path, ray_node_head=False)
    for unit in (head, worker):
        res = subprocess.run([shutil.which("systemd-analyze") or "systemd-analyze (systemd's tools: not installed)", "verify", str(unit)], capture_output=True, text=True, timeout=60)
        # a directive systemd does not know is only a warning (rc 0): none at all is the bar
        assert res.returncode == 0 and not res.stderr.strip() and not res.stdout.strip(), res.stderr
        text = unit.read_text()
        assert "RAY_AUTH_MODE=token" in text and f"RAY_AUTH_TOKEN_PATH={tmp_path}/ray/auth_token" in text
        assert "WantedBy=multi-user.target" in text and "Restart=on-failure" in text
    argv = exec_start(head)
    assert argv[:3] == [f"{sys.prefix}/bin/ray", "start", "--block"]
    assert argv[argv.index("--resources") + 1] == '{"host:srv-a1": 1}'
    assert {"--head", "--ray-client-server-port"} <= set(argv) and argv[argv.index("--num-cpus") + 1] == "4"
    w = exec_start(worker)
    assert w[w.index("--address") + 1] == "192.0.2.1:6379" and "--head" not in w and "--num-cpus" not in w
