"""The HTML report as a person reads it, in a real headless Chromium: a run of the white paper's
bundle (docs/results) rebuilt, laid out within the window, no raw field names, fractions as
percentages with their interval in one cell, the BMWG KPIs in a table of their own."""

from __future__ import annotations

import re
import shutil

import pytest

from metrolab.reports.build import build_report
from tests.support.imports import ROOT

pytestmark = pytest.mark.unit
BUNDLE = ROOT / "docs" / "results" / "whitepaper-quick-20261207"


@pytest.mark.parametrize("claim", ["distance", "load-balancing"])
def test_the_report_fits_the_window_and_reads_in_units(tmp_path, claim):
    from playwright.sync_api import sync_playwright  # deferred: a browser only where a test renders a page
    run_dir = tmp_path / claim
    shutil.copytree(BUNDLE / claim, run_dir)
    html = build_report(run_dir)["files"]["html"]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            for width in (1024, 1280):  # a laptop's window and a desktop's
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(f"file://{html}")
                # nothing runs off the page: the widest element fits the window
                assert page.evaluate("document.documentElement.scrollWidth") <= width, (claim, width)
                text = page.inner_text("body")
                headers = page.eval_on_selector_all("th", "els => els.map(e => e.innerText)")
        finally:
            browser.close()
    assert not {"efficiency_degradation", "ci_low", "ci_high", "step_time_s"} & set(headers), headers
    assert "degradation (%) [95 % CI]" in headers and "step time (ms)" in headers, headers
    assert not re.findall(r"\b\d\.\d{6,}", text)  # no fractions with six digits (0.004613)
    assert re.search(r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", text)  # "+0.46 [-0.52, +1.43]"
    # the BMWG KPIs grouped in their own table, the JCT ratio with its interval (docs/kpis.md)
    assert "JCT ratio [95 % CI]" in headers and re.search(r"\b1\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", text), headers
    if claim == "load-balancing":  # the KPIs its rows counted
        assert "Packet Drop Rate (%)" in headers and any(h.startswith("Jain Fairness Index") for h in headers), headers
