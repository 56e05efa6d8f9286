"""A run's identity (metrolab.harness.runner.results.run_metadata): what is measured, not how it is judged."""

from __future__ import annotations

import pytest

from metrolab.harness.errors import SpecError
from metrolab.harness.runner.results import ResultStore, run_metadata
from metrolab.harness.scenario.spec import scenario_from_data
from tests.support.runs import TOPO

pytestmark = pytest.mark.unit


def _hash(**over) -> str:
    data = {"name": "ident", "topology": TOPO, "workloads": [{"kind": "collective", "params": {"size": "64k"}}],
            "sweep": {"distance_km": [0, 100]}, "repetitions": 2} | over
    return run_metadata(scenario_from_data(data, "ident.yaml"), "netns")["scenario_hash"]


def test_judging_thresholds_leave_the_hash_what_is_measured_changes_it():
    same = _hash()
    assert same == "03663aa5944b6e0e"  # as every run made so far hashed it: they resume
    # a run made before the CPU-load limit existed resumes under any limit (and under stricter statistics)
    assert _hash(headroom={"max_cpu_load": 0.5}) == same
    assert _hash(statistics={"confidence": 0.99}) == same
    assert _hash(sweep={"distance_km": [0, 200]}) != same
    assert _hash(headroom={"auto_scale": True}) != same  # rescales what is measured


def test_a_directory_with_rows_is_refused_and_a_cut_line_is_no_row(tmp_path):
    """A new run never writes into another's rows; a line a kill cut short is no row (a run resumed
    with only that decides its scale again, and a new run may start there)."""
    store = ResultStore(tmp_path)
    assert not store.has_rows()
    (tmp_path / "results.jsonl").write_text('{"workload": "collective", "point_')  # killed mid-write
    assert not store.has_rows()
    store.start({"scenario_hash": "a"}, resume=False)
    store.record.append("results.jsonl", {"workload": "collective", "point_key": "k", "repetition": 0})
    assert store.has_rows()
    with pytest.raises(SpecError, match="already holds results; use --resume"):
        ResultStore(tmp_path).start({"scenario_hash": "a"}, resume=False)
    assert ResultStore(tmp_path).start({"scenario_hash": "a"}, resume=True)["resumed"] == 1
