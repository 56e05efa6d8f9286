"""Results as artifacts (harness/whitepaper/bundle.py): a whitepaper bundle keeps its record, the
docs page is drawn from it and names it, and docs/whitepaper.md is exactly that drawing of the
bundle stored in docs/results (no figure typed by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import metrolab
from metrolab.harness.errors import SpecError
from metrolab.harness.whitepaper import bundle

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def _bundle(tmp_path: Path) -> Path:
    b = tmp_path / "whitepaper-20261204-1200"
    run = b / "distance"
    run.mkdir(parents=True)
    for name in ("meta.json", "scenario.json", "results.jsonl", "report.html", "results.parquet"):
        (run / name).write_text("{}\n" if name.endswith("json") else "x")
    (run / "logs").mkdir()
    (run / "meta.json").write_text(json.dumps({"seed": 7, "design": {"describe": "sequential: ..."}}))
    (b / "bundle.json").write_text(json.dumps({"name": b.name, "commit": "abc123", "dirty": False, "quick": True,
                                               "started": "t0", "machine": {"cpu": "X", "cores": 2}}))
    claim = {"id": "distance", "section": "2.3.1 (2)", "claim": "< 5 % at 100-500 km", "paper": "< 5 %",
             "scenario": "allreduce-distance", "tier": "guest", "verdict": "holds", "why": "all 3 results pass",
             "measured": [{"label": "500 km", "metric": "efficiency_degradation", "value": 0.029, "low": 0.008,
                           "high": 0.049, "verdict": "pass", "why": "meets", "model": 0.026}],
             "full_scale": "", "preserves": "delays", "not_preserved": "NIC latency", "run_dir": str(run),
             "error": None, "criteria": []}
    (b / "claims.json").write_text(json.dumps({"quick": True, "claims": [claim]}))
    bundle.finish(b, [claim])
    return b


def test_a_bundle_records_seeds_and_machine_and_the_page_names_it(tmp_path):
    b = _bundle(tmp_path)
    meta = json.loads((b / "bundle.json").read_text())
    assert meta["runs"]["distance"]["seed"] == 7 and meta["finished"]
    page = bundle.docs_page(b, "docs/results/whitepaper-20261204-1200")
    assert "Bundle `docs/results/whitepaper-20261204-1200`" in page and "commit `abc123`" in page
    assert "0.029 [0.008, 0.049] at 500 km" in page and "**holds**" in page and "do not edit" in page


def test_the_stored_record_keeps_rows_and_metadata_not_what_is_drawn_from_them(tmp_path):
    stored = bundle.store(_bundle(tmp_path), tmp_path / "docs-results")
    assert sorted(p.name for p in (stored / "distance").iterdir()) == ["meta.json", "results.jsonl", "scenario.json"]
    assert json.loads((stored / "claims.json").read_text())["claims"][0]["run_dir"] == "distance"
    page = tmp_path / "page.md"
    res = metrolab.whitepaper_docs(stored, page)
    assert Path(res["page"]).read_text() == bundle.docs_page(stored, str(stored))
    with pytest.raises(SpecError, match="not a bundle"):
        metrolab.whitepaper_docs(tmp_path, page)


def test_docs_whitepaper_is_drawn_from_the_bundle_it_names():
    page = (ROOT / "docs" / "whitepaper.md").read_text()
    named = re.search(r"^## Bundle `([^`]+)`", page, re.M)
    assert named, "docs/whitepaper.md names no bundle: draw it with `metrolab report BUNDLE --docs`"
    stored = ROOT / named.group(1)
    assert (stored / "bundle.json").exists() and (stored / "claims.json").exists(), stored
    assert page == bundle.docs_page(stored, named.group(1)), "docs/whitepaper.md differs from its bundle's drawing"
