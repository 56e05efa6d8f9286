"""`metrolab sonic render|diff|apply` from a spec file: located errors, the rendered file, the
diff against a running config, and the ansible push (real ansible-playbook, on localhost).

SONiC itself is never here: for the push, `show` and `config` are stand-ins on PATH that print a
running config and log what they are asked to do; the real switch is the `sonic` tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metrolab.harness import settings
from metrolab.harness.cli import main

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "sonic-gw.yaml"


def test_render_writes_a_consistent_config_db(tmp_path, capsys):
    out = tmp_path / "cfg.json"
    assert main(["sonic", "render", str(EXAMPLE), "-o", str(out)]) == 0
    db = json.loads(out.read_text())
    from metrolab.harness.policy.sonic import validate
    assert validate(db) == []
    sizes = {k: int(v["size"]) for k, v in db["BUFFER_PROFILE"].items()}
    # headroom grows with distance: 500 km > 100 km > the local 400G port's 300 m
    assert sizes["pg_lossless_100000_500km_profile"] > sizes["pg_lossless_100000_100km_profile"] > \
        sizes["pg_lossless_400000_300m_profile"]
    assert "consistent" in capsys.readouterr().out


@pytest.mark.parametrize("body,where", [
    ("ports: [{name: Ethernet0, speed: 33g}]", "ports.0.speed"),
    ("ports: [{name: eth0, speed: 100g}]", "ports.0.name"),
    ("ports: [{name: Ethernet0, speed: 100g}]\necn: {min: 4m, max: 2m}", "WRED_PROFILE|AZURE_LOSSLESS"),
    ("ports: [{name: Ethernet0, speed: 100g}]\ndscp_to_tc: {26: 5}\nlossless_priorities: [3]", "priority 3"),
    ("ports: [{name: Ethernet0, speed: 100g}, {name: Ethernet0, speed: 100g}]", "ports[1].name"),
    ("ports: [{name: Ethernet0, speed: 100g}]\nhash_fields: [SRC_PORT]", "hash_fields"),
    ("switch: gw-q\ntopology: default\nspeed: 100g", ": switch"),                      # ports from a topology
    ("switch: gw-a\ntopology: default", ": speed"),
    ("switch: gw-a\ntopology: default\nspeed: 100g\nport_names: {wan-zz: Ethernet0}", "port_names.wan-zz"),
])
def test_an_inconsistent_spec_is_refused_with_a_located_error(tmp_path, capsys, body, where):
    spec = tmp_path / "bad.yaml"
    spec.write_text(body + "\n")
    out = tmp_path / "cfg.json"
    assert main(["sonic", "render", str(spec), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(spec) in err and where in err, err
    assert not out.exists()  # nothing half-written


def test_diff_against_a_running_config(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    assert main(["sonic", "render", str(EXAMPLE), "-o", str(cfg)]) == 0
    running = json.loads(cfg.read_text())
    running["PORT_QOS_MAP"]["Ethernet0"]["pfc_enable"] = "3"    # changed on the switch
    del running["PFC_WD"]["Ethernet4"]                          # missing there
    running["BUFFER_PG"]["Ethernet12|3-4"] = {"profile": "x"}   # something metrolab does not render
    running["DEVICE_METADATA"] = {"localhost": {"hostname": "sw"}}  # a table metrolab leaves alone
    (tmp_path / "running.json").write_text(json.dumps(running))
    capsys.readouterr()
    assert main(["sonic", "diff", str(EXAMPLE), str(tmp_path / "running.json"), "--json"]) == 0
    changes = {(c["op"], c["table"], c["key"]) for c in json.loads(capsys.readouterr().out)}
    assert changes == {("change", "PORT_QOS_MAP", "Ethernet0"), ("add", "PFC_WD", "Ethernet4"),
                       ("remove", "BUFFER_PG", "Ethernet12|3-4")}


STANDIN = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
if [ "$(basename "$0")" = show ]; then cat "{running}"; fi
"""


@pytest.fixture
def sonic_standins(tmp_path):
    """`show` and `config` on PATH: a running config to read, a log of what apply asked."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    running = tmp_path / "running.json"
    running.write_text(json.dumps({"PORT_QOS_MAP": {}, "DEVICE_METADATA": {"localhost": {}}}))
    for name in ("show", "config"):
        f = bin_dir / name
        f.write_text(STANDIN.format(log=log, running=running))
        f.chmod(0o755)
    return bin_dir, log


def apply(tmp_path, bin_dir, *extra):
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "sonic", "apply", str(EXAMPLE), "-i", "localhost,",
                           "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}",
                           "--dest", str(tmp_path / "staged" / "metrolab.json"), "--json", *extra],
                          capture_output=True, text=True, env=env, timeout=300)


def test_apply_check_is_a_dry_run_with_a_diff(tmp_path, sonic_standins):
    bin_dir, log = sonic_standins
    (tmp_path / "staged").mkdir()
    r = apply(tmp_path, bin_dir, "--check")
    assert r.returncode == 0, r.stderr
    host = json.loads(r.stdout)["hosts"][0]
    assert host["ok"] and "sonic : Stage the config_db fragment" in host["changed"]  # role : task
    assert not (tmp_path / "staged" / "metrolab.json").exists()          # nothing copied
    assert log.read_text().splitlines() == ["show runningconfiguration all"]  # no `config` ran
    ops = {(op, table) for op, table, *_ in host["diff"]}
    assert ("add", "BUFFER_PROFILE") in ops and ("add", "PORT_QOS_MAP") in ops


def test_apply_stages_the_fragment_and_runs_config_load(tmp_path, sonic_standins):
    bin_dir, log = sonic_standins
    (tmp_path / "staged").mkdir()
    r = apply(tmp_path, bin_dir)
    assert r.returncode == 0, r.stderr
    staged = tmp_path / "staged" / "metrolab.json"
    from metrolab.harness.policy.sonic import validate
    assert validate(json.loads(staged.read_text())) == []
    assert log.read_text().splitlines() == ["show runningconfiguration all", f"config load -y {staged}",
                                            "config save -y"]


@pytest.mark.requires("sonic")
def test_apply_check_on_a_real_switch(tmp_path):
    inv = settings.get("METROLAB_SONIC_INVENTORY")
    r = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "sonic", "apply", str(EXAMPLE), "-i", inv, "--check",
                        "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert all(h["diff"] is not None for h in json.loads(r.stdout)["hosts"])


def test_ports_from_a_topology_switch_take_their_links_distances(tmp_path):
    from metrolab.harness.policy.sonic import headroom
    spec = tmp_path / "gw.yaml"
    spec.write_text("switch: gw-a\ntopology: default\nspeed: 100g\nport_names: {wan-ab-1: Ethernet0}\n")
    out = tmp_path / "cfg.json"
    assert main(["sonic", "render", str(spec), "-o", str(out)]) == 0
    db = json.loads(out.read_text())
    # the default lab: gw-a has leaf-a (no distance: 300 m), wan-ab-1/2 (100 km), wan-as (50 km)
    prof = db["BUFFER_PG"]["Ethernet0|3-4"]["profile"]
    assert db["BUFFER_PROFILE"][prof]["xoff"] == str(headroom(100, 100)["xoff"])
    assert len(db["PORT_QOS_MAP"]) == 4
