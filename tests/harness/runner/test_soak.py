"""Soak trends (pure): a slope with its interval per series, judged against the series' tolerance."""

from __future__ import annotations

import random

import pytest

from metrolab.harness.runner.soak import parse_duration, trend, trends

pytestmark = pytest.mark.unit

T = [float(i) for i in range(30)]  # a sample a second


def test_a_steady_leak_grows_a_constant_is_stable_noise_is_not_a_leak():
    rng = random.Random(1)
    leak = trend("rank0_rss_mb", T, [300 + t + rng.gauss(0, 0.3) for t in T])  # 29 MiB over the run (tolerance 15)
    assert leak is not None and leak.verdict == "grows" and leak.low_per_h > 0
    assert leak.slope_per_h == pytest.approx(3600, rel=0.05)
    flat = trend("lab_qdiscs", T, [42] * len(T))
    assert flat is not None and flat.verdict == "stable" and flat.slope_per_h == 0
    noisy = trend("rank0_rss_mb", T, [300 + rng.gauss(0, 0.3) for _ in T])  # within 8 MiB whatever its slope
    assert noisy is not None and noisy.verdict == "stable"


def test_one_descriptor_more_per_repetition_is_a_leak_one_extra_once_is_not_decided():
    fds = trend("rank1_fds", T, [20 + int(t) for t in T])
    assert fds is not None and fds.verdict == "grows"
    once = trend("rank1_fds", T, [20] * 15 + [21] * 15)
    assert once is not None and once.verdict != "stable"  # a step: the data cannot rule growth out


def test_a_pool_started_lazily_steps_up_once_and_is_not_a_leak_a_staircase_is():
    for at in (8, 22):  # two threads more, early or late in the run (a CI soak's Ray driver: 26 -> 28)
        lazy = trend("runner_threads", T, [26] * at + [28] * (len(T) - at))
        assert lazy is not None and lazy.verdict == "inconclusive" and lazy.slope_per_h > 0, (at, lazy)
    stairs = trend("runner_threads", T, [26 + int(t) // 6 for t in T])  # one more every 6 repetitions
    assert stairs is not None and stairs.verdict == "grows"


def test_a_noisy_step_time_too_short_to_judge_is_inconclusive_and_too_few_samples_give_nothing():
    rng = random.Random(2)
    st = trend("step_time_s", T[:4], [0.1 + rng.gauss(0, 0.03) for _ in T[:4]])
    assert st is not None and st.verdict == "inconclusive"
    assert trend("step_time_s", T[:2], [0.1, 0.2]) is None
    assert trend("step_time_s", T[:5], [0.1, None, float("nan"), 0.1, None]) is None  # two usable samples


def test_every_numeric_series_of_the_rows_but_time_and_index():
    rows = [{"t": 1000.0 + t, "repetition": i, "step_time_s": 0.1, "rank0_fds": 12, "note": "x", "ok": True}
            for i, t in enumerate(T)]
    assert {tr.series for tr in trends(rows)} == {"step_time_s", "rank0_fds"}
    assert trends([]) == []


@pytest.mark.parametrize("text,seconds", [("45", 45), ("30s", 30), ("10m", 600), ("1.5h", 5400), ("2min", 120)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "-5", "m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
