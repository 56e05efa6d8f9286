"""Benchmarks: figures measured in one invocation, reported with their targets."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from metrolab.harness import capabilities, settings
from metrolab.harness.kernel.launch import run_ranks
from metrolab.harness.kernel.sh import die_with_parent
from metrolab.harness.kernel.zygote import prestart
from metrolab.harness.lab.netns import NetnsLab
from metrolab.harness.lab.select import needs
from metrolab.harness.runner.results import ResultStore
from metrolab.harness.runner.run import run_scenario
from metrolab.harness.scenario.spec import load_scenario, scenario_from_data
from metrolab.harness.scenario.stats import t_interval
from metrolab.harness.spec.loader import topology_from_data
from metrolab.harness.vm.kernel import prepare_kernel
from metrolab.harness.vm.qemu import Guest
from metrolab.netem.calibrate import _cache_file
from metrolab.netem.models import fiber_delay_s
from metrolab.netem.probe import concurrent_rtts, rtt_floor
from metrolab.workloads.collectives import Sweep


def grid_topology(sites: int = 4, hosts: int = 4, wan_rate: str = "1gbit") -> dict:
    """A sites x hosts lab: a leaf per site, a full mesh of WAN links between the leaves."""
    data: dict[str, Any] = {"name": f"bench-{sites}x{hosts}", "sites": [], "links": []}
    for i in range(sites):
        data["sites"].append({"name": f"s{i}", "kind": "aidc", "subnet": f"10.{i + 1}.0.0/24", "hosts": hosts,
                              "switches": [f"leaf{i}"], "access": {"switch": f"leaf{i}", "rate": "10gbit"}})
    for i in range(sites):
        for j in range(i + 1, sites):
            data["links"].append({"a": f"leaf{i}", "b": f"leaf{j}", "rate": wan_rate})
    return data


def bench_lab(repeat: int = 5, sites: int = 4, hosts: int = 4) -> dict:
    capabilities.probe()  # probed once per process, not part of a build
    topo = topology_from_data(grid_topology(sites, hosts), "<bench>")
    builds, teardowns = [], []
    for _ in range(repeat):
        lab = NetnsLab(topo)
        t0 = time.perf_counter()
        lab.up()
        t1 = time.perf_counter()
        lab.down()
        t2 = time.perf_counter()
        builds.append(t1 - t0)
        teardowns.append(t2 - t1)
    return {"build_s": statistics.median(builds), "teardown_s": statistics.median(teardowns),
            "namespaces": len(topo.nodes), "links": len(topo.links), "repeat": repeat,
            "build_target_s": 3.0, "teardown_target_s": 2.0,
            "build_ok": statistics.median(builds) < 3.0, "teardown_ok": statistics.median(teardowns) < 2.0}


def star_topology(distances=(0, 100, 250, 500), **link) -> dict:
    """One switch, one host per distance (h<km> -- sw, netem on both ends); `link`: every link's
    other properties (rate, loss, queue_packets)."""
    return {"name": "bench-star", "sites": [{"name": "s", "kind": "aidc", "subnet": "10.9.0.0/24",
                                             "hosts": [f"h{d}" for d in distances], "switches": ["sw"]}],
            "links": [{"a": f"h{d}", "b": "sw", "distance_km": d, **link} for d in distances]}


def rtt_window(distances=(0, 100, 250, 500), count: int = 500, fresh: bool = True) -> dict:
    """One window: a star lab built here (host or guest kernel) with a fresh netem calibration, every
    distance pinged at once; RTT floors (5th percentile) and medians in ms, the calibration's fit."""
    if fresh:
        _cache_file().unlink(missing_ok=True)
    with NetnsLab(topology_from_data(star_topology(distances), "<bench>")) as lab:
        targets = {}
        for d in distances:
            a, _ = lab.plan.ends(f"h{d}-sw")
            targets[d] = (lab.ns(f"h{d}"), a.ifname, a.peer_ll6)
        samples = concurrent_rtts(targets, count=count)
        fit = lab.netem_fit
    return {"floor_ms": {d: rtt_floor(s) for d, s in samples.items()},
            "median_ms": {d: statistics.median(s) for d, s in samples.items()},
            "netem_offset_us": (fit.offset_s if fit else 0.0) * 1e6,
            "netem_noise_us": (fit.noise_s if fit else 0.0) * 1e6, "netem_estimates": fit.n if fit else 0}


