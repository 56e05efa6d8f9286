"""Synchronized elephant flows between two lab hosts with known 5-tuples (the traffic a load
balancer is judged on): the receiver counts each flow's bytes and completion time.

    python -m harness.policy.elephants recv --port 5201 --flows 8
    python -m harness.policy.elephants send --dst 10.2.0.1 --port 5201 --flows 8 --bytes 1m --sport 41000
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time


def recv(port: int, flows: int, timeout: float) -> dict:
    srv = socket.create_server(("0.0.0.0", port), backlog=flows)
    srv.settimeout(timeout)
    out: dict[int, dict] = {}

    def drain(c, peer):
        t0, n = time.monotonic(), 0
        while True:
            chunk = c.recv(1 << 16)
            if not chunk:
                break
            n += len(chunk)
        out[peer[1]] = {"bytes": n, "fct_s": time.monotonic() - t0}
        c.close()
    threads = []
    for _ in range(flows):
        c, peer = srv.accept()
        t = threading.Thread(target=drain, args=(c, peer))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(timeout)
    return {"flows": {str(k): v for k, v in sorted(out.items())}}


def send(dst: str, port: int, flows: int, nbytes: int, sport: int, seconds: float = 0.0, tos: int = 0) -> dict:
    """`flows` connections from source ports sport.., started together; each sends `nbytes`, or
    as much as it can for `seconds` when that is set."""
    payload = b"\0" * (1 << 16)
    socks = []
    for i in range(flows):
        s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if tos:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        s.bind(("", sport + i))
        s.connect((dst, port))
        socks.append(s)
    start = threading.Barrier(flows)  # synchronized: every flow starts together

    def blast(s):
        start.wait()
        if seconds:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s.send(payload)
        else:
            left = nbytes
            while left > 0:
                left -= s.send(payload[:min(left, len(payload))])
        s.close()
    threads = [threading.Thread(target=blast, args=(s,)) for s in socks]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"sent_s": time.monotonic() - t0}


def main(argv=None) -> int:
    from netem.units import parse_size
    ap = argparse.ArgumentParser(prog="python -m harness.policy.elephants")
    ap.add_argument("mode", choices=("send", "recv"))
    ap.add_argument("--dst")
    ap.add_argument("--port", type=int, default=5201)
    ap.add_argument("--flows", type=int, default=8)
    ap.add_argument("--bytes", default="1m")
    ap.add_argument("--sport", type=int, default=41000)
    ap.add_argument("--seconds", type=float, default=0.0, help="send for this long instead of --bytes")
    ap.add_argument("--tos", type=int, default=0, help="IP TOS byte (DSCP << 2)")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args(argv)
    res = recv(a.port, a.flows, a.timeout) if a.mode == "recv" else send(a.dst, a.port, a.flows,
                                                                           parse_size(a.bytes), a.sport,
                                                                           a.seconds, a.tos)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
