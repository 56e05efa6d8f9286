"""The white paper's claims judged from their scenarios' results (pure: no lab)."""

import pytest

from harness.errors import SpecError
from harness.whitepaper.claims import CLAIMS, ClaimRow, by_id, gbn_verdict, markdown, verdict_of

pytestmark = pytest.mark.unit


def test_every_claim_names_a_builtin_scenario_and_criteria_it_has():
    from harness.scenario.spec import load_scenario
    for c in CLAIMS:
        if c.scenario == "rdma-gbn":
            assert not c.criteria
            continue
        acceptance = {a.strip() for a in load_scenario(c.scenario).spec.acceptance}
        assert c.criteria and set(c.criteria) <= acceptance, (c.id, c.criteria, acceptance)
    assert len({c.id for c in CLAIMS}) == len(CLAIMS)


def test_a_claim_holds_only_when_every_point_passes():
    assert verdict_of([{"verdict": "pass"}, {"verdict": "pass"}])[0] == "holds"
    assert verdict_of([{"verdict": "pass"}, {"verdict": "fail"}])[0] == "does not hold"
    assert verdict_of([{"verdict": "pass"}, {"verdict": "inconclusive"}])[0] == "inconclusive"
    verdict, why = verdict_of([])
    assert verdict == "inconclusive" and "nothing measured" in why


def _gbn(within_1pct=True, full=0.23, width=0.2):
    return [{"distance_km": d, "loss": p, "within": True if p == 0 else (within_1pct if p == 0.01 else True),
             "efficiency": 0.5, "eff_low": 0.5 - width / 2, "eff_high": 0.5 + width / 2,
             "full_scale_efficiency": 1.0 if p == 0 else (full if d >= 100 else 0.7)}
            for d in (0.0, 100.0) for p in (0.0, 1e-3, 1e-2)]


def test_go_back_n_holds_by_a_model_the_lab_agrees_with():
    assert gbn_verdict(_gbn())[0] == "holds"
    assert gbn_verdict(_gbn(within_1pct=False))[0] == "inconclusive"   # the model missed the lab somewhere
    assert gbn_verdict(_gbn(full=0.8))[0] == "does not hold"
    assert gbn_verdict([r for r in _gbn() if r["loss"] == 0])[0] == "inconclusive"
    # two blocks leave intervals that hold any model: they validate nothing
    verdict, why = gbn_verdict(_gbn(width=4.0))
    assert verdict == "inconclusive" and "more blocks" in why


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
    err = ClaimRow(by_id(["gbn"])[0], "inconclusive", "its scenario did not run", error="GuestRunError: boom")
    md = markdown([row, err], quick=True)
    assert "0.85 [0.8, 0.88] at 0 km, planned, flows=8 (+1 more)" in md          # the failing point decides
    assert "**does not hold**" in md and "error: GuestRunError: boom" in md
    assert c.preserves in md and c.not_preserved in md
