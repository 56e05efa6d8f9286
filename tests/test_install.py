"""`pip install` of a wheel built from this checkout gives a working `metrolab` in a fresh venv,
run from another directory: built-in scenarios, topologies, playbooks and the guest's scripts
travel as package data; nothing is looked up in a git checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "metrolab-runs",
                              "runs", ".ruff_cache", ".mypy_cache", "tests")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding only the wheel; its dependencies come from this venv (a .pth line, so
    the test needs no registry) but not metrolab itself, which this venv has as an editable install."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=SKIP)  # pip builds in place: not in the checkout
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp / "dist").glob("metrolab-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "dev-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return venv / "bin" / "metrolab", elsewhere


def run(installed, *args, timeout=120) -> subprocess.CompletedProcess:
    exe, cwd = installed
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.unit
def test_the_wheel_carries_its_data_and_not_the_checkout(installed):
    exe, cwd = installed
    origin = subprocess.run([exe.parent / "python", "-c", "import metrolab.harness; print(metrolab.harness.__file__); "
                             "from metrolab.harness.resources import scenarios_dir, playbook, guest_script; "
                             "print(scenarios_dir()); print(playbook('sonic-apply.yml').is_file()); "
                             "print(guest_script('guest_init.sh').is_file())"],
                            cwd=cwd, capture_output=True, text=True, check=True).stdout.split()
    assert str(ROOT) not in origin[0] and "site-packages" in origin[0], origin
    assert "site-packages" in origin[1] and origin[2:] == ["True", "True"], origin


@pytest.mark.unit
def test_the_wheel_installs_one_import_package(installed):
    """Only `metrolab` at the top of site-packages: harness/, netem/, workloads/ and reports/ are
    its subpackages (generic names like `harness` and `reports` belong to other distributions);
    py.typed: type checkers read its annotations (PEP 561)."""
    exe, _ = installed
    record = next(exe.parent.parent.glob("lib/python*/site-packages/metrolab-*.dist-info/RECORD"))
    tops = {line.split(",")[0].split("/")[0] for line in record.read_text().splitlines()}
    assert {t for t in tops if not t.endswith(".dist-info") and t != ".."} == {"metrolab"}, sorted(tops)
    assert {"metrolab/harness/cli/__init__.py", "metrolab/netem/tree.py", "metrolab/workloads/registry.py",
            "metrolab/reports/build.py", "metrolab/__main__.py", "metrolab/py.typed"} <= {line.split(",")[0] for line in
                                                                  record.read_text().splitlines()}


@pytest.mark.unit
def test_installed_metrolab_lists_scenarios_and_plans_the_default_topology(installed):
    res = run(installed, "scenarios", "--json")
    assert res.returncode == 0, res.stderr
    names = {s["name"] for s in json.loads(res.stdout)}
    assert {"load-balancing", "allreduce-distance", "flow-control"} <= names, names
    res = run(installed, "topology", "default", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert "site-packages" in plan["source"] and sum(n["kind"] == "host" for n in plan["nodes"]) == 6, plan["source"]
    res = run(installed, "tasks", "task-scheduling", "--plan-only", "--json")  # scenarios/tasks/ ships too
    assert res.returncode == 0, res.stderr
    assert [t["committed"] for t in json.loads(res.stdout)["tasks"]] == [True, True, False], res.stdout


@pytest.mark.requires("netns")
def test_installed_metrolab_runs_a_scenario_from_another_directory(installed):
    # the cheapest built-in on the host kernel (a gloo AllReduce under TBF caps): what is tested here
    # is that the installed tool finds its scenario, topology and workload code, not the scenario
    res = run(installed, "run", "rate-convergence", "--quick", "--json", timeout=600)
    # whether 2 quick blocks decide the 1:1 efficiency is the scenario's business (exit 5 counts as
    # run), but busbw > 0 is decided at every point by any working run: the verdicts are real
    assert res.returncode in (0, 5), res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["status"] in ("pass", "inconclusive") and str(installed[1]) in out["run_dir"], out["status"]
    busbw = [c for c in out["criteria"] if c["metric"] == "busbw_gbs"]
    assert len(busbw) == 3 and all(c["verdict"] == "pass" for c in busbw), busbw
    assert len(out["points"]) == 3 and all(p["status"] == "ok" for p in out["points"]), out["points"]
    # every point once a block: the 2 planned, and any the run replaced for interference (one suite
    # run here replaced 4, each noted)
    assert out["measured"] == 3 * out["blocks"]["collective"] >= 3 * 2, out
