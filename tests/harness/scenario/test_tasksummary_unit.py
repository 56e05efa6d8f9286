"""A plan played several times, summarized (pure): a commitment passes only when every play met
its window and the prediction interval of one play's end is inside it, fails when any play missed
it or lost bytes (whatever the mean), and is inconclusive when every play met it but the spread
reaches past the window's end, or one play gives no interval."""

from __future__ import annotations

import pytest

from metrolab.harness.scenario.tasksummary import summarize, task_verdict

pytestmark = pytest.mark.unit


def play(sync_end: float, backup_end: float, received: int = 15_000_000, util: float = 0.6) -> dict:
    """One play's result as metrolab.harness.runner.tasks.play reports it."""
    return {"slot_s": 1.0, "capacity_bps": 50e6, "utilization": util,
            "tasks": [{"name": "sync", "committed": True, "reason": "", "window_s": [0.0, 2.0], "rate_bps": 15e6,
                       "bytes": 3_000_000, "received": 3_000_000, "start_s": 0.13, "end_s": sync_end,
                       "predicted_end_s": 1.53, "met": sync_end <= 2.0},
                      {"name": "backup", "committed": True, "reason": "", "window_s": [4.0, 8.0], "rate_bps": 35e6,
                       "bytes": 15_000_000, "received": received, "start_s": 4.12, "end_s": backup_end,
                       "predicted_end_s": 7.75, "met": backup_end <= 8.0 and received == 15_000_000},
                      {"name": "bulk", "committed": False, "reason": "no window before its deadline",
                       "window_s": None, "rate_bps": None, "bytes": 30_000_000, "received": 0, "start_s": None,
                       "end_s": None, "predicted_end_s": None, "met": None}],
            "slots": [{"start_s": 0.0, "utilization": util, "model": 0.8},
                      {"start_s": 1.0, "utilization": util - 0.1, "model": 0.5}]}


def test_ends_well_inside_their_windows_pass_with_an_interval_and_the_model_beside():
    res = summarize([play(1.57, 7.77), play(1.56, 7.74), play(1.58, 7.76)])
    sync, backup, bulk = res["tasks"]
    assert res["status"] == "pass" and res["repetitions"] == 3 and (res["committed"], res["refused"]) == (2, 1)
    assert sync["verdict"] == backup["verdict"] == "pass", (sync, backup)
    assert sync["end_s"]["low"] < 1.57 < sync["end_s"]["high"] < 2.0 and sync["met"] == 3
    assert sync["model_error_s"]["estimate"] == pytest.approx(0.04) and sync["predicted_end_s"] == pytest.approx(1.53)
    assert not bulk["committed"] and "verdict" not in bulk and bulk["reason"].startswith("no window")
    assert res["slots"][1]["model"] == 0.5 and res["slots"][1]["error"] == pytest.approx(0.0)
    assert res["utilization"]["n"] == 3


def test_every_play_met_but_the_spread_reaches_past_the_window_is_inconclusive():
    res = summarize([play(1.5, 7.70), play(1.5, 7.99), play(1.5, 7.85)])
    backup = res["tasks"][1]
    assert backup["met"] == 3 and backup["verdict"] == "inconclusive", backup
    assert "reaches past its end 8 s" in backup["why"] and res["status"] == "inconclusive"
    assert backup["end_s"]["high"] > 8.0


def test_one_play_past_its_window_fails_even_when_the_mean_is_inside_and_lost_bytes_fail():
    # what the guest did (2026-11-30): 4 plays ended 7.70-7.81 s, one started late and ended 8.044
    res = summarize([play(1.5, 7.808), play(1.5, 7.703), play(1.5, 8.044), play(1.5, 7.793), play(1.5, 7.755)])
    backup = res["tasks"][1]
    assert backup["end_s"]["high"] < 8.0 and backup["met"] == 4, backup  # the mean is well inside ...
    assert backup["verdict"] == "fail" and "1 of 5 plays ended after" in backup["why"], backup  # ... a play is not
    assert summarize([play(1.5, 8.4), play(1.5, 8.5), play(1.5, 8.45)])["tasks"][1]["verdict"] == "fail"
    res = summarize([play(1.5, 7.7), play(1.5, 7.7, received=14_000_000)])
    assert res["status"] == "fail" and "1 of 2 plays received 14000000" in res["tasks"][1]["why"]
    assert task_verdict([1.0], [5], 5, 2.0)[0] == "inconclusive"  # one play: no interval


def test_nothing_to_summarize_is_an_error():
    with pytest.raises(ValueError):
        summarize([])
