"""One table per workload kind: the registry's kinds, each with its spec side (parameters, metrics)
and the rank side a rank process runs, found from the kind alone."""

from __future__ import annotations

import pytest

from metrolab.workloads.base import StepRank, Workload
from metrolab.workloads.registry import WORKLOADS, rank_workload

pytestmark = pytest.mark.unit


def test_every_kind_names_a_rank_side_in_its_own_module_that_measures():
    assert len(WORKLOADS) >= 11
    for kind, spec in WORKLOADS.items():
        assert issubclass(spec, Workload) and spec.kind == kind and spec.metrics, kind
        rank = rank_workload(kind)
        assert rank.__module__ == spec.__module__ and callable(getattr(rank, "measure", None)), kind
    # the kinds whose repetition is steps back to back share one timed loop
    assert all(issubclass(rank_workload(k), StepRank) for k in ("collective", "training-step", "pipeline",
                                                                  "federated"))
