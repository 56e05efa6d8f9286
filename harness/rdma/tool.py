"""`python -m metrolab.harness.rdma.tool server|client …`: one side of a perftest-grade verbs test.

The `metrolab rdma bw|lat` command starts both sides inside their lab hosts' namespaces. Each
side prints one JSON object. Fields follow perftest: bytes, iterations, BW peak/average (Gb/s),
MsgRate (Mpps); latency min/max/typical/avg/stdev/p99/p99.9 (us, half the round trip).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import statistics
import sys
import time

import numpy as np

from metrolab.harness.rdma.cm import cm_connect, cm_listen
from metrolab.harness.rdma.verbs import (
    Connection,
    Device,
    QPConfig,
    RdmaError,
    barrier,
    connect_oob,
    exchange,
    recv_msg,
    send_msg,
)

SIGNAL_EVERY = 16


def bw_stats(size: int, iters: int, seconds: float, window_rates: list[float]) -> dict:
    avg = size * iters * 8 / seconds / 1e9
    return {"bytes": size, "iterations": iters, "bw_peak_gbps": max(window_rates + [avg]), "bw_avg_gbps": avg,
            "msg_rate_mpps": iters / seconds / 1e6, "seconds": seconds}


def lat_stats(size: int, samples_us: list[float]) -> dict:
    s = sorted(samples_us)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]
    return {"bytes": size, "iterations": len(s), "t_min_us": s[0], "t_max_us": s[-1],
            "t_typical_us": statistics.median(s), "t_avg_us": statistics.mean(s),
            "t_stdev_us": statistics.pstdev(s), "p99_us": pick(0.99), "p999_us": pick(0.999)}


def _open(args) -> tuple[Device | None, Connection | None, np.ndarray]:
    """Device, QPs and buffer for the TCP exchange; with --cm, rdma_cm makes them while connecting."""
    buf = np.zeros(max(args.bufsize, args.size * args.qps), dtype=np.uint8)
    if args.cm:
        return None, None, buf
    dev = Device(args.dev, gid_index=args.gid_index, ip=args.ip)
    try:
        conn = Connection(dev, buf, _qp_config(args), num_qps=args.qps)
    except BaseException:
        dev.close()
        raise
    return dev, conn, buf


def _qp_config(args) -> QPConfig:
    return QPConfig(mtu=args.mtu, timeout=args.timeout, retry_cnt=args.retry_cnt, traffic_class=args.tc)


def _cm_open(args, buf: np.ndarray) -> Connection:
    if args.role == "server":
        conn = cm_listen(args.ip, args.port, buf, _qp_config(args), args.qps, timeout=args.oob_timeout)
    else:
        conn = cm_connect(args.ip, args.peer, args.port, buf, _qp_config(args), args.qps, timeout=args.oob_timeout)
    if conn.dev.name != args.dev:
        conn.close()
        raise RdmaError(f"rdma_cm chose {conn.dev.name} for {args.ip}, not {args.dev}")
    return conn


def run_bw_client(conn: Connection, args) -> dict:
    """Keep tx_depth operations in flight per QP, like ib_write_bw / ib_read_bw / ib_send_bw."""
    size, iters, depth = args.size, args.iters, args.tx_depth
    wrs = [{sig: conn.prepare(args.op, q * size, size, q * size, signaled=sig, wr_id=q) for sig in (True, False)}
           for q in range(len(conn.qps))]
    nq = len(conn.qps)
    # a signaled WR among every `depth` (perftest's cq_mod <= tx_depth): with fewer in flight than
    # SIGNAL_EVERY, none would be signaled and the poll would wait for a completion that never comes
    every = min(SIGNAL_EVERY, depth)
    planned = [iters // nq + (1 if q < iters % nq else 0) for q in range(nq)]
    posted_q = [0] * nq
    since_signal = [0] * nq
    covers: list[list[int]] = [[] for _ in range(nq)]  # per QP: how many WRs each signaled completion stands for
    inflight = [0] * nq
    posted = done = 0
    marks = []
    t0 = time.perf_counter()
    while done < iters:
        for q in range(nq):
            while inflight[q] < depth and posted_q[q] < planned[q]:
                since_signal[q] += 1
                signaled = since_signal[q] == every or posted_q[q] == planned[q] - 1
                conn.qps[q].post_send(wrs[q][signaled])
                posted_q[q] += 1
                posted += 1
                inflight[q] += 1
                if signaled:
                    covers[q].append(since_signal[q])
                    since_signal[q] = 0
        for wc in conn.poll(1, timeout=args.op_timeout):
            n = covers[wc.wr_id].pop(0)
            inflight[wc.wr_id] -= n
            done += n
            marks.append((time.perf_counter(), done))
    seconds = time.perf_counter() - t0
    step = max(1, len(marks) // 10)
    rates = [(marks[i][1] - marks[i - step][1]) * size * 8 / (marks[i][0] - marks[i - step][0]) / 1e9
             for i in range(step, len(marks), step) if marks[i][0] > marks[i - step][0]]
    return bw_stats(size, iters, seconds, rates)


def run_lat(conn: Connection, buf: np.ndarray, args, initiator: bool) -> dict:
    """WRITE ping-pong on memory, like ib_write_lat: each side waits for the peer's n-th write.

    The wait spins on a memoryview byte (a numpy scalar read costs ~10x more, which under TCG is
    most of the figure), and completions are reaped every SIGNAL_EVERY writes only."""
    size, iters = args.size, args.iters
    last = size - 1
    mv = buf.data  # a memoryview of the registered buffer
    incoming = size + last
    samples = []
    clock = time.perf_counter
    wrs = {True: conn.prepare_write(0, size, size, signaled=True), False: conn.prepare_write(0, size, size, False)}
    post = conn.qps[0].post_send
    for i in range(1, iters + 1):
        tag = i % 255 + 1  # 1..255, never the same twice in a row
        signaled = i % SIGNAL_EVERY == 0 or i == iters
        if initiator:
            t0 = clock()
            mv[last] = tag  # the tag travels in the message's last byte: it lands last
            post(wrs[signaled])
            while mv[incoming] != tag:
                pass
            samples.append((clock() - t0) * 1e6 / 2)
        else:
            while mv[incoming] != tag:
                pass
            mv[last] = tag
            post(wrs[signaled])
        if signaled:
            conn.poll(1, timeout=args.op_timeout)
    return lat_stats(size, samples) if initiator else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metrolab.harness.rdma.tool")
    ap.add_argument("role", choices=("server", "client"))
    ap.add_argument("--dev", required=True)
    ap.add_argument("--ip", help="this side's address (selects the RoCEv2 GID, binds the OOB socket)")
    ap.add_argument("--peer", help="client: the server's address")
    ap.add_argument("--port", type=int, default=18600)
    ap.add_argument("--gid-index", type=int)
    ap.add_argument("--mode", choices=("bw", "lat"), default="bw")
    ap.add_argument("--op", choices=("write", "read", "send"), default="write")
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--bufsize", type=int, default=0)
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--qps", type=int, default=1)
    ap.add_argument("--tx-depth", type=int, default=128)
    ap.add_argument("--mtu", type=int, default=1024)
    ap.add_argument("--timeout", type=int, default=14)
    ap.add_argument("--retry-cnt", type=int, default=7)
    ap.add_argument("--tc", type=int, default=0)
    ap.add_argument("--op-timeout", type=float, default=60.0)
    ap.add_argument("--oob-timeout", type=float, default=60.0)
    ap.add_argument("--cm", action="store_true", help="connect the QPs through rdma_cm instead of a TCP exchange")
    ap.add_argument("--checksum", action="store_true", help="report a sha256 of the data each side holds")
    args = ap.parse_args(argv)
    if args.mode == "lat":
        args.bufsize = max(args.bufsize, 2 * args.size)
    try:
        out = _run(args)
    except RdmaError as exc:
        print(json.dumps({"error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(out))
    return 0


def _run(args) -> dict:
    dev, conn, buf = _open(args)
    if args.role == "client" and args.op in ("write", "send") and args.checksum:
        buf[:] = np.random.default_rng().integers(0, 256, buf.size, dtype=np.uint8)
    if args.role == "server" and args.op == "read" and args.checksum:
        buf[:] = np.random.default_rng().integers(0, 256, buf.size, dtype=np.uint8)
    lst = None
    try:
        if args.role == "server":  # listening before rdma_cm blocks: the client's control connect queues
            lst = socket.create_server((args.ip or "", args.port), reuse_port=True)
            lst.settimeout(args.oob_timeout)
        if args.cm:  # QPs connected by rdma_cm; the TCP socket below only synchronises the two sides
            conn = _cm_open(args, buf)
        assert conn is not None  # _open made it, or rdma_cm did
        if args.role == "server":
            assert lst is not None
            try:
                sock, _ = lst.accept()
            except TimeoutError:
                raise RdmaError(f"no client connected within {args.oob_timeout:g} s") from None
        else:
            sock = connect_oob(args.peer, args.port, args.oob_timeout)
        with sock:
            if not args.cm:
                peer, _ = exchange(sock, conn.local_info())
                conn.connect(peer)
            recvs = 0
            if args.role == "server" and args.op == "send" and args.mode == "bw":
                for q in range(len(conn.qps)):  # every QP's receive queue primed before the sender starts
                    for _ in range(min(args.iters, conn.cfg.max_recv_wr // 2)):
                        conn.post_recv(q * args.size, args.size, qp=q, wr_id=q)
                        recvs += 1
            barrier(sock, "connected")
            result: dict = {"role": args.role, "dev": args.dev, "gid_index": conn.dev.gid_index,
                            "qps": len(conn.qps), "op": args.op, "mode": args.mode,
                            "connect": "rdma_cm" if args.cm else "tcp"}
            if args.mode == "lat":
                result |= run_lat(conn, buf, args, initiator=args.role == "client")
            elif args.role == "client":
                result |= run_bw_client(conn, args)
            elif args.op == "send":
                got = 0
                while got < args.iters:  # the receiver reposts on the QP that consumed one
                    for wc in conn.poll(1, timeout=args.op_timeout):
                        got += 1
                        if recvs < args.iters + len(conn.qps) * 8:
                            conn.post_recv(wc.wr_id * args.size, args.size, qp=wc.wr_id, wr_id=wc.wr_id)
                            recvs += 1
            send_msg(sock, {"done": True})
            recv_msg(sock)
            if args.checksum:
                span = args.size * len(conn.qps)
                result["sha256"] = hashlib.sha256(buf[:span].tobytes()).hexdigest()
            return result
    finally:
        if lst is not None:
            lst.close()
        if conn is not None:
            conn.close()
        if dev is not None:
            dev.close()


if __name__ == "__main__":
    sys.exit(main())
