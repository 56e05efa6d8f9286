"""A small two-site scenario and the CLI as a subprocess, for the tests that run scenarios."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.labs import wan_pair

TOPO = wan_pair(name="rl", rate="200mbit")


def scenario(tmp_path: Path, **over) -> Path:
    data = {"name": "rl", "topology": TOPO,
            "workloads": [{"kind": "collective", "params": {"backend": "gloo", "size": "1m", "iters": 2}}],
            "sweep": {"convergence": [1, 2, 4]}, "repetitions": 2, "warmups": 1,
            # no warm passes through every point, as --quick: these runs are smoke-sized and what their
            # tests assert holds from the first block (the one test of the passes asks for them)
            "warm_blocks": {"min": 0, "max": 0},
            # the 1:1 point is the baseline's own network: ~1.0, but a noisy block (CV > 5 %) doubles
            # its interval (a clean-clone run: 0.94, [0.64, 1.27] against 0.7: inconclusive), so the
            # bar sits where only a broken comparison falls
            "acceptance": ["efficiency >= 0.5 where convergence in [1, 1]", "busbw_gbs > 0"]} | over
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def metrolab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metrolab.harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ | {"METROLAB_PLAIN": "1"})
