"""The console's verdict: its quality lines are the report's, from the run's own meta.json."""

from __future__ import annotations

import pytest

from metrolab.api import RunResult
from metrolab.harness.cli.run import print_verdict
from metrolab.harness.scenario.verdict import evaluate, summarize
from metrolab.reports.build import quality_lines

pytestmark = pytest.mark.unit


def _verdict():
    rows = []
    for b in range(3):
        for key, base, d, t in (("b", True, 0.0, 1.0), ("far", False, 500.0, 1.1 + 0.01 * b)):
            tcp = {"tcp_retrans_segs": 4 * b if not base else 1, "tcp_timeouts": b % 2 if not base else 0,
                   "tcp_loss_probes": 1, "wan_drops": 3 * b if not base else 0}
            rows.append({"workload": "w", "point_key": key, "label": key, "baseline": base, "distance_km": d,
                         "loss": 0.0, "block": b, "order": 2 * b, "status": "ok", "step_time_s": t, **tcp})
    return evaluate(summarize(rows, ("tcp_retrans_segs", "tcp_timeouts", "tcp_loss_probes", "wan_drops")), [])


def test_the_console_says_the_reports_quality_lines(tmp_path, capsys):
    meta = {"seed": 7, "headroom": {"w": {"cpu_load": 0.93, "max_cpu_load": 0.8, "cpu_bound": True,
                                          "utilization": 1.3, "overloaded": True}}}
    verdict = _verdict()
    print_verdict(RunResult(tmp_path, verdict.status, verdict, meta=meta), as_json=False)
    out = capsys.readouterr().out
    lines = quality_lines(meta, verdict)
    assert any("CPU-BOUND" in x for x in lines) and any("OVERLOADED" in x for x in lines), lines
    # the TCP stacks' recoveries summed over the blocks, where any segment was resent; where nothing
    # was dropped, the resends were spurious
    assert [x for x in lines if x.startswith("TCP recovery")] == [
        "TCP recovery: w b, 3 blocks: segments resent 3, retransmission timeouts 0, tail-loss probes 3; the swept "
        "links dropped nothing: spurious, or lost elsewhere",
        "TCP recovery: w far, 3 blocks: segments resent 12, retransmission timeouts 1, tail-loss probes 3"], lines
    printed = [x.removeprefix("quality: ") for x in out.splitlines() if x.startswith("quality: ")]
    assert printed == lines, out

