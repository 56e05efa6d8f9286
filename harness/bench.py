"""Benchmarks: figures measured in one invocation, reported with their targets."""

from __future__ import annotations

import statistics
import time

from harness.spec.loader import topology_from_data


def grid_topology(sites: int = 4, hosts: int = 4, wan_rate: str = "1gbit") -> dict:
    """A sites x hosts lab: a leaf per site, a full mesh of WAN links between the leaves."""
    data = {"name": f"bench-{sites}x{hosts}", "sites": [], "links": []}
    for i in range(sites):
        data["sites"].append({"name": f"s{i}", "kind": "aidc", "subnet": f"10.{i + 1}.0.0/24", "hosts": hosts,
                              "switches": [f"leaf{i}"], "access": {"switch": f"leaf{i}", "rate": "10gbit"}})
    for i in range(sites):
        for j in range(i + 1, sites):
            data["links"].append({"a": f"leaf{i}", "b": f"leaf{j}", "rate": wan_rate})
    return data


def bench_lab(repeat: int = 5, sites: int = 4, hosts: int = 4) -> dict:
    from harness import capabilities
    from harness.lab.netns import NetnsLab
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


def star_topology(distances=(0, 100, 500)) -> dict:
    """One switch, one host per distance (h<km> -- sw, netem on both ends)."""
    return {"name": "bench-star", "sites": [{"name": "s", "kind": "aidc", "subnet": "10.9.0.0/24",
                                             "hosts": [f"h{d}" for d in distances], "switches": ["sw"]}],
            "links": [{"a": f"h{d}", "b": "sw", "distance_km": d} for d in distances]}


def rtt_by_distance(distances=(0, 100, 500), count: int = 300) -> dict:
    """Minimum ping RTT (ms) of `count` per distance on a star lab built here (host or guest kernel)."""
    from harness.lab.netns import NetnsLab
    from harness.lab.probe import concurrent_rtts
    lab = NetnsLab(topology_from_data(star_topology(distances), "<bench>"))
    lab.up()
    try:
        targets = {}
        for d in distances:
            a, _ = lab.plan.ends(f"h{d}-sw")
            targets[d] = (lab.ns(f"h{d}"), a.ifname, a.peer_ll6)
        out = {d: min(s) for d, s in concurrent_rtts(targets, count=count).items()}  # the floor: see calibrate.py
        fit = lab.netem_fit
        return {"rtt_ms": out, "netem_offset_us": (fit.offset_s if fit else 0.0) * 1e6,
                "netem_slope": fit.slope if fit else 1.0}
    finally:
        lab.down()


def bench_vm() -> dict:
    """Boot-to-command (cold, warm) and the guest's RTT fidelity; one invocation."""
    import json
    import shutil
    import sys
    from pathlib import Path

    from harness.vm.kernel import prepare_kernel
    from harness.vm.qemu import Guest
    from netem.models import fiber_delay_s

    guest = Guest(prepare_kernel())
    cold = guest.run(["true"], on_line=None)
    warm = guest.run(["true"], on_line=None)
    shutil.rmtree(cold.results_dir, ignore_errors=True)
    shutil.rmtree(warm.results_dir, ignore_errors=True)
    inner = guest.run([sys.executable, "-m", "harness.bench", "rtt"], cwd=Path(__file__).resolve().parents[1],
                      on_line=None)
    data = json.loads((inner.results_dir / "rtt.json").read_text())
    shutil.rmtree(inner.results_dir, ignore_errors=True)
    host0 = rtt_by_distance((0,), count=200)["rtt_ms"][0]
    g = {int(k): v for k, v in data["rtt_ms"].items()}
    out = {"accel": guest.accel, "kernel": guest.kernel.release,
           "cold_boot_s": cold.boot_s, "warm_boot_s": warm.boot_s,
           "host_rtt_0km_ms": host0, "guest_rtt_0km_ms": g[0], "guest_rtt_overhead_0km_ms": g[0] - host0,
           "netem_offset_us": data["netem_offset_us"], "netem_slope": data["netem_slope"]}
    for d in (100, 500):
        configured = 2 * fiber_delay_s(d) * 1e3
        measured = g[d] - g[0]
        out[f"rtt_configured_{d}km_ms"] = configured
        out[f"rtt_measured_{d}km_ms"] = measured
        out[f"rtt_error_{d}km"] = measured / configured - 1
    return out


if __name__ == "__main__":  # inside the guest: `python -m harness.bench rtt` writes rtt.json to the share
    import json
    import os
    import sys
    from pathlib import Path
    if sys.argv[1:2] == ["rtt"]:
        res = rtt_by_distance()
        share = Path(os.environ["METROLAB_RESULTS"])
        (share / "rtt.json").write_text(json.dumps(res))


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
    import tempfile
    from pathlib import Path

    from harness.dist.launch import run_ranks
    from harness.lab.netns import NetnsLab
    from harness.runner.run import run_scenario
    from harness.scenario.spec import scenario_from_data

    scn = scenario_from_data({"name": "bench-harness", "topology": HARNESS_TOPOLOGY,
                              "workloads": [{"kind": "collective", "hosts": ["a1", "b1"],
                                             "params": {"backend": "gloo", "size": size, "iters": iters}}],
                              "sweep": {"links": ["wan"], "distance_km": [0]}, "repetitions": 3, "warmups": 1},
                             "<bench harness>")
    bare, run = [], []
    lab = NetnsLab(scn.topology)
    lab.up()
    try:
        for i in range(rounds):
            res = run_ranks(lab, ["a1", "b1"], ["-m", "workloads.collectives", "--backend", "gloo", "--ops",
                                                "all_reduce", "-b", size, "-e", size, "-w", "1", "-n", str(iters),
                                                "-c", "0"], port=29900 + i, timeout=600)[0].json()
            bare.append(res["rows"][0]["ip_time_us"] / 1e6)
    finally:
        lab.down()
    ray_start = []
    for i in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            out = run_scenario(scn, Path(d) / "run")
            run += [p.step_time_s for p in out.verdict.points if p.step_time_s]
            ray_start.append(out.ray_start_s)
    t_bare, t_run = statistics.median(bare), statistics.median(run)
    return {"bare_step_s": t_bare, "run_step_s": t_run, "overhead": t_run / t_bare - 1, "target": "<= 0.03",
            "ok": t_run / t_bare - 1 <= 0.03, "ray_start_s": statistics.median(ray_start), "rounds": rounds,
            "size": size, "iters": iters}
