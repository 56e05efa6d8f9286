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
