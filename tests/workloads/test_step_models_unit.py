"""The workloads' step-time models and the path a point gives them (pure, no lab): physics first
(longer or lossier never faster), then the figures a hand calculation gives."""

from __future__ import annotations

import pytest

from metrolab.harness.scenario.points import Point
from metrolab.harness.scenario.predict import make_predictor, path_links, point_path
from metrolab.harness.scenario.spec import load_scenario
from metrolab.netem.models import fiber_delay_s
from metrolab.workloads import models as wm

pytestmark = pytest.mark.unit

WAN = wm.Path(rate_bps=200e6, one_way_s=0.0)


def test_tcp_goodput_and_transfer():
    mss = 1500 - wm.TCP_HEADERS
    assert wm.goodput_bps(WAN) == pytest.approx(200e6 * mss / 1514)
    # 2 MiB at ~191 Mbit/s: ~88 ms, plus the one-way delay
    far = wm.Path(200e6, fiber_delay_s(500))
    assert wm.transfer_s(2 << 20, far) == pytest.approx(fiber_delay_s(500) + (2 << 20) * 8 / wm.goodput_bps(far))
    # under loss Mathis caps a long path
    lossy = wm.Path(200e6, 2.45e-3, loss=1e-3)
    assert wm.goodput_bps(lossy) == pytest.approx(1.22 * (1500 - wm.TCP_HEADERS) * 8 / (4.9e-3 * 1e-3 ** 0.5))


def test_slow_start_after_idle_costs_round_trips_on_long_paths():
    near, far = wm.Path(200e6, 0.49e-3), wm.Path(200e6, 2.45e-3)
    assert wm.slow_start_s(500e3, far) > wm.slow_start_s(500e3, near) > 0
    # a window that starts at 10 segments covers a 4.9 ms x 200 Mbit/s BDP (122 kB) after 3 doublings
    assert 2 * far.rtt_s < wm.slow_start_s(1e6, far) < 4 * far.rtt_s
    assert wm.slow_start_s(1e6, wm.Path(200e6, 0.0)) == 0


def test_roce_go_back_n_under_loss():
    clean, lossy = wm.Path(200e6, 2.45e-3), wm.Path(200e6, 2.45e-3, loss=1e-3)
    assert wm.goodput_bps(lossy, "roce") < wm.goodput_bps(clean, "roce")
    assert wm.goodput_bps(clean, "roce") == pytest.approx(200e6 * 1024 / 1082)


def test_collective_ring_and_hierarchical():
    flat = wm.collective_s("all_reduce", 4 << 20, WAN, ranks=4, sites=2)
    hier = wm.collective_s("all_reduce", 4 << 20, WAN, ranks=4, sites=2, algo="hierarchical")
    # flat: 6 steps of S/4; hierarchical: 2 leader steps of S/2
    assert flat == pytest.approx(6 * (1 << 20) * 8 / wm.goodput_bps(WAN))
    assert hier == pytest.approx(2 * (2 << 20) * 8 / wm.goodput_bps(WAN))
    assert wm.collective_s("all_reduce", 1e6, WAN, ranks=2, sites=1, overhead_s=0.01) == 0.01


def test_training_step_hides_communication_behind_compute():
    shape = wm.TrainingShape(compute_s=0.42, micro_batches=1, layers=32, bucket_bytes=(845e3,) * 16,
                             bucket_layers=(2,) * 16, ranks=2, sites=2)
    fast = wm.training_step_s(shape, wm.Path(2e9, 0.0))
    last = wm.collective_s("all_reduce", 845e3, wm.Path(2e9, 0.0), ranks=2, sites=2)
    assert fast == pytest.approx(0.42 + last)  # every bucket hidden but the last one's reduction
    slow = wm.training_step_s(shape, wm.Path(200e6, 0.0))
    assert slow > 16 * 2 * 422e3 * 8 / 200e6  # rate-bound: the reductions take longer than backward


