"""Run the verbs tool between two lab hosts: server and client started in their namespaces."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from metrolab.harness.errors import LabError
from metrolab.harness.kernel import counters
from metrolab.harness.rdma.verbs import RdmaError


def run_pair(lab, server: str, client: str, *, mode: str = "bw", op: str = "write", size: int = 65536,
             iters: int = 1000, qps: int = 1, port: int = 18600, extra: list[str] | None = None,
             timeout: float = 600) -> dict:
    """One measurement: both sides' JSON plus the counter deltas of both hosts."""
    topo = lab.topology
    common = ["--mode", mode, "--op", op, "--size", str(size), "--iters", str(iters), "--qps", str(qps),
              "--port", str(port), *(extra or [])]
    tool = ["-m", "metrolab.harness.rdma.tool"]
    before = counters.snapshot(lab, [server, client])
    # where each host lives (forked from the zygote in the guest: pyverbs and numpy are imported already)
    pipes: dict[str, Any] = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    srv = lab.spawn(server, tool + ["server", "--dev", lab.rxe_device(server), "--ip", str(topo.nodes[server].address),
                                    *common], env={}, **pipes)
    cli = None
    try:
        cli = lab.spawn(client, tool + ["client", "--dev", lab.rxe_device(client), "--ip",
                                        str(topo.nodes[client].address), "--peer", str(topo.nodes[server].address),
                                        *common], env={}, **pipes)
        cli_out, cli_err = cli.communicate(timeout=timeout)
        srv_out, srv_err = srv.communicate(timeout=timeout)
    finally:
        for p in (srv, cli):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    results = {}
    for side, out, err, rc in (("client", cli_out, cli_err, cli.returncode),
                               ("server", srv_out, srv_err, srv.returncode)):
        try:
            results[side] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise LabError(f"verbs tool {side} on {client if side == 'client' else server} failed ({rc}): "
                           f"{(err or out).strip()[-1500:]}") from None
        if "error" in results[side]:
            raise RdmaError(f"{side}: {results[side]['error']}")
    results["counters"] = counters.snapshot_delta(before, counters.snapshot(lab, [server, client]))
    return results
