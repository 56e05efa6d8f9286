"""Run perftest (ib_write_bw, ib_write_lat, …) between two lab hosts and parse what it prints."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

from metrolab.harness.errors import LabError
from metrolab.harness.kernel import sh
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
    args = {}
    for node in (server, client):
        dev = lab.rxe_device(node)
        args[node] = [tool, "-d", dev, "-x", str(roce_v2_gid_index(dev, str(topo.nodes[node].address))),
                      "-s", str(size), "-n", str(iters), "-p", str(port), "-F", *(extra or [])]
        if tool.endswith("_bw"):
            args[node].append("--report_gbits")
    srv = sh.popen(args[server], netns=lab.ns(server), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = ""
        for _attempt in range(20):  # the server needs a moment to listen (seconds under TCG)
            time.sleep(0.5)
            cli = sh.run(args[client] + [str(topo.nodes[server].address)], netns=lab.ns(client), check=False,
                         timeout=timeout)
            out = cli.stdout + cli.stderr
            if cli.rc == 0:
                break
            if "Couldn't connect" not in out and "Unable to" not in out:
                raise LabError(f"{tool} client on {client} failed ({cli.rc}):\n{out[-2000:]}")
        else:
            raise LabError(f"{tool} client on {client} never reached the server on {server}:\n{out[-2000:]}")
        srv_out, _ = srv.communicate(timeout=timeout)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    return PerftestResult(tool, parse(tool, out), out, srv_out)
