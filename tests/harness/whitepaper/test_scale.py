"""Full-scale figures for the convergence claim (pure: the models the lab's predictions use)."""

from __future__ import annotations

import dataclasses

import pytest

from metrolab.harness.whitepaper.scale import convergence_efficiency, convergence_full_scale, micro_batches_for
from metrolab.workloads import models as wm

pytestmark = pytest.mark.unit

SHAPE = wm.TrainingShape(compute_s=6.2, micro_batches=64, layers=48, bucket_bytes=(195e6,) * 16,
                         bucket_layers=(3,) * 16, ranks=4, sites=2, algo="hierarchical")
BASE = wm.Path(200e9, 0.0)


def at(ratio: float) -> wm.Path:
    return wm.Path(200e9 / ratio, 0.0005)


def test_efficiency_falls_with_the_ratio_and_more_compute_restores_it():
    effs = [convergence_efficiency(SHAPE, BASE, at(r)) for r in (1, 8, 32, 64)]
    assert effs == sorted(effs, reverse=True) and effs[0] <= 1 and effs[-1] < 0.95
    need = micro_batches_for(SHAPE, BASE, at(64))
    assert need is not None and need > SHAPE.micro_batches
    per_mb = SHAPE.compute_s / SHAPE.micro_batches

    def eff(mb: int) -> float:
        return convergence_efficiency(dataclasses.replace(SHAPE, micro_batches=mb, compute_s=per_mb * mb),
                                      BASE, at(64))
    assert eff(need) >= 0.95 > eff(need // 2)  # the fewest, doubling
    assert micro_batches_for(SHAPE, BASE, at(64), limit=SHAPE.micro_batches) is None


def test_the_claims_line_names_both_algorithms_and_the_compute_95_percent_needs():
    from metrolab.harness.scenario.spec import load_scenario
    line = convergence_full_scale(load_scenario("high-convergence"))
    assert "WAN 200 Gbit/s a link at 1:1, 100 km" in line and "flat" in line and "hierarchical" in line
    assert "at 64:1 needs" in line, line
