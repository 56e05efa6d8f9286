"""The verbs tool's server and client (metrolab.harness.rdma.tool) on two lab hosts, a rank pair of
the one launcher: one measurement, both sides' results and both hosts' counters."""

from __future__ import annotations

import json

from metrolab.harness.errors import LabError
from metrolab.harness.kernel import counters
from metrolab.harness.kernel.launch import run_ranks
from metrolab.harness.rdma.verbs import RdmaError


def run_pair(lab, server: str, client: str, *, mode: str = "bw", op: str = "write", size: int = 65536,
             iters: int = 1000, qps: int = 1, port: int = 18600, extra: list[str] | None = None,
             timeout: float = 600) -> dict:
    """One measurement: both sides' JSON plus the counter deltas of both hosts."""
    topo = lab.topology
    common = ["--mode", mode, "--op", op, "--size", str(size), "--iters", str(iters), "--qps", str(qps),
              "--port", str(port), *(extra or [])]
    tool = ["-m", "metrolab.harness.rdma.tool"]
    sides = {
        "server": tool + ["server", "--dev", lab.rxe_device(server), "--ip", str(topo.nodes[server].address), *common],
        "client": tool + ["client", "--dev", lab.rxe_device(client), "--ip", str(topo.nodes[client].address),
                          "--peer", str(topo.nodes[server].address), *common]}
    before = counters.snapshot(lab, [server, client])
    # a side that fails ends the other (a client left dialling a dead server would sit out its timeout)
    ranks = run_ranks(lab, [server, client], list(sides.values()), timeout=timeout, check=False)
    results = {}
    for side, r in zip(sides, ranks):
        try:
            results[side] = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise LabError(f"verbs tool {side} on {r.host} failed ({r.rc}): "
                           f"{(r.stderr or r.stdout).strip()[-1500:]}") from None
        if "error" in results[side]:
            raise RdmaError(f"{side}: {results[side]['error']}")
    results["counters"] = counters.snapshot_delta(before, counters.snapshot(lab, [server, client]))
    return results
