"""The sequential design (harness/scenario/sequential.py): seeded Monte Carlo of runs that look after
every block and stop at the first conclusive verdict. A wrong verdict (pass where the truth violates
the criterion, fail where it meets it; any verdict where the truth sits on the threshold) must stay
within the nominal level for 1-16 looks; re-judging a fixed 95 % interval at every look does not."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from scipy import stats

from metrolab.harness.scenario.criteria import parse_criterion
from metrolab.harness.scenario.sequential import Design, blocks_needed, z_boundaries
from metrolab.harness.scenario.verdict import Settings, evaluate, summarize

pytestmark = pytest.mark.unit

ALPHA = 0.05
SIMS = 20_000
N_MIN = 3


def _stop_verdicts(x: np.ndarray, threshold: float, critical) -> np.ndarray:
    """Each simulated run's verdict on `mean <= threshold` (0 inconclusive, +1 pass, -1 fail): looks
    after every block from N_MIN, stopping at the first whose interval clears the threshold."""
    sims, n_max = x.shape
    verdict = np.zeros(sims, dtype=int)
    open_ = np.ones(sims, dtype=bool)
    for n in range(N_MIN, n_max + 1):
        s = x[:, :n]
        m, sd = s.mean(1), s.std(1, ddof=1)
        h = critical(n) * sd / math.sqrt(n)
        passed, failed = open_ & (m + h < threshold), open_ & (m - h > threshold)
        verdict[passed], verdict[failed] = 1, -1
        open_ &= ~(passed | failed)
    return verdict


def _rate_bound(rate: float) -> float:
    """The nominal rate plus three Monte Carlo standard errors."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / SIMS)


@pytest.mark.parametrize("looks", [1, 2, 4, 8, 16])
def test_wrong_verdicts_stay_within_the_nominal_level_for_1_to_16_looks(looks):
    rng = np.random.default_rng(20261204 + looks)
    n_max = N_MIN + looks - 1
    design = Design("sequential", 1 - ALPHA, N_MIN, n_max)
    # the truth on the threshold (log ratio 0.03, block spread 0.02): any verdict is wrong
    at = _stop_verdicts(rng.normal(0.03, 0.02, (SIMS, n_max)), 0.03, design.critical)
    assert np.mean(at != 0) <= _rate_bound(ALPHA), np.mean(at != 0)
    # a true null (no degradation) under a 3 % criterion: a fail is wrong
    null = _stop_verdicts(rng.normal(0.0, 0.02, (SIMS, n_max)), 0.03, design.critical)
    assert np.mean(null == -1) <= _rate_bound(ALPHA / 2), np.mean(null == -1)


def test_re_judging_a_fixed_interval_at_every_look_breaks_the_level():
    """ad1b757's --until-conclusive: a fixed 95 % interval re-read after every block."""
    rng = np.random.default_rng(7)
    x = rng.normal(0.03, 0.02, (SIMS, N_MIN + 15))
    naive = _stop_verdicts(x, 0.03, lambda n: stats.t.ppf(1 - ALPHA / 2, n - 1))
    assert np.mean(naive != 0) > 0.15, np.mean(naive != 0)  # about three times the nominal 5 %


def test_boundaries_hold_their_level_for_the_accumulating_statistic():
    rng = np.random.default_rng(1)
    for looks, n_max in (((1, 2, 3, 4, 5), 5), (tuple(range(3, 17)), 16)):
        b = np.array(z_boundaries(looks, n_max, ALPHA))
        z = np.cumsum(rng.standard_normal((200_000, n_max)), 1) / np.sqrt(np.arange(1, n_max + 1))
        crossed = (np.abs(z[:, [n - 1 for n in looks]]) > b).any(1).mean()
        assert abs(crossed - ALPHA) < 0.002, (looks, crossed)
        assert all(x > y for x, y in itertools.pairwise(b))  # O'Brien-Fleming: strict early, near z at the end


def test_one_look_is_students_t_and_looks_cost_width_early_not_late():
    for n in (2, 3, 8, 12):
        assert Design("sequential", 0.95, n, n).critical(n) == pytest.approx(stats.t.ppf(0.975, n - 1))
        assert Design("fixed", 0.95, 3, 3).critical(n) == pytest.approx(stats.t.ppf(0.975, n - 1))
    seq = Design("sequential", 0.95, 3, 24)
    assert seq.critical(4) > 10 * stats.t.ppf(0.975, 3)           # the first looks spend almost nothing
    assert seq.critical(24) < 1.2 * stats.t.ppf(0.975, 23)         # the last is close to a fixed design's
    assert sum(seq.count_alpha(n) for n in seq.looks()) == pytest.approx(0.05)


def test_the_judge_reads_the_designs_interval_at_every_look():
    """The verdict code takes its intervals from the run's design (not a method of its own)."""
    rng = random.Random(3)
    design = Design("sequential", 0.95, N_MIN, 12)
    settings = Settings(design=design)
    crit = [parse_criterion("efficiency_degradation <= 0.05 where distance_km in [100, 500]")]
    rows, ratios = [], []
    for b in range(12):
        base, point = 1.0 + rng.gauss(0, 0.01), 1.04 * (1 + rng.gauss(0, 0.02))
        ratios.append(math.log(point / base))
        for key, is_base, t in (("b", True, base), ("p", False, point)):
            rows.append({"workload": "w", "point_key": key, "label": key, "baseline": is_base,
                         "distance_km": 0.0 if is_base else 100.0, "loss": 0.0, "block": b, "order": 2 * b + (not is_base),
                         "status": "ok", "step_time_s": t})
        n = b + 1
        if n < N_MIN:
            continue
        p = next(x for x in evaluate(summarize(rows, (), settings), crit, settings).points if x.point_key == "p")
        r = np.asarray(ratios)
        h = design.critical(n) * r.std(ddof=1) / math.sqrt(n)
        assert p.ci_low == pytest.approx(1 - math.exp(-(r.mean() - h))) and p.ci_method == "sequential"
        assert p.ci_high == pytest.approx(1 - math.exp(-(r.mean() + h)))


def test_blocks_needed_grows_with_spread_and_with_looking():
    fixed, seq = Design("fixed", 0.95, 3, 3), Design("sequential", 0.95, 3, 16)
    assert blocks_needed(0.01, 0.02, fixed) < blocks_needed(0.02, 0.02, fixed)
    assert blocks_needed(0.01, 0.012, fixed) <= blocks_needed(0.01, 0.012, seq)
    n = blocks_needed(0.01, 0.01, fixed)
    assert stats.t.ppf(0.975, n - 1) * 0.01 / math.sqrt(n) < 0.01 <= stats.t.ppf(0.975, n - 2) * 0.01 / math.sqrt(n - 1)
    assert blocks_needed(0.01, 0.0, fixed) is None


def test_the_guarantee_in_the_docs_is_the_commands_output():
    """docs/statistics.md's table is `metrolab bench sequential --markdown` (seeded: the same
    figures anywhere), not typed."""
    from pathlib import Path

    from metrolab.harness.scenario.sequential import markdown_table
    doc = (Path(__file__).resolve().parents[3] / "docs" / "statistics.md").read_text()
    shown = doc.split("<!-- bench-sequential -->\n", 1)[1].split("<!-- /bench-sequential -->", 1)[0]
    assert shown == markdown_table(), "docs/statistics.md is stale: paste `metrolab bench sequential --markdown`"
