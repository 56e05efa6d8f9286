"""The one launcher: a group of processes on lab hosts, one per host, each inside its host's
namespace (or on its testbed machine): the torch.distributed ranks of a job, the verbs tool's server
and client (metrolab.harness.rdma.pair), perftest's (metrolab.harness.rdma.perftest).

Every rank gets the torch.distributed environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT on rank 0's
lab address), GLOO_SOCKET_IFNAME (gloo must use the lab interface), and its Soft-RoCE device
(METROLAB_RDMA_DEV / METROLAB_RDMA_IP) for the verbs backend. A rank that fails or outlives the
timeout ends the run: the others are killed, and the error names the rank, its host and its output.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass

from metrolab.harness.errors import LabError


@dataclass
class RankResult:
    rank: int
    host: str
    rc: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        """The rank's last stdout line, parsed."""
        for line in reversed(self.stdout.strip().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise LabError(f"rank {self.rank} on {self.host} printed no JSON result:\n{self.stderr[-1500:]}")


def rank_env(lab, hosts: list[str], rank: int, port: int) -> dict[str, str]:
    topo = lab.topology
    host = hosts[rank]
    iface = lab.plan.ifaces_of(host)[0].ifname
    env = {"RANK": str(rank), "WORLD_SIZE": str(len(hosts)), "LOCAL_RANK": "0",
           "MASTER_ADDR": str(topo.nodes[hosts[0]].address), "MASTER_PORT": str(port),
           "GLOO_SOCKET_IFNAME": iface, "METROLAB_RDMA_IP": str(topo.nodes[host].address),
           "METROLAB_HOST": host, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if topo.nodes[host].rdma:
        env["METROLAB_RDMA_DEV"] = lab.rxe_device(host)
    return env


def run_ranks(lab, hosts: list[str], argv: list[str] | list[list[str]], *, port: int = 29500, timeout: float = 600,
              env: dict[str, str] | None = None, check: bool = True) -> list[RankResult]:
    """Run `argv` (a Python command line, e.g. ["-m", "metrolab.workloads.collectives", ...], or one
    per rank: a server and its client) as one rank per host; returns every rank's result. With
    check, a non-zero exit raises LabError."""
    for h in hosts:
        if h not in lab.topology.nodes or lab.topology.nodes[h].is_switch:
            raise LabError(f"rank host {h!r} is not a host of lab {lab.topology.name}")
    argvs = [list(a) for a in argv] if argv and isinstance(argv[0], list) else [list(argv)] * len(hosts)
    procs = []
    try:
        for rank, host in enumerate(hosts):
            procs.append(lab.spawn(host, argvs[rank], env=rank_env(lab, hosts, rank, port) | (env or {}),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout))
        deadline = time.monotonic() + timeout
        outs: dict[int, tuple[str, str]] = {}
        # drain every rank concurrently: a blocked pipe would stall a rank that the others wait for
        def drain(i, p):
            outs[i] = p.communicate()
        threads = [threading.Thread(target=drain, args=(i, p), daemon=True) for i, p in enumerate(procs)]
        for t in threads:
            t.start()
        failed_at = None
        while any(t.is_alive() for t in threads):
            if time.monotonic() > deadline:
                break
            if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
                failed_at = time.monotonic()  # give the others a moment to report their own error
            if failed_at is not None and time.monotonic() - failed_at > 30:
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
    for t in threads:
        t.join(timeout=5)
    results = [RankResult(i, hosts[i], p.returncode, *outs.get(i, ("", ""))) for i, p in enumerate(procs)]
    if check:
        bad = [r for r in results if r.rc != 0]
        if bad:
            first = min(bad, key=lambda r: (r.rc < 0, r.rank))  # a rank's own error before a killed one
            raise LabError(f"rank {first.rank} on {first.host} exited {first.rc}:\n{first.stderr.strip()[-2000:]}")
    return results
