"""The white paper's claims judged from their scenarios' results (pure: no lab)."""

import pytest

from metrolab.harness.errors import SpecError
from metrolab.harness.whitepaper.claims import (
    CLAIMS,
    ClaimRow,
    by_id,
    gbn_verdict,
    markdown,
    missing_values,
    verdict_of,
)

pytestmark = pytest.mark.unit


def test_every_claim_names_a_builtin_scenario_and_criteria_it_has():
    from metrolab.harness.scenario.spec import load_scenario
    for c in CLAIMS:
        if c.scenario == "rdma-gbn":
            assert not c.criteria
            continue
        acceptance = {a.strip() for a in load_scenario(c.scenario).spec.acceptance}
        assert c.criteria and set(c.criteria) <= acceptance, (c.id, c.criteria, acceptance)
    assert len({c.id for c in CLAIMS}) == len(CLAIMS)


def test_a_claim_holds_only_when_every_point_passes_and_the_run_failed_nothing():
    assert verdict_of([{"verdict": "pass"}, {"verdict": "pass"}])[0] == "holds"
    assert verdict_of([{"verdict": "pass"}, {"verdict": "fail"}])[0] == "does not hold"
    assert verdict_of([{"verdict": "pass"}, {"verdict": "inconclusive"}])[0] == "inconclusive"
    verdict, why = verdict_of([])
    assert verdict == "inconclusive" and "nothing measured" in why
    # ad1b757 read criterion results only: a claim held while its run had a crashed point
    verdict, why = verdict_of([{"verdict": "pass"}, {"verdict": "pass"}], failed=["500 km"])
    assert verdict == "inconclusive" and "failed points (500 km)" in why


def _gbn(eff: float, width: float = 0.2, n: int = 8, failed: int = 0, full: float = 0.23) -> list[dict]:
    import math
    rows = []
    for d in (0.0, 100.0, 500.0):
        for p in (0.0, 1e-3, 1e-2):
            e = 1.0 if p == 0 else eff
            # ln(lossless / lossy time) per block around -ln(e), spread so the 95 % interval is about `width`
            x = -math.log(e)
            sd = width / e / 2 / 2.36 * math.sqrt(n)
            ratios = [x + sd * (1 if i % 2 else -1) for i in range(n)]
            rows.append({"distance_km": d, "loss": p, "efficiency": e, "eff_low": e - width / 2,
                         "eff_high": e + width / 2, "within": True, "failed": failed if p else 0,
                         "log_ratios": ratios if p else None, "model_efficiency": e,
                         "full_scale_efficiency": 1.0 if p == 0 else full})
    return rows


def test_go_back_n_holds_only_from_a_measurement_never_from_the_model():
    """ad1b757 let the claim hold when the full-scale model gave <= 0.5 while the lab measured
    0.79-0.88 at 0.1 % loss: the lab's interval decides, the model stands beside it."""
    assert gbn_verdict(_gbn(0.85, full=0.23))[0] == "does not hold"
    assert gbn_verdict(_gbn(0.35, width=0.1, full=0.9))[0] == "holds"
    assert gbn_verdict(_gbn(0.55, width=0.4))[0] == "inconclusive"
    verdict, why = gbn_verdict(_gbn(0.35, failed=1))
    assert verdict == "does not hold" and "failed" in why
    assert gbn_verdict([r for r in _gbn(0.3) if r["loss"] != 1e-3])[0] == "inconclusive"


def test_flow_level_flow_control_is_judged_on_the_backpressure_emulation():
    """§4.3.2 is about flow-level flow control: ad1b757 judged it on flow-control (TCP queue policies);
    it is judged on flow-control-roce at the backpressure point, port-level pause beside it."""
    c = by_id(["flow-control"])[0]
    assert c.scenario == "flow-control-roce" and c.decides({"policy": "backpressure"})
    assert not c.decides({"policy": "pause"}) and not c.decides({"policy": "deep-buffer"})
    assert any(x.startswith("congested_loss") for x in c.criteria)
    assert any(x.startswith("victim_efficiency") for x in c.criteria)


def test_a_claim_over_a_range_does_not_hold_from_part_of_it():
    """"< 5 % at 100-500 km" from the main job's --quick sweep (0 and 100 km) held at 100 km alone (a
    --quick bundle, 2026-12-04): every distance it names must have been measured."""
    (distance,) = by_id(["distance"])
    quick = [{"distance_km": 100.0, "loss": 0.0}]
    assert missing_values(distance, quick) == ["distance_km 250", "distance_km 500"]
    verdict, why = verdict_of([{"verdict": "pass"}], [], missing_values(distance, quick))
    assert verdict == "inconclusive" and "250" in why and "500" in why
    full = [{"distance_km": km, "loss": 0.0} for km in (100.0, 250.0, 500.0)]
    assert missing_values(distance, full) == []
    assert verdict_of([{"verdict": "pass"}] * 3, [], missing_values(distance, full))[0] == "holds"
    assert verdict_of([{"verdict": "fail"}], [], missing_values(distance, quick))[0] == "does not hold"


def test_unknown_claims_are_named():
    assert [c.id for c in by_id(["gbn", "upload"])] == ["gbn", "upload"]
    with pytest.raises(SpecError, match="nope"):
        by_id(["upload", "nope"])


def test_the_summary_shows_the_deciding_point_and_what_scale_keeps():
    c = by_id(["upload"])[0]
    row = ClaimRow(c, "does not hold", "1 of 2 points fail",
                   [{"label": "0 km, planned, flows=4", "metric": "link_util_min", "value": 0.95, "low": 0.93,
                     "high": 0.97, "verdict": "pass", "model": None},
                    {"label": "0 km, planned, flows=8", "metric": "link_util_min", "value": 0.85, "low": 0.8,
                     "high": 0.88, "verdict": "fail", "model": None}])
    err = ClaimRow(by_id(["gbn"])[0], "inconclusive", "its scenario did not run", error="GuestRunError: boom",
                   full_scale="0.1 %: 0.23 at 100 km")
    md = markdown([row, err], quick=True)
    assert "model: 0.1 %: 0.23 at 100 km" in md  # a full-scale figure is labelled a model
    assert "0.85 [0.8, 0.88] at 0 km, planned, flows=8 (+1 more)" in md          # the failing point decides
    assert "**does not hold**" in md and "error: GuestRunError: boom" in md
    assert c.preserves in md and c.not_preserved in md
