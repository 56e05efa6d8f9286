"""nccl-tests' busbw factors and size sweeps (pure)."""

import pytest

from metrolab.workloads.busbw import algbw_gbs, busbw_factor, busbw_gbs, count_for, sizes

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("op,n,factor", [
    ("all_reduce", 2, 1.0), ("all_reduce", 8, 1.75), ("all_gather", 4, 0.75), ("reduce_scatter", 8, 0.875),
    ("all_to_all", 2, 0.5), ("broadcast", 16, 1.0), ("reduce", 3, 1.0), ("sendrecv", 2, 1.0),
    ("all_reduce", 1, 0.0)])
def test_busbw_factors_match_nccl_tests(op, n, factor):
    # PERFORMANCE.md: allreduce 2(n-1)/n, allgather/reducescatter/alltoall (n-1)/n, bcast/reduce/sendrecv 1
    assert busbw_factor(op, n) == pytest.approx(factor)


def test_bandwidths_and_bad_input():
    assert algbw_gbs(1_000_000_000, 2.0) == 0.5
    assert busbw_gbs("all_reduce", 4, 1_000_000_000, 1.0) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown collective 'allreduce'"):
        busbw_factor("allreduce", 2)
    with pytest.raises(ValueError, match="nranks"):
        busbw_factor("all_reduce", 0)


def test_size_sweep_and_counts():
    assert sizes(1024, 8192) == [1024, 2048, 4096, 8192]
    assert sizes(8, 64, 4) == [8, 32]
    assert sizes(100, 300, step=100) == [100, 200, 300]
    with pytest.raises(ValueError):
        sizes(0, 10)
    with pytest.raises(ValueError):
        sizes(8, 4)
    assert count_for("all_reduce", 4096, 3, 4) == 1024
    assert count_for("all_gather", 4096, 3, 4) == 1023  # a multiple of the rank count
    assert count_for("all_gather", 4, 3, 4) == 3
