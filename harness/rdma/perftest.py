"""Run perftest (ib_write_bw, ib_write_lat, …) between two lab hosts, as a rank pair of the one
launcher, and parse what it prints."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass

from metrolab.harness.errors import LabError
from metrolab.harness.kernel.launch import run_ranks
from metrolab.harness.lab.rxe import roce_v2_gid_index

BW_FIELDS = ("bytes", "iterations", "bw_peak_gbps", "bw_avg_gbps", "msg_rate_mpps")
LAT_FIELDS = ("bytes", "iterations", "t_min_us", "t_max_us", "t_typical_us", "t_avg_us", "t_stdev_us",
              "p99_us", "p999_us")


@dataclass
class PerftestResult:
    tool: str
    values: dict[str, float]
    client_output: str
    server_output: str


class NoResult(LabError):
    """perftest ran and exited without its result line."""


def parse(tool: str, text: str) -> dict[str, float]:
    fields = LAT_FIELDS if tool.endswith("_lat") else BW_FIELDS
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= len(fields) and re.fullmatch(r"\d+", parts[0]) and all(
                re.fullmatch(r"[0-9.]+", p) for p in parts[:len(fields)]):
            return {f: float(v) for f, v in zip(fields, parts)}
    raise NoResult(f"{tool} printed no result line:\n{text[-2000:]}")


def run(lab, server: str, client: str, tool: str = "ib_write_bw", size: int = 65536, iters: int = 1000,
        port: int = 18515, extra: list[str] | None = None, timeout: float = 300, attempts: int = 2) -> PerftestResult:
    """Server on `server`, client on `client`, both on their lab rxe devices and RoCEv2 GIDs. Under
    TCG perftest now and then exits 0 without printing its result line (seen with ib_write_lat and
    `-D`); that run is repeated once, on the next port, before it is an error."""
    for attempt in range(attempts):
        try:
            return _run_once(lab, server, client, tool, size, iters, port + attempt, extra, timeout)
        except NoResult:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _run_once(lab, server: str, client: str, tool: str, size: int, iters: int, port: int, extra: list[str] | None,
              timeout: float) -> PerftestResult:
    topo = lab.topology

    def argv(node: str, *peer: str) -> list[str]:
        dev = lab.rxe_device(node)
        gid = roce_v2_gid_index(dev, str(topo.nodes[node].address))
        return ["-m", "metrolab.harness.rdma.perftest", tool, "-d", dev, "-x", str(gid), "-s", str(size),
                "-n", str(iters), "-p", str(port), "-F", *(extra or []),
                *(["--report_gbits"] if tool.endswith("_bw") else []), *peer]

    # the one launcher (metrolab.harness.kernel.launch): a side that fails ends the other
    srv, cli = run_ranks(lab, [server, client], [argv(server), argv(client, str(topo.nodes[server].address))],
                         timeout=timeout, check=False)
    if cli.rc != 0:
        raise LabError(f"{tool} client on {client} failed ({cli.rc}):\n{(cli.stdout + cli.stderr)[-2000:]}")
    return PerftestResult(tool, parse(tool, cli.stdout), cli.stdout, srv.stdout + srv.stderr)


def main(argv: list[str] | None = None) -> int:
    """`python -m metrolab.harness.rdma.perftest TOOL ARGS... [SERVER]` on a rank's host: the tool,
    its output on our stdout; a client dials again until its server listens (seconds under TCG)."""
    argv = sys.argv[1:] if argv is None else argv
    for _attempt in range(40):
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        out = res.stdout + res.stderr
        if res.returncode == 0 or ("Couldn't connect" not in out and "Unable to" not in out):
            break
        time.sleep(0.5)
    else:
        out += f"\n{argv[0]} never reached its server"
    print(out, flush=True)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
