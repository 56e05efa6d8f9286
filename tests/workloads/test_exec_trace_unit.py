"""Execution traces read for replay (metrolab.workloads.exec_trace), the replay's model
(metrolab.workloads.models.trace_step_s) and `kind: trace`'s checks, without a lab: hand-made traces
in the Chakra-linked form (times on the nodes) whose answer is known, and the shipped trace of a
real DDP job (Kineto beside the ET)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metrolab.harness.errors import SpecError
from metrolab.harness.scenario.spec import load_scenario, scenario_from_data
from metrolab.workloads import models as wm
from metrolab.workloads.exec_trace import read_trace, trace_world
from metrolab.workloads.trace import load

pytestmark = pytest.mark.unit
SHIPPED = Path(__file__).resolve().parents[2] / "scenarios" / "traces" / "ddp-mlp"
GRAD_BYTES = 4 * (256 * 128 + 128 + 128 * 256 + 256)  # docs/examples/train_ddp.py's MLP, fp32
PG = {"id": 2, "name": "## process_group:init ##", "ctrl_deps": 1, "attrs": [],
      "inputs": {"values": [json.dumps([{"pg_name": "0", "pg_desc": "default_pg", "group_size": 2, "ranks": []}])],
                 "types": ["String"]}, "outputs": {"values": []}}


def node(i: int, name: str, ts: float, dur: float, storage: int | None = None, tid: int = 1) -> dict:
    """An ET+ node (chakra_trace_link's output: ts and inclusive_dur in µs on the node)."""
    values = [[[100 + i, storage, 0, 1000, 4, "cpu"]]] if storage is not None else []
    types = ["GenericList[Tensor(float)]"] if storage is not None else []
    return {"id": i, "name": name, "ctrl_deps": 1, "ts": ts, "inclusive_dur": dur, "exclusive_dur": dur,
            "attrs": [{"name": "rf_id", "value": i}, {"name": "tid", "value": tid}],
            "inputs": {"values": values, "types": types}, "outputs": {"values": []}}


def step_nodes(execution: bool = True, consumer: bool = True, enclosed: bool = False) -> list[dict]:
    """One 100 ms step: 30 ms of compute, an all_reduce of 4000 B issued, 10 ms more compute, then
    50 ms idle until the all_reduce (60 ms on the backend's thread) ends, 10 ms after it.
    `enclosed`: from 29 ms to 95 ms inside one operator (FSDP waits inside a module's forward)."""
    out = [PG, node(3, "ProfilerStep#1", 0, 100_000), node(4, "aten::mm", 0, 29_000 if enclosed else 30_000)]
    if enclosed:
        out.append(node(10, "Block.forward", 29_000, 66_000))
    out += [node(5, "c10d::allreduce_", 30_000, 100, storage=7), node(6, "aten::relu", 30_100, 9_900)]
    if execution:
        out.append(node(7, "gloo:all_reduce", 30_200, 59_800, storage=7))
    out += [node(8, "aten::copy_", 90_000, 5_000, storage=7 if consumer else 9), node(9, "Optimizer.step", 95_000, 5_000)]
    return out


def write(folder: Path, per_rank: list[list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for r, nodes in enumerate(per_rank):
        (folder / f"et_{r}.json").write_text(json.dumps({"schema": "1.1.1-chakra.0.0.4", "nodes": nodes}))
    return folder


@pytest.mark.parametrize("enclosed", [False, True])
def test_a_step_is_its_compute_and_its_collectives_less_the_time_blocked(tmp_path, enclosed):
    t = read_trace(write(tmp_path / "t", [step_nodes(enclosed=enclosed)]), 0)
    (st,) = t.steps
    assert t.world == 2 and st.recorded_s == pytest.approx(0.1)
    # the 50 ms the thread sat idle until the all_reduce ended is the network's, not the job's:
    # replayed at another distance it is paid again. Counted as compute, a trace recorded on a slow
    # link would replay slow on a fast one
    assert [a[0] for a in st.actions] == ["compute", "issue", "compute", "wait", "compute"]
    assert [a[1] for a in st.actions if a[0] == "compute"] == pytest.approx([0.030, 0.010, 0.010])
    assert st.colls[0].op == "all_reduce" and st.colls[0].nbytes == 4000 and st.colls[0].dtype == "float32"


def test_without_the_backends_events_the_wait_is_at_the_first_use_of_the_result(tmp_path):
    t = read_trace(write(tmp_path / "t", [step_nodes(execution=False)]), 0)
    assert [a[1] for a in t.steps[0].actions if a[0] == "compute"] == pytest.approx([0.030, 0.010, 0.010])
    # nothing reads the result within the step: it is waited for at the step's end
    t = read_trace(write(tmp_path / "u", [step_nodes(execution=False, consumer=False)]), 0)
    assert [a[0] for a in t.steps[0].actions] == ["compute", "issue", "compute", "wait"]


def test_the_shipped_trace_is_a_real_ddp_jobs_steps():
    assert trace_world(SHIPPED) == 2
    traces = load(str(SHIPPED))
    for t in traces:  # the MLP's gradients, all in one DDP bucket, all-reduced once a step
        assert len(t.steps) == 3 and t.world == 2
        for st in t.steps:
            assert [(c.op, c.nbytes, c.dtype) for c in st.colls] == [("all_reduce", GRAD_BYTES, "float32")]
            assert [a[0] for a in st.actions] == ["compute", "issue", "compute", "wait", "compute"]
            assert 0 < st.compute_s < st.recorded_s


@pytest.mark.parametrize(("nodes", "says"), [
    ([dict(PG, inputs={"values": [json.dumps([{"pg_name": "0", "group_size": 2}, {"pg_name": "1", "group_size": 1}])],
                       "types": ["String"]})] + step_nodes()[1:], "2 process groups"),
    (step_nodes()[:3] + [node(5, "c10d::send", 30_000, 100, storage=7)], "point-to-point"),
    ([{k: v for k, v in n.items() if k not in ("ts", "inclusive_dur")} for n in step_nodes()], "no timings"),
    ([n for n in step_nodes() if not n["name"].startswith("ProfilerStep")], "marks no steps"),
])
def test_a_trace_that_cannot_be_replayed_is_refused_with_the_reason(tmp_path, nodes, says):
    with pytest.raises(SpecError, match=says) as e:
        read_trace(write(tmp_path / "t", [nodes]), 0)
    assert str(tmp_path / "t" / "et_0.json") in str(e.value)


def test_a_trace_replays_on_as_many_ranks_as_recorded_it(tmp_path):
    (tmp_path / "t").mkdir()
    with pytest.raises(SpecError, match="no execution traces"):
        trace_world(tmp_path / "t")
    write(tmp_path / "t", [step_nodes(), step_nodes()])
    (tmp_path / "t" / "et_1.json").rename(tmp_path / "t" / "et_2.json")
    with pytest.raises(SpecError, match=r"not numbered 0\.\.N-1"):
        trace_world(tmp_path / "t")
    topo = load_scenario("allreduce-distance").spec.topology
    data = {"name": "x", "topology": topo, "sweep": {"links": ["wan-ab-1"], "distance_km": [100]},
            "workloads": [{"kind": "trace", "hosts": ["a1", "a2", "b1"], "params": {"trace": str(SHIPPED)}}]}
    with pytest.raises(SpecError, match="recorded by 2 ranks and the workload has 3 rank hosts"):
        scenario_from_data(data, "x.yaml")


def test_the_model_replays_every_rank_and_waits_for_the_slowest():
    path = wm.Path(8e6, 0.005, 0.0, 1, 1500)  # 8 Mbit/s, 5 ms one way
    d = wm.collective_s("all_reduce", 1e5, path, ranks=2, sites=2)
    fast = (("compute", 1.0), ("issue", 0), ("compute", 1.0), ("wait", 0), ("compute", 1.0))
    slow = (("compute", 3.0), ("issue", 0), ("wait", 0), ("compute", 1.0))
    # the all_reduce starts when the slower rank issues it (3 s), both wait for it, then 1 s more
    assert wm.trace_step_s([fast, slow], (("all_reduce", 1e5),), path, sites=2) == pytest.approx(4.0 + d)
    assert wm.trace_step_s([fast, fast], (("all_reduce", 1e5),), path, sites=2,
                           compute_scale=0.5) == pytest.approx(max(1.0, 0.5 + d) + 0.5)
    with pytest.raises(ValueError, match="do not match"):
        wm.trace_step_s([fast, (("compute", 1.0), ("wait", 0))], (("all_reduce", 1e5),), path, sites=2)


def test_steps_replayed_back_to_back_let_a_ranks_short_tail_start_its_next_step():
    path = wm.Path(8e6, 0.005, 0.0, 1, 1500)
    d = wm.collective_s("all_reduce", 1e5, path, ranks=2, sites=2)

    def step(head: float, tail: float) -> tuple:
        return (("compute", head), ("issue", 0), ("wait", 0), ("compute", tail))
    # step 1: rank 0's tail is 3 s; step 2: rank 1's head is 3 s. Each alone takes 4 s + d; back to
    # back rank 1 runs its long head while rank 0 finishes its long tail: 6 s + 2d for both
    steps = [([step(1, 3), step(1, 1)], (("all_reduce", 1e5),)), ([step(1, 1), step(3, 1)], (("all_reduce", 1e5),))]
    alone = [wm.trace_step_s(acts, colls, path, sites=2) for acts, colls in steps]
    assert alone == pytest.approx([4.0 + d, 4.0 + d])
    assert wm.trace_steps_s(steps, path, sites=2) == pytest.approx((6.0 + 2 * d) / 2)
    # the second step's collective is its own (numbered after the first's), not the first's again
    assert wm.trace_steps_s([steps[0], steps[0]], path, sites=2) == pytest.approx(4.0 + d)
    with pytest.raises(ValueError, match="do not match"):
        wm.trace_steps_s([steps[0], ([step(1, 1)], (("all_reduce", 1e5),))], path, sites=2)
