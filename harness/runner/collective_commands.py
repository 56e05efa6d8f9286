"""`metrolab collectives` and `metrolab bench collectives`: the lab side (runs where rxe is)."""

from __future__ import annotations

from dataclasses import dataclass

from metrolab.harness.errors import SpecError
from metrolab.harness.kernel.launch import run_ranks
from metrolab.harness.kernel.zygote import prestart
from metrolab.harness.lab.netns import NetnsLab
from metrolab.harness.lab.select import needs
from metrolab.harness.rdma import perftest
from metrolab.harness.runner.rdma_commands import impaired_lab, topology_and_testbed
from metrolab.harness.spec.loader import load_topology
from metrolab.harness.spec.resolve import Topology
from metrolab.harness.testbed.resolve import Testbed
from metrolab.workloads.collectives import Sweep


def pick_rank_hosts(topo, hosts: str | None, backend: str) -> list[str]:
    """The lab hosts that run ranks: --hosts, else every (RDMA, for verbs) host in topology order."""
    eligible = [h.name for h in topo.hosts() if h.rdma or backend != "verbs"]
    if hosts:
        chosen = [h.strip() for h in hosts.split(",") if h.strip()]
        for h in chosen:
            if h not in eligible:
                why = "an RDMA host (rdma: true)" if backend == "verbs" else "a host"
                raise SpecError("--hosts", "", h, f"not {why} of {topo.name} (have: {', '.join(eligible) or 'none'})")
    else:
        chosen = eligible
    if len(chosen) < 2:
        if backend == "verbs":
            raise SpecError(topo.source, "sites[].hosts[].rdma", chosen,
                            "the verbs backend needs >= 2 RDMA hosts (rdma: true) to place ranks on")
        raise SpecError(topo.source, "sites[].hosts", chosen, f"the {backend} benchmark needs >= 2 rank hosts")
    return chosen


def site_of(topo, host: str) -> str:
    return topo.nodes[host].site


@dataclass
class CollectivesTest:
    """One `metrolab collectives` invocation, in nccl-tests' terms (-b -e -f -w -n -d -c)."""

    topology: str | None = None       # default: rdma-pair
    hosts: str | None = None          # comma-separated rank hosts (default: every eligible host)
    backend: str = "verbs"            # verbs | gloo | nccl
    ops: str = "all_reduce"
    begin: str = "8"
    end: str = "4m"
    factor: float = 2.0
    warmup: int = 2
    iters: int = 10
    dtype: str = "float32"
    check: int = 1
    algo: str = "flat"                # flat | hierarchical
    link: str = "wan"
    distance_km: float | None = None
    loss: float | None = None
    timeout: float = 1800
    testbed: str | None = None        # a testbed file: its machines instead of namespaces


def collectives_needs(t: CollectivesTest) -> dict[str, str]:
    """Kernel features the benchmark needs (feature -> why): the topology's, Soft-RoCE for verbs,
    netem for a distance or loss on the WAN."""
    out = needs(load_topology(t.topology or "rdma-pair"), rdma=t.backend == "verbs")
    if t.distance_km is not None or t.loss:
        out["netem"] = "delay and loss on the WAN"
    return out


Plan = tuple[Topology, Testbed | None, list[str], Sweep]  # topology, testbed, rank hosts, what the ranks run


def planned(t: CollectivesTest) -> Plan:
    """The test's topology, testbed, rank hosts and what the ranks run, each checked (SpecError
    naming the option or file) before anything is built or a guest booted."""
    topo, tb = topology_and_testbed(t.topology, t.testbed)
    hosts = pick_rank_hosts(topo, t.hosts, t.backend)
    sites = tuple(site_of(topo, h) for h in hosts) if t.algo == "hierarchical" else ()
    sweep = Sweep.of(t.ops, t.begin, t.end, t.factor, backend=t.backend, warmup=t.warmup, iters=t.iters,
                     dtype=t.dtype, algo=t.algo, sites=sites, check=bool(t.check))
    return topo, tb, hosts, sweep


def collectives_test(t: CollectivesTest, plan: Plan | None = None, progress=lambda m: None) -> dict:
    """`plan`: what `planned(t)` returned, where the caller checked the test with it already."""
    topo, tb, hosts, sweep = plan or planned(t)
    prestart()  # torch ranks: the zygote's imports overlap the lab's build
    with impaired_lab(topo, t.link, t.distance_km, t.loss, tb) as (lab, _):
        progress(f"{t.backend} {t.ops} on {', '.join(hosts)} ({t.algo})")
        res = run_ranks(lab, hosts, sweep.argv(), timeout=t.timeout)[0].json()
        return res | {"hosts": hosts, "lab": lab.lab_id, "topology": topo.name}


def bench_collectives(iters: int = 5) -> dict:
    """On one two-host link: verbs AllReduce busbw at 4 and 16 MiB against ib_write_bw at the same
    sizes (the acceptance ratio), gloo AllReduce at 4 MiB, and two references that tell the protocol's
    cost from the link's: ib_write_bw -b (a two-rank ring sends both ways at once, as -b does; its
    per-direction share is the fair bound) and verbs Broadcast (one direction, like ib_write_bw)."""
    topo = load_topology("rdma-pair")
    prestart()  # torch ranks: the zygote's imports overlap the lab's build
    out: dict = {}
    with NetnsLab(topo) as lab:
        hosts = ["a1", "b1"]
        verbs = run_ranks(lab, hosts, Sweep(backend="verbs", ops=("all_reduce", "broadcast"), sizes=(4 << 20, 16 << 20),
                                            warmup=1, iters=iters, check=False).argv(),
                          port=29600, timeout=900)[0].json()["rows"]
        gloo = run_ranks(lab, hosts, Sweep(sizes=(4 << 20,), warmup=1, iters=iters, check=False).argv(),
                         port=29601, timeout=900)[0].json()["rows"]

        def busbw(op: str, size: int) -> float:  # GB/s -> Gb/s, perftest's unit
            return next(r for r in verbs if r["op"] == op and r["size"] == size)["ip_busbw_gbs"] * 8

        for label, size in (("4m", 4 << 20), ("16m", 16 << 20)):
            ref = perftest.run(lab, "b1", "a1", "ib_write_bw", size=size, iters=max(20, 4 * iters),
                               port=18700 + size % 97).values["bw_avg_gbps"]
            out[f"verbs_busbw_{label}_gbps"] = busbw("all_reduce", size)
            out[f"ib_write_bw_{label}_gbps"] = ref
            out[f"verbs_over_perftest_{label}"] = out[f"verbs_busbw_{label}_gbps"] / ref
        out["gloo_busbw_4m"] = gloo[0]["ip_busbw_gbs"] * 8
        out["busbw_unit"] = "Gb/s"
        bidir = perftest.run(lab, "b1", "a1", "ib_write_bw", size=4 << 20, iters=max(20, 4 * iters), port=18790,
                             extra=["-b"]).values["bw_avg_gbps"]
        out["ib_write_bw_bidir_4m_gbps"] = bidir
        out["verbs_over_perftest_bidir_4m"] = out["verbs_busbw_4m_gbps"] / (bidir / 2)
        out["verbs_broadcast_4m_gbps"] = busbw("broadcast", 4 << 20)
        out["verbs_broadcast_over_perftest_4m"] = out["verbs_broadcast_4m_gbps"] / out["ib_write_bw_4m_gbps"]
    return out | {"target": "verbs_over_perftest >= 0.7",
                  "ok": min(out["verbs_over_perftest_4m"], out["verbs_over_perftest_16m"]) >= 0.7}