def test_control_handshakes_hide_behind_the_reductions_before_them():
    import dataclasses
    wan = wm.Path(200e6, 0.0005)  # 100 km
    shape = wm.TrainingShape(compute_s=0.01, micro_batches=1, layers=8, bucket_bytes=(1e6,) * 4,
                             bucket_layers=(2,) * 4, ranks=4, sites=2, algo="hierarchical")
    plain = wm.training_step_s(shape, wan)
    with_control = wm.training_step_s(dataclasses.replace(shape, control=True), wan)
    # each handshake runs beside the reduction before it: only the first one delays the chain
    assert with_control == pytest.approx(plain + wan.rtt_s)
    one_site = dataclasses.replace(shape, sites=1, control=True)
    assert wm.training_step_s(one_site, wan) == wm.training_step_s(dataclasses.replace(one_site, control=False), wan)


@pytest.mark.parametrize("model", ["collective", "training", "disaggregated", "pd", "elephants"])
def test_models_never_get_faster_with_distance_or_loss(model):
    def step(path: wm.Path) -> float:
        if model == "collective":
            return wm.collective_s("all_reduce", 4 << 20, path, ranks=2, sites=2, overhead_s=0.01)
        if model == "training":
            shape = wm.TrainingShape(0.1, 1, 8, (1e6,) * 4, (2,) * 4, 2, 2)
            return wm.training_step_s(shape, path, 0.001)
        if model == "disaggregated":
            return wm.disaggregated_step_s(0.05, 256e3, 2, 2, path, "roce", 0.002)
        if model == "pd":
            return wm.pd_request_s(537e3, path, "tcp", 2.0, 0.3)
        return wm.elephants_step_s(24e6, 200e6, 0.8, path)
    steps = [step(wm.Path(200e6, fiber_delay_s(d), loss)) for loss in (0, 1e-4, 1e-3) for d in (0, 100, 250, 500)]
    by_loss = [steps[i:i + 4] for i in (0, 4, 8)]
    for row in by_loss:
        assert row == sorted(row)
    for i in range(4):
        assert by_loss[0][i] <= by_loss[1][i] <= by_loss[2][i]


def test_fit_overhead_reproduces_the_baseline():
    def model(o):
        return wm.collective_s("all_reduce", 4 << 20, WAN, ranks=2, sites=2, overhead_s=o)
    o = wm.fit_overhead(model, 0.2)
    assert wm.apply_overhead(model, o) == pytest.approx(0.2, rel=1e-6)
    # a baseline faster than the model (TBF's burst) gives a negative, additive overhead
    o = wm.fit_overhead(model, 0.05)
    assert o < 0 and wm.apply_overhead(model, o) == pytest.approx(0.05)


def test_point_path_on_the_default_lab_and_a_prediction():
    scn = load_scenario("allreduce-distance")
    topo = scn.topology
    links = path_links(topo, "a1", "b1")
    assert [lk.name for lk in links][1:-1][1] in ("wan-ab-1", "wan-ab-2")
    swept = {"wan-ab-1", "wan-ab-2"}
    base = point_path(topo, links, Point(baseline=True), swept)
    far = point_path(topo, links, Point(distance_km=500.0), swept)
    assert base.rate_bps == 200e6 and base.one_way_s == 0
    assert far.one_way_s == pytest.approx(fiber_delay_s(500, topo.group_index))
    conv = point_path(topo, links, Point(distance_km=100.0, convergence=4.0), swept)
    assert conv.rate_bps == pytest.approx(50e6)
    w = scn.spec.workloads[0]
    pred = make_predictor(scn, w, ["a1", "b1"], dict(w.params), sorted(swept), 1.0)
    pred.fit(Point(baseline=True), 0.190)
    assert pred.predict(Point(baseline=True)) == pytest.approx(0.190)
    d500 = pred.predict(Point(distance_km=500.0))
    # two ring steps, each one more one-way delay: +2 x 2.45 ms
    assert d500 - 0.190 == pytest.approx(2 * fiber_delay_s(500, topo.group_index), rel=1e-6)


@pytest.mark.parametrize("name", ["allreduce-distance", "training-step", "disaggregated-training",
                                  "multi-aidc-training", "pd-inference", "load-balancing", "load-balancing-roce", "flow-control",
                                  "sample-upload", "sample-upload-roce",
                                  "rate-convergence"])
