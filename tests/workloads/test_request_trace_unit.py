"""Request traces in the Azure LLM inference layout, without a lab: the window read, its errors
named by file, row and column, the shipped trace is what its generator makes, and a PD-inference
workload that names one is validated against it."""

from __future__ import annotations

from pathlib import Path

import pytest

from metrolab.harness.errors import SpecError
from metrolab.harness.scenario.spec import load_scenario, scenario_from_data
from metrolab.workloads.request_trace import read_trace, synthetic

pytestmark = pytest.mark.unit

SHIPPED = Path(__file__).resolve().parents[2] / "scenarios" / "traces" / "azure-llm-synthetic.csv"
AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,4808,10
2023-11-16 18:15:50.9951690,3180,8
2023-11-16 18:15:51.4972470,110,27
2023-11-16 18:15:52.5086360,7433,14
"""


def test_a_window_of_the_azure_layout_is_replayed_from_its_first_arrival(tmp_path):
    f = tmp_path / "code.csv"
    f.write_text(AZURE)
    reqs = read_trace(f, start=1, count=2, speed=2.0)
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(3180, 8), (110, 27)]
    assert reqs[0].arrival_s == 0 and reqs[1].arrival_s == pytest.approx((51.4972470 - 50.9951690) / 2)
    secs = tmp_path / "secs.csv"
    secs.write_text("TIMESTAMP,ContextTokens,GeneratedTokens,Extra\n10,5,1,x\n12.5,6,2,y\n")
    assert [r.arrival_s for r in read_trace(secs)] == [0.0, 2.5]


@pytest.mark.parametrize(("text", "kw", "where", "says"), [
    ("TIMESTAMP,ContextTokens\n1,2\n", {}, "header", "missing: GeneratedTokens"),
    (AZURE.replace(",3180,", ",lots,"), {}, "row 2.ContextTokens", "not a number"),
    (AZURE.replace("2023-11-16 18:15:50.9951690", "yesterday"), {}, "row 2.TIMESTAMP", "not a time"),
    (AZURE.replace(",110,27", ",110,0"), {}, "row 3", ">= 1"),
    (AZURE, {"start": 2, "count": 3}, "", "rows 3 to 5 were asked for"),
    (AZURE.replace("18:15:51.4972470", "18:15:40.0"), {}, "row 3.TIMESTAMP", "back in time"),
])
def test_a_bad_trace_is_named_by_file_row_and_column(tmp_path, text, kw, where, says):
    f = tmp_path / "t.csv"
    f.write_text(text)
    with pytest.raises(SpecError) as exc:
        read_trace(f, **kw)
    assert exc.value.file == str(f) and exc.value.path == where and says in exc.value.message, exc.value


def test_the_shipped_trace_is_its_generators_and_fits_the_tiny_model():
    assert SHIPPED.read_text() == synthetic()
    reqs = read_trace(SHIPPED)
    assert len(reqs) == 64 and max(r.prompt_tokens + r.output_tokens for r in reqs) <= 512
    rate = (len(reqs) - 1) / reqs[-1].arrival_s
    assert 1.5 < rate < 2.7, rate  # Poisson at 2/s over 63 gaps


def _pd(params: dict) -> dict:
    return {"name": "t", "topology": "metro-rdma", "sweep": {"links": ["wan-ab-1"], "distance_km": [100]},
            "workloads": [{"kind": "pd-inference", "hosts": ["a1", "b1"], "params": params}]}


def test_a_pd_workload_is_checked_against_its_trace(tmp_path):
    long = tmp_path / "long.csv"
    long.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,100,4\n1,500,20\n")
    cases = [({"request_trace": str(SHIPPED), "request_rate": 2}, "params.request_rate", "the request trace gives"),
             ({"request_trace": str(long), "requests": 2}, "params.request_trace", "exceeds the tiny model's 512"),
             ({"request_trace": str(long), "requests": 3}, "params.request_trace", "rows 1 to 3 were asked for"),
             ({"request_trace": "nowhere.csv"}, "params.request_trace", "cannot read the request trace")]
    for params, where, says in cases:
        with pytest.raises(SpecError) as exc:
            scenario_from_data(_pd(params), str(tmp_path / "t.yaml"), base_dir=tmp_path)
        assert exc.value.path == f"workloads[0].{where}" and says in exc.value.message, (params, exc.value)
    # a profile model takes any length; the path is the scenario folder's
    ok = scenario_from_data(_pd({"request_trace": "long.csv", "requests": 2, "model": "llama2-7b"}), "t.yaml",
                            base_dir=tmp_path)
    assert ok.spec.workloads[0].params["request_trace"] == str(long)


def test_the_builtin_trace_scenario_finds_the_shipped_trace():
    scn = load_scenario("pd-inference-trace", quick=True)
    assert {w.params["request_trace"] for w in scn.spec.workloads} == {str(SHIPPED)}
