"""The training-step emulator's real-compute mode, in one process (a one-rank gloo group on the
host): real torch forward/backward, gradients copied into buckets by autograd hooks, micro-batches."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from metrolab.workloads.training_step import TrainingStepRank

pytestmark = pytest.mark.unit


@pytest.fixture
def one_rank_group():
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_real_compute_fills_every_bucket_and_reports_its_time(one_rank_group):
    params = {"model": "gpt2-small", "compute": "torch", "micro_batches": 2, "iters": 2, "torch_batch": 8}
    rank = TrainingStepRank(params, 1000, None)
    try:
        calls = []
        real = rank.comm.reduce

        def counted(bucket):  # the real all-reduce, counted
            calls.append(bucket.numel())
            real(bucket)
        rank.comm.reduce = counted
        m = rank.measure(warmups=0)
        # 2 steps; every bucket once per step (only the last micro-batch synchronises)
        assert len(calls) == 2 * len(rank.grads.buckets) == 2 * m["buckets"]
        assert sum(calls) == 2 * rank.grads.flat.numel()
        assert 0 < m["compute_s"] <= m["step_time_s"] and m["gradient_bytes"] == 248_000
        assert rank.grads.flat.abs().sum() > 0  # real gradients landed in the buckets
    finally:
        rank.close()
