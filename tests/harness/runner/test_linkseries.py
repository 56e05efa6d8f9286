"""Link utilization over time from sampled byte counters (pure: no lab)."""

import json

import pytest

from metrolab.harness.runner.linkseries import utilization

pytestmark = pytest.mark.unit


def _samples(per_interval: list[dict[str, tuple[int, int]]], dt: float = 0.1):
    """Cumulative tx bytes of both ends of each link from per-interval increments."""
    t, acc = 0.0, {lk: [0, 0] for lk in per_interval[0]}
    out = [(t, {lk: tuple(v) for lk, v in acc.items()})]
    for inc in per_interval:
        t += dt
        for lk, (a, b) in inc.items():
            acc[lk][0] += a
            acc[lk][1] += b
        out.append((t, {lk: tuple(v) for lk, v in acc.items()}))
    return out


def test_utilization_is_the_busier_direction_over_the_rate_in_the_busy_period():
    rate = 100e6
    full = int(rate * 0.1 / 8)          # bytes a 100 Mbit/s link carries in 0.1 s
    idle = {"wan-1": (0, 0), "wan-2": (0, 0)}
    # idle, a partly idle start, 3 intervals with wan-1 full one way (ACKs back) and wan-2 at half,
    # a partly idle end, idle again
    busy = {"wan-1": (full, full // 40), "wan-2": (full // 40, full // 2)}
    edge = {"wan-1": (full // 4, 0), "wan-2": (0, full // 8)}
    m = utilization(_samples([idle, edge, busy, busy, busy, edge, idle]), {"wan-1": rate, "wan-2": rate})
    assert m["busy_s"] == pytest.approx(0.3)        # neither the idle tails nor the partial edges
    assert m["link_util_min"] == pytest.approx(0.5)                # per link: the claim is per link
    assert m["link_util"] == pytest.approx(0.75)
    series = json.loads(m["link_series"])
    assert series["wan-1"] == [0.0, 0.25, 1.0, 1.0, 1.0, 0.25, 0.0] and len(series["t"]) == 7


def test_no_traffic_or_no_rate_gives_no_figures():
    idle = {"wan-1": (0, 0)}
    assert utilization(_samples([idle, idle]), {"wan-1": 100e6}) == {}
    assert utilization(_samples([{"wan-1": (10 ** 6, 0)}]), {"wan-1": None}) == {}
    assert utilization([], {"wan-1": 100e6}) == {}
    # a transfer caught in two samples (a starved sampler): no figures, only how coarse it was
    full = {"wan-1": (10 ** 6, 0)}
    assert utilization(_samples([idle, full, full, idle], dt=0.5), {"wan-1": 100e6}) == {"link_sample_gap_s": 0.5}
