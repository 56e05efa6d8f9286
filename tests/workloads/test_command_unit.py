"""`kind: command` without a lab: the metrics file's reading, the placeholders, the scenario's
errors located at their field, and the shipped example scenario loads."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from metrolab.harness.errors import SpecError
from metrolab.harness.scenario.spec import load_scenario, scenario_from_data
from metrolab.workloads.command import argv_of, expand, read_steps, session_cpu_s

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_steps_are_read_in_order_and_a_bad_line_is_named(tmp_path):
    f = tmp_path / "m.jsonl"
    assert read_steps(f) == []  # no file: the caller falls back to wall time
    f.write_text('{"step": 0, "step_time_s": 0.5}\n\n{"step_time_s": 0.25, "loss": 1}\n')
    assert read_steps(f) == [0.5, 0.25]
    for bad in ('{"step": 2}', "not json", '{"step_time_s": "fast"}', '{"step_time_s": -1}',
                '{"step_time_s": true}', "[1]"):
        f.write_text('{"step_time_s": 0.5}\n' + bad + "\n")
        with pytest.raises(ValueError, match="METROLAB_METRICS line 2"):
            read_steps(f)


def test_only_the_two_placeholders_are_replaced():
    argv = expand(argv_of("{python} train.py --dir {scenario_dir}/data --fmt '{x}'"), "/s")
    assert argv == [sys.executable, "train.py", "--dir", "/s/data", "--fmt", "{x}"]
    assert argv_of(["bash", "-c", "echo $RANK"]) == ["bash", "-c", "echo $RANK"]


def _scenario(params: dict) -> dict:
    return {"name": "c", "topology": "metro-rdma", "sweep": {"links": ["wan-ab-1"], "distance_km": [100]},
            "workloads": [{"kind": "command", "hosts": ["a1", "b1"], "params": params}]}


@pytest.mark.parametrize(("params", "where", "says"), [
    ({}, "workloads[0].params.command", "Field required"),
    ({"command": ""}, "workloads[0].params.command", "an empty command"),
    ({"command": "true", "host_commands": {"s1": "true"}}, "workloads[0].params.host_commands.s1",
     "not one of the rank hosts"),
    ({"command": "true", "timeout_s": 0}, "workloads[0].params.timeout_s", "greater than 0"),
    ({"command": "true", "shell": True}, "workloads[0].params.shell", "unknown parameter"),
])
def test_a_bad_command_spec_is_refused_at_its_field(params, where, says):
    with pytest.raises(SpecError) as exc:
        scenario_from_data(_scenario(params), "c.yaml")
    assert exc.value.path == where and says in exc.value.message, (exc.value.path, exc.value.message)


def test_the_example_scenario_loads_with_its_script_beside_it():
    scn = load_scenario(str(EXAMPLES / "command-train.yaml"), quick=True)
    w = scn.spec.workloads[0]
    assert w.kind == "command" and "train_ddp.py" in w.params["command"]
    assert (Path(scn.source).parent / "train_ddp.py").is_file()


def test_a_sessions_cpu_counts_what_its_processes_spend(tmp_path):
    """The CPU-bound check's input: a command that spins ~0.6 s in a child of its own is charged it."""
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
    proc = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {spin!r}])"],
                            start_new_session=True)
    t0 = time.monotonic()
    seen = 0.0
    while proc.poll() is None:
        seen = max(seen, session_cpu_s(proc.pid))
        time.sleep(0.05)
    assert time.monotonic() - t0 >= 0.6
    assert 0.45 <= seen <= time.monotonic() - t0 + 0.1, seen  # the grandchild's spin, sampled to the end