def fidelity(windows: list[dict], group_index: float = 1.468) -> dict:
    """RTT error per distance over windows (floor minus the 0 km floor against the configured round
    trip), the mean with its 95 % interval (Student's t over windows), and the jitter above the floor."""
    out: dict = {"windows": len(windows)}
    distances = sorted(int(d) for d in windows[0]["floor_ms"] if int(d) > 0)
    for d in distances:
        configured = 2 * fiber_delay_s(d, group_index) * 1e3
        errs = [(w["floor_ms"][d] - w["floor_ms"][0]) / configured - 1 for w in windows]
        lo, hi = t_interval(errs)
        out[f"rtt_configured_{d}km_ms"] = configured
        out[f"rtt_error_{d}km"] = statistics.mean(errs)
        out[f"rtt_error_{d}km_ci"] = [lo, hi]
        out[f"rtt_error_{d}km_windows"] = errs
        jitter = [(w["median_ms"][d] - w["floor_ms"][d]) * 1e3 for w in windows]
        out[f"jitter_above_floor_{d}km_us"] = statistics.mean(jitter)
    offsets = [w["netem_offset_us"] for w in windows]
    out["netem_offset_us"] = statistics.mean(offsets)
    out["netem_offset_sd_us"] = statistics.stdev(offsets) if len(offsets) > 1 else 0.0
    out["netem_noise_us"] = statistics.mean(w["netem_noise_us"] for w in windows)
    return out


def bench_vm(windows: int = 5) -> dict:
    """Boot-to-command (cold, warm) and the guest's RTT fidelity over `windows` windows, each with a
    fresh calibration; one invocation."""
    guest = Guest(prepare_kernel())
    cold = guest.run(["true"], on_line=None)
    warm = guest.run(["true"], on_line=None)
    shutil.rmtree(cold.results_dir, ignore_errors=True)
    shutil.rmtree(warm.results_dir, ignore_errors=True)
    inner = guest.run([sys.executable, "-m", "metrolab.harness.bench", "rtt", str(windows)], on_line=None)
    data = json.loads((inner.results_dir / "rtt.json").read_text())
    shutil.rmtree(inner.results_dir, ignore_errors=True)
    host0 = rtt_window((0,), count=200, fresh=False)["floor_ms"][0]
    wins = [{k: ({int(d): v for d, v in w[k].items()} if isinstance(w[k], dict) else w[k]) for k in w}
            for w in data["windows"]]
    g0 = statistics.mean(w["floor_ms"][0] for w in wins)
    return {"accel": guest.accel, "kernel": guest.kernel.release, "cold_boot_s": cold.boot_s,
            "warm_boot_s": warm.boot_s, "host_rtt_0km_ms": host0, "guest_rtt_0km_ms": g0,
            "guest_rtt_overhead_0km_ms": g0 - host0, **fidelity(wins), "target": "|error| <= 0.03"}


if __name__ == "__main__":  # inside the guest: `python -m metrolab.harness.bench rtt N` writes rtt.json to the share
    import json
    import sys
    from pathlib import Path
    if sys.argv[1:2] == ["rtt"]:
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 5
        res = {"windows": [rtt_window() for _ in range(n)]}
        share = Path(settings.get("METROLAB_RESULTS"))
        (share / "rtt.json").write_text(json.dumps(res))


# metro-pair's shape without its 100 km: it builds on a kernel without netem, as the run's 0 km point does
HARNESS_TOPOLOGY = {"name": "bench-harness", "sites": [
    {"name": "aidc-a", "kind": "aidc", "subnet": "10.1.0.0/24", "hosts": ["a1"],
     "switches": [{"name": "gw-a", "role": "gateway"}], "access": {"switch": "gw-a"}},
    {"name": "aidc-b", "kind": "aidc", "subnet": "10.2.0.0/24", "hosts": ["b1"],
     "switches": [{"name": "gw-b", "role": "gateway"}], "access": {"switch": "gw-b"}}],
    "links": [{"name": "wan", "a": "gw-a", "b": "gw-b", "rate": "200mbit"}]}


def bench_harness(size: str = "2m", iters: int = 5, rounds: int = 3) -> dict:
    """The same AllReduce (gloo, a1 <-> b1 over a 200 Mbit/s WAN) timed by a bare torch.distributed
    script and through `metrolab run` (Ray, rank agents, results store), alternating, on one lab.
    overhead = median(run) / median(bare) - 1."""
    scn = scenario_from_data({"name": "bench-harness", "topology": HARNESS_TOPOLOGY,
                              "workloads": [{"kind": "collective", "hosts": ["a1", "b1"],
                                             "params": {"backend": "gloo", "size": size, "iters": iters}}],
                              "sweep": {"links": ["wan"], "distance_km": [0]}, "repetitions": 3, "warmups": 1},
                             "<bench harness>")
    bare, run = [], []
    prestart()  # torch ranks: the zygote's imports overlap the lab's build
    with NetnsLab(scn.topology) as lab:
        for i in range(rounds):
            res = run_ranks(lab, ["a1", "b1"], Sweep.of(begin=size, end=size, warmup=1, iters=iters, check=False).argv(),
                            port=29900 + i, timeout=600)[0].json()
            bare.append(res["rows"][0]["ip_time_us"] / 1e6)
    ray_start = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            out = run_scenario(scn, Path(d) / "run")
            run += [p.step_time_s for p in out.verdict.points if p.step_time_s]
            ray_start.append(out.ray_start_s)
    t_bare, t_run = statistics.median(bare), statistics.median(run)
    return {"bare_step_s": t_bare, "run_step_s": t_run, "overhead": t_run / t_bare - 1, "target": "<= 0.03",
            "ok": t_run / t_bare - 1 <= 0.03, "ray_start_s": statistics.median(ray_start), "rounds": rounds,
            "size": size, "iters": iters}


