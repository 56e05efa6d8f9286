import math

import pytest

from metrolab.netem import models, units
from metrolab.netem.profile import LossModel

pytestmark = pytest.mark.unit


def test_fiber_delay_is_about_4_9_us_per_km():
    assert models.fiber_delay_s(1) == pytest.approx(4.897e-6, rel=1e-3)
    assert models.fiber_delay_s(100) * 2 == pytest.approx(0.98e-3, rel=1e-2)  # 100 km RTT ~0.98 ms
    assert models.fiber_delay_s(500) == pytest.approx(2.45e-3, rel=1e-2)


def test_group_index_and_hops_add_up():
    assert models.fiber_delay_s(100, group_index=1.5) > models.fiber_delay_s(100)
    assert models.link_delay_s(100, hops=3, hop_latency_s=1e-6) == pytest.approx(models.fiber_delay_s(100) + 3e-6)


@pytest.mark.parametrize("bad", [{"distance_km": -1}, {"hops": -1}, {"hop_latency_s": -1e-6}])
def test_delay_rejects_negative(bad):
    with pytest.raises(ValueError):
        models.link_delay_s(**({"distance_km": 1} | bad))


def test_bdp_matches_field_figures():
    assert models.bdp_bytes(100e9, 4.9e-3) == pytest.approx(61.25e6)  # ~61 MB
    assert models.bdp_bytes(400e9, 4.9e-3) == pytest.approx(245e6)


def test_netem_limit_covers_the_delay_line_not_the_1000_default():
    # 10 Gbit/s, 2.45 ms one way: ~2000 full-size packets in flight, so 1000 would tail-drop
    limit = models.netem_limit_packets(10e9, 2.45e-3)
    in_flight = 10e9 * 2.45e-3 / 8 / 1514
    assert limit >= 1.5 * in_flight > models.NETEM_DEFAULT_LIMIT
    assert models.netem_limit_packets(1e6, 0) == 64  # the floor
    assert models.netem_limit_packets(1e9, 1e-3, queue_packets=500) == math.ceil(1e9 * 1e-3 / 8 / 1514 * 1.5) + 500


def test_convergence_ratio():
    assert models.convergence_rate_bps(100e9, 32, 32) == 100e9
    assert models.convergence_rate_bps(100e9, 64, 32) == 200e9
    with pytest.raises(ValueError):
        models.convergence_rate_bps(100e9, 8, 0.5)


def test_binomial_interval_contains_mean():
    lo, hi = models.binomial_interval(20000, 0.05)
    assert lo < 1000 < hi
    assert hi - lo == pytest.approx(2 * 2.5758 * math.sqrt(20000 * 0.05 * 0.95))


def test_tbf_burst_at_least_a_tick():
    assert models.tbf_burst_bytes(1e9) == 125000
    assert models.tbf_burst_bytes(1e9, burst_s=5e-3) == 625000
    assert models.tbf_burst_bytes(1e6) == 16 * 1024


def test_gilbert_elliott_mean_loss():
    ge = LossModel(kind="gilbert-elliott", p=0.01, r=0.3, h=0.0, k=1.0)
    assert ge.mean_loss == pytest.approx(0.01 / 0.31)
    assert LossModel(p=0.001).mean_loss == 0.001


@pytest.mark.parametrize("text,value", [("10gbit", 10e9), ("100mbit", 100e6), ("1.5Gbit", 1.5e9), (5e6, 5e6),
                                        ("1mbps", 8e6)])
def test_parse_rate(text, value):
    assert units.parse_rate(text) == value


@pytest.mark.parametrize("text,value", [("2.5ms", 2.5e-3), ("100us", 1e-4), ("1s", 1.0), (3, 3e-3)])
def test_parse_time(text, value):
    assert units.parse_time(text) == pytest.approx(value)


@pytest.mark.parametrize("text,value", [("0.1%", 0.001), (0.001, 0.001), ("1e-5", 1e-5)])
def test_parse_probability(text, value):
    assert units.parse_probability(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["fast", "10 parsecs", "-3gbit"])
def test_parse_rate_rejects(bad):
    with pytest.raises(ValueError):
        units.parse_rate(bad)


def test_probability_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        units.parse_probability("150%")


def test_calibration_takes_the_median_of_its_estimates_not_the_minimum():
    """Five runs whose per-qdisc overhead estimates scatter around 60 us: the median is unbiased,
    the minimum of them (the old estimator) is biased low by about one standard deviation."""
    from metrolab.netem.calibrate import fit_from_runs
    runs = []
    for _k, extra in enumerate((0.0, -30e-6, 20e-6, 10e-6, -10e-6)):
        plain = [0.1 + 0.001 * i for i in range(100)]                                   # ms
        runs.append({0.0: plain, 0.5e-3: [x + 2 * (0.5 + 0.060 + extra * 1e3) for x in plain],
                     2.5e-3: [x + 2 * (2.5 + 0.060 - extra * 1e3) for x in plain]})
    fit = fit_from_runs(runs)
    assert fit.offset_s == pytest.approx(60e-6, abs=1e-9) and fit.n == 10
    assert 10e-6 < fit.noise_s < 30e-6
