"""The control handshake (metrolab.workloads.control) between two real ranks on loopback: a gloo group,
the channel's sockets marked with the DSCP, every rank held until the last is ready."""

from __future__ import annotations

import multiprocessing as mp
import socket
import time
from datetime import timedelta

import pytest

pytestmark = pytest.mark.unit


def two_ranks(target) -> dict[int, tuple]:
    """Run `target(rank, port, queue)` as ranks 0 and 1 (spawned processes, a TCP store on
    loopback); returns what each put on the queue, by rank, once both exited cleanly."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    got = {}
    try:
        for _ in procs:
            rank, *rest = out.get(timeout=120)
            got[rank] = tuple(rest)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return got


def _join(dist, rank: int, port: int) -> None:
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=rank == 0, timeout=timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)


def _rank(rank: int, port: int, out) -> None:
    import torch.distributed as dist

    from metrolab.workloads.control import ControlChannel
    _join(dist, rank, port)
    ch = ControlChannel(dist, 46, "127.0.0.1", timeout_s=30)
    try:
        socks = ch.peers or [ch.sock]
        tos = [s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) for s in socks]
        waits = []
        for _ in range(3):
            if rank == 0:
                time.sleep(0.3)  # rank 0 is late: rank 1 must wait for it
            t0 = time.perf_counter()
            ch.handshake()
            waits.append(time.perf_counter() - t0)
        out.put((rank, tos, waits, ch.seq))
    finally:
        ch.close()
        dist.destroy_process_group()


def test_the_handshake_marks_its_packets_and_holds_every_rank_until_all_are_ready():
    got = two_ranks(_rank)
    assert got[0][0] == [46 << 2] and got[1][0] == [46 << 2], got  # DSCP 46 on both ends
    assert got[0][2] == got[1][2] == 3
    assert min(got[1][1]) > 0.25, got  # held until rank 0 was ready
    assert max(got[0][1]) < 0.25, got  # the last to arrive does not wait


def _training_rank(rank: int, port: int, out) -> None:
    import os

    import torch.distributed as dist

    from metrolab.workloads.training_step import TrainingStepRank
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    _join(dist, rank, port)
    step = TrainingStepRank({"model": "gpt2-small", "control_dscp": 46, "iters": 2, "compute_scale": 0.1}, 1000, None)
    try:
        m = step.measure(warmups=1)
        out.put((rank, m["buckets"], step.control.seq, m["step_time_s"]))
    finally:
        step.close()
        dist.destroy_process_group()


def test_every_bucket_of_every_step_waits_for_its_handshake():
    got = two_ranks(_training_rank)
    buckets = got[0][0]
    assert buckets > 1 and got[0][1] == got[1][1] == 3 * buckets, got  # 1 warm-up + 2 measured steps