def noise_needs(scenario: str) -> dict[str, str]:
    """What the noise bench needs of the kernel: what the scenario's own run needs (the same backend)."""
    scn = load_scenario(scenario)
    out = needs(scn.topology)
    if any(d > 0 for d in scn.spec.sweep.distance_km):
        out.setdefault("netem", "the same backend as the scenario's distance points")
    return out


def _spin(deadline: float) -> None:
    die_with_parent()  # ends with the bench
    while time.monotonic() < deadline:
        pass


@contextlib.contextmanager
def co_tenant(enabled: bool = True, max_s: float = 3600.0):
    """One busy process beside the measurement (a core's worth of a Python loop, as a user's other
    job would be), ended on exit, with its parent, or after `max_s` whatever happens."""
    if not enabled:
        yield None
        return
    proc = multiprocessing.get_context("fork").Process(target=_spin, args=(time.monotonic() + max_s,), daemon=True,
                                                       name="metrolab-co-tenant")
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()
        proc.join(timeout=10)


def bench_noise(scenario: str = "allreduce-distance", blocks: int = 8, progress=None) -> dict:
    """The scenario's first workload, its baseline against an identical 0 km point in shuffled
    blocks: the interval of a degradation whose true value is 0 is the noise floor a criterion
    must clear (a 5 % criterion is decidable where the half-width is well under 5 %). Also what
    the machine gave to other processes meanwhile (metrolab.harness.kernel.interference)."""
    src = load_scenario(scenario)
    data = src.spec.model_dump(mode="json", exclude={"quick", "acceptance", "faults"})
    data["workloads"] = data["workloads"][:1]
    data["sweep"] = {**data["sweep"], "distance_km": [0], "loss": [0], "convergence": [1], "jitter": [0],
                     "rate": [None], "policy": ["none"], "params": {}}
    data["repetitions"] = blocks
    if isinstance(src.spec.topology, str) and Path(src.source).parent.joinpath(src.spec.topology).exists():
        data["topology"] = str(Path(src.source).parent / src.spec.topology)
    scn = scenario_from_data(data, f"<bench noise: {scenario}>")
    with tempfile.TemporaryDirectory() as d:
        out = run_scenario(scn, Path(d) / "run", backend="vm" if settings.in_guest()
                           else "netns", progress=(lambda **kw: progress(kw["description"]) if progress and
                                                   kw.get("description") else None))
        verdict = out.verdict  # judged from the run directory's rows: before it goes
        store = ResultStore(Path(d) / "run")
        records, meta = store.blocks(), json.loads(store.meta_path.read_text())
    null = next(p for p in verdict.points if p.is_null)
    base = next(p for p in verdict.points if p.baseline)
    h: dict = next(iter(out.headroom.values()), {}) if out.headroom else {}
    half = (null.ci_high - null.ci_low) / 2 if null.ci_low is not None and null.ci_high is not None else None
    return {"scenario": scenario, "workload": null.workload, "blocks": null.repetitions,
            "null_degradation": null.efficiency_degradation, "null_ci_low": null.ci_low, "null_ci_high": null.ci_high,
            "null_ci_halfwidth": half, "cv": base.cv, "paired_cv": null.paired_cv, "trend_p": base.trend_p,
            "step_time_s": base.step_time_s, "capacity_ratio": h.get("capacity_ratio"),
            "cpu_load": h.get("cpu_load"), "target_halfwidth": 0.02,
            "decidable_at_5pct": half is not None and half < 0.05, "ok": half is not None and half < 0.02,
            "interference_median": _median_of(records, "interference"),
            "guest_wait_median": _median_of(records, "guest_wait"), "blocks_measured": len(records),
            "blocks_interfered": sum(1 for b in records if b.get("interfered")),
            "guest_scheduling": (meta.get("guest") or {}).get("scheduling"), "wall_s": out.wall_s}


def _median_of(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None
