"""What a collectives rank runs is one typed Sweep: checked where it is made (an unknown op, size or
dtype refused naming its option, before any lab, rank or guest), handed to the ranks whole, and
the same whether spelt as nccl-tests' options or as metrolab passes it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from metrolab.harness.errors import SpecError
from metrolab.harness.runner.collective_commands import CollectivesTest, planned
from metrolab.workloads.collectives import Sweep, parse_args

pytestmark = pytest.mark.unit


def test_the_ranks_get_the_sweep_they_were_given():
    sw = Sweep.of("all_reduce,all_gather", "4k", "64k", 4, backend="verbs", warmup=1, iters=3, algo="hierarchical",
                  sites=("aidc-a", "aidc-a", "aidc-b"), check=False)
    assert sw.sizes == (4096, 16384, 65536)
    assert parse_args(sw.argv()[2:]) == sw
    assert parse_args(["--backend", "verbs", "--ops", "all_reduce,all_gather", "-b", "4k", "-e", "64k", "-f", "4",
                       "-w", "1", "-n", "3", "--algo", "hierarchical", "--sites", "aidc-a,aidc-a,aidc-b",
                       "-c", "0", "--timeout", "600"]) == sw


@pytest.mark.parametrize("change, option, value", [
    ({"ops": "all_reduce,allreduce"}, "--ops", "allreduce"),
    ({"ops": "all_to_all", "algo": "hierarchical"}, "--ops", "all_to_all"),
    ({"begin": "64k", "end": "4k"}, "-b/-e/-f", "64k..4k"),
    ({"dtype": "float8"}, "--dtype", "float8"),
    ({"iters": 0}, "-w/-n", "(2, 0)"),
])
def test_a_wrong_option_is_refused_by_name_before_anything_is_built(change, option, value):
    with pytest.raises(SpecError) as e:
        planned(CollectivesTest(**{"backend": "gloo"} | change))
    assert e.value.file == option and value in str(e.value), str(e.value)


def test_a_wrong_op_through_the_command_ends_before_a_guest_boots():
    """verbs on this host means the guest kernel: the command must fail before it starts one."""
    res = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "collectives", "--ops", "allreduce"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--ops" in res.stderr and "allreduce" in res.stderr, res.stderr
    assert "guest" not in res.stderr.lower(), res.stderr


def test_naming_verbs_registers_it_in_a_fresh_process():
    """A rank started afresh (a host with rdma_rxe, a testbed machine: no zygote preloading the
    backend) can name "verbs" once backends.register has run, and only then."""
    code = ("import torch.distributed as dist; from metrolab.harness.dist import backends; "
            "before = 'verbs' in dist.Backend.backend_list; backends.register('verbs'); "
            "print(before, 'verbs' in dist.Backend.backend_list)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.split() == ["False", "True"], res.stderr[-2000:]
