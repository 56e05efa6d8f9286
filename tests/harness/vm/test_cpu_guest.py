"""What runs in the guest computes what it computes on real hardware: qemu 7.2's TCG emulates AVX2
gathers wrongly, so the guest's CPU model leaves AVX2 out (METROLAB_VM_CPU, harness/vm/qemu.py).
With it in, numpy's AVX2 argsort returned wrong orders for int64, uint64, float64, float32 and
int32 arrays in the guest, pandas' pivot (which argsorts its labels) put values in the wrong rows
or segfaulted, and torch's grid_sample differed from the host's (docs/vm.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.requires("netem")  # runs where the guest runs: the guest tier here


def test_argsort_orders_what_python_orders():
    rng = np.random.default_rng(7)
    wrong = set()
    for dtype in (np.int64, np.uint64, np.float64, np.int32, np.float32):
        for n in [*range(2, 80), 100, 257, 1000, 5000]:
            a = (rng.random(n) * 1000).astype(dtype)
            if a[a.argsort()].tolist() != sorted(a.tolist()):
                wrong.add((np.dtype(dtype).name, n))
    assert not wrong, sorted(wrong)[:20]


def test_a_pivot_of_blocks_and_points_keeps_each_value_in_its_place():
    # the shape a test reads a run's rows in: each block's two points side by side
    rows = pd.DataFrame({"block": np.repeat(np.arange(6), 2), "baseline": [True, False] * 6,
                         "step_time_s": np.arange(12, dtype=float)})
    for _ in range(5):
        step = rows.pivot(index="block", columns="baseline", values="step_time_s")
        assert step[True].tolist() == [0, 2, 4, 6, 8, 10] and step[False].tolist() == [1, 3, 5, 7, 9, 11]