def test_every_builtin_workload_has_a_model_that_obeys_physics(name):
    """Fitted on a made-up baseline, every point of every built-in scenario gets a finite prediction,
    and at equal other fields a longer distance never predicts a shorter step."""
    from metrolab.harness.runner.run import swept_links
    from metrolab.harness.scenario.points import baselines, grid
    from metrolab.workloads.registry import WORKLOADS
    scn = load_scenario(name)
    points = baselines(scn.spec.sweep) + grid(scn.spec.sweep, scn.spec.scale)
    for w in scn.spec.workloads:
        kind = WORKLOADS[w.kind]
        hosts = kind.hosts(w, scn.topology)
        for base in (p for p in points if p.baseline):
            params = kind.resolve({**w.params, **dict(base.params)}, hosts, scn.topology)
            pred = make_predictor(scn, w, hosts, params, swept_links(scn), scn.spec.scale)
            pred.fit(base, 1.0, {"compute_s": 0.42, "kv_bytes_per_request": 536871, "stall_s": 0.1})
            mine = [p for p in points if p.params == base.params and not p.baseline]
            got = {p: pred.predict(p) for p in mine}
            assert all(0 < v < 1e4 for v in got.values()), got
            for a in mine:
                for b in mine:
                    same = (a.loss, a.rate_bps, a.convergence, a.jitter_s, a.policy) == \
                        (b.loss, b.rate_bps, b.convergence, b.jitter_s, b.policy)
                    if same and b.distance_km > a.distance_km:
                        assert got[b] >= got[a] - 1e-12, (w.name or w.kind, a.label(), b.label())


def test_rdma_elephants_start_at_line_rate_and_pay_rocev2_headers():
    from metrolab.workloads import models as wm
    path = wm.Path(rate_bps=20e6, one_way_s=0.0005)
    total = 4 * 512 * 1024
    roce = wm.elephants_step_s(total, 40e6, 1.0, path, transport="roce")
    # 2 MiB at 40 Mbit/s x 1024/1082 of payload, the data's way and the last ACK's way back: no slow start
    assert roce == pytest.approx(total * 8 / (40e6 * 1024 / 1082) + 2 * 0.0005, rel=1e-9)
    # one path of two: twice the time
    assert wm.elephants_step_s(total, 40e6, 0.5, path, transport="roce") == pytest.approx(2 * roce, rel=0.01)


def test_elephants_named_bottleneck_caps_the_paths_and_hides_their_spread():
    """Four elephants over two 100 Mbit/s paths into a 50 Mbit/s receiver port the scenario names
    (`capacity`): the port, not the spread over the paths, sets the step, so the L3 hash (one path)
    and planned paths predict the baseline's step; without the named port the L3 hash halves the
    rate (its step ~1.9x) — the scenario's own numbers, measured: both ~0 % (docs: the sandbox)."""
    from pathlib import Path

    from metrolab.harness.runner.run import swept_links
    from metrolab.workloads.registry import WORKLOADS
    scn = load_scenario(str(Path(__file__).parents[1] / "harness" / "testbed" / "load-balancing-host.yaml"))
    w = scn.spec.workloads[0]
    hosts = WORKLOADS[w.kind].hosts(w, scn.topology)
    params = WORKLOADS[w.kind].resolve(dict(w.params), hosts, scn.topology)
    pred = make_predictor(scn, w, hosts, params, swept_links(scn), scn.spec.scale)
    pred.fit(Point(baseline=True), 0.70)
    l3, planned = pred.predict(Point(policy="ecmp-l3")), pred.predict(Point(policy="planned"))
    assert l3 == pytest.approx(0.70, rel=1e-6) and planned == pytest.approx(0.70, rel=1e-6)
    free = make_predictor(scn, w.model_copy(update={"params": {k: v for k, v in w.params.items() if k != "capacity"}}),
                          hosts, params, swept_links(scn), scn.spec.scale)
    free.fit(Point(baseline=True), 0.70)
    assert free.predict(Point(policy="ecmp-l3")) > 1.8 * free.predict(Point(policy="planned"))
