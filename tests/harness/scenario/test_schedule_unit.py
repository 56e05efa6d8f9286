"""Task-based scheduling (pure): committed windows from the path's history and the reservations
before them, refusals that say why, and a transfer's end under a rate changed mid-way."""

from __future__ import annotations

import pytest

from metrolab.harness.scenario.schedule import (
    Commitment,
    History,
    Refusal,
    Request,
    Reservation,
    commit,
    finish_s,
    free_bps,
    schedule,
    slot_s,
)

pytestmark = pytest.mark.unit

MBIT = 1e6
SCALE = 1 / 60  # a minute slot plays in a second
EMPTY = History(1.0, ())
# a day of ten 1-s slots: busy for the first five (80 Mbit/s), quiet after (10)
DAY = History(1.0, tuple([80 * MBIT] * 5 + [10 * MBIT] * 5) * 3, period_s=10.0)


def test_an_empty_path_commits_the_shortest_window_the_rate_allows():
    got = commit(Request("a", 25_000_000, 10.0), 100 * MBIT, EMPTY, [], time_scale=SCALE)
    assert isinstance(got, Commitment)
    # 200 Mbit of payload / 0.95 goodput: 2 slots need 105 Mbit/s (> 100), 3 need 70.2
    assert (got.start_s, got.end_s) == (0.0, 3.0)
    assert got.rate_bps == pytest.approx(25e6 * 8 / 0.95 / 3 * 1.05)


def test_the_history_moves_a_transfer_off_the_peak():
    got = commit(Request("backup", 25_000_000, 10.0), 100 * MBIT, DAY, [], time_scale=SCALE)
    assert isinstance(got, Commitment) and (got.start_s, got.end_s) == (5.0, 8.0), got  # the quiet half
    assert got.free_bps == pytest.approx(90 * MBIT)
    assert DAY.predicted_bps(3.0, 6.0) == pytest.approx(80 * MBIT)  # a window touching the peak is judged by it


def test_the_prediction_is_a_high_quantile_of_the_same_phase():
    noisy = History(1.0, (10 * MBIT, 12 * MBIT, 50 * MBIT, 11 * MBIT) * 25, period_s=2.0)
    assert noisy.predicted_bps(0.0, 1.0) == pytest.approx(50 * MBIT)  # phase 0: 10 and 50 -> its 95th percentile
    assert noisy.predicted_bps(1.0, 2.0) == pytest.approx(12 * MBIT, rel=0.01)  # phase 1: 12 and 11


def test_reservations_stack_and_the_request_that_cannot_fit_is_refused_with_its_numbers():
    reqs = [Request("a", 25_000_000, 10.0), Request("b", 25_000_000, 20.0), Request("c", 25_000_000, 10.0)]
    a, b, c = schedule(reqs, 100 * MBIT, DAY, time_scale=SCALE)
    assert isinstance(a, Commitment) and isinstance(b, Commitment), (a, b)
    # beside a the quiet half has 16.3 Mbit/s left, and [8, 10) is 2 slots: b's earliest end is a thin
    # window over 13 slots (before the next quiet half's [15, 18))
    assert (a.start_s, a.end_s, b.start_s, b.end_s) == (5.0, 8.0, 0.0, 13.0)
    assert b.rate_bps == pytest.approx(b.free_bps) and b.free_bps == pytest.approx(90 * MBIT - a.rate_bps)
    # c, as a but after both: refused, with the roomiest window left and what it would carry
    assert isinstance(c, Refusal) and "deadline (10 s" in c.reason and "[8, 10) s from now, carries" in c.reason, c
    held = [a.reservation, b.reservation]
    assert all(free_bps(100 * MBIT, DAY, held, t, t + 1, 0.95) >= -1e-6 for t in range(20))  # never oversold


def test_service_levels_set_the_slot_and_a_deadline_inside_the_first_slot_is_refused():
    assert slot_s("hour", SCALE) == 60.0 and slot_s("day") == 86400.0
    got = commit(Request("x", 1_000_000, 30.0, "hour"), 100 * MBIT, EMPTY, [], now_s=10.0, time_scale=SCALE)
    assert isinstance(got, Refusal) and "hour slot" in got.reason, got
    ok = commit(Request("x", 1_000_000, 200.0, "hour"), 100 * MBIT, EMPTY, [], now_s=10.0, time_scale=SCALE)
    assert isinstance(ok, Commitment) and (ok.start_s, ok.end_s) == (60.0, 120.0)  # the next whole hour slot
    with pytest.raises(ValueError, match="week"):
        slot_s("week")  # type: ignore[arg-type]


def test_an_existing_reservation_is_respected_where_it_is_in_force():
    held = [Reservation("other", 0.0, 4.0, 95 * MBIT)]
    got = commit(Request("a", 10_000_000, 10.0), 100 * MBIT, EMPTY, held, time_scale=SCALE)
    assert isinstance(got, Commitment) and got.start_s == 4.0, got


def test_a_rate_raised_mid_transfer_ends_it_sooner_and_a_cut_later():
    nbytes = int(50 * MBIT * 4 * 0.95 / 8)  # 4 s at 50 Mbit/s
    assert finish_s(0.0, nbytes, [(0.0, 50 * MBIT)]) == pytest.approx(4.0)
    assert finish_s(0.0, nbytes, [(0.0, 50 * MBIT), (2.0, 100 * MBIT)]) == pytest.approx(3.0)
    assert finish_s(1.0, nbytes, [(0.0, 50 * MBIT), (3.0, 25 * MBIT)]) == pytest.approx(1.0 + 2.0 + 4.0)
    assert finish_s(0.0, nbytes, [(0.0, 0.0)]) == float("inf")


def test_a_guard_leaves_the_window_s_start_to_the_sender_and_can_push_it_a_slot_on():
    # 3 slots at the quiet 44 Mbit/s: without a guard 126 Mbit fit (42 needed); with 0.25 s of
    # each window left out they need 46, and the window takes a fourth slot
    free = History(1.0, (6 * MBIT,))
    req = Request("backup", 15_000_000, 10.0)
    plain = commit(req, 50 * MBIT, free, [], time_scale=SCALE)
    guarded = commit(req, 50 * MBIT, free, [], time_scale=SCALE, guard_s=0.25)
    assert isinstance(plain, Commitment) and (plain.start_s, plain.end_s) == (0.0, 3.0)
    assert isinstance(guarded, Commitment) and (guarded.start_s, guarded.end_s) == (0.0, 4.0)
    assert guarded.rate_bps == pytest.approx(15e6 * 8 / 0.95 / 3.75 * 1.05)
