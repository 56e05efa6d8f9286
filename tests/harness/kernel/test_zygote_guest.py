"""The rank zygote in the guest, where a run's output directory is a 9p share: a run whose output is in
/tmp (`metrolab rdma gbn --out /tmp/x.jsonl`) puts 9p over the guest's /tmp, where a Unix socket cannot
be bound (ENXIO). Seen by hand: `rdma gbn` failed 'the rank zygote did not start' with its output in /tmp."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from metrolab.harness import settings

pytestmark = pytest.mark.requires("netem")  # runs where the guest runs: the guest tier here


def test_the_zygote_starts_where_the_temp_dir_is_a_9p_share():
    if not settings.in_guest():
        pytest.skip("only metrolab's guest has 9p shares: the host's temp dir binds sockets")
    # the guest tier's report directory is such a share (tests/support/guest_tier.py)
    share = Path(tempfile.mkdtemp(dir=Path(settings.get("METROLAB_GUEST_REPORT")).parent))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(OSError):  # what the zygote must avoid: else this test shows nothing
        probe.bind(str(share / "sock"))
    probe.close()
    code = "from metrolab.harness.kernel.zygote import Zygote; Zygote.get().wait_ready(); print('zygote ready')"
    res = subprocess.run([sys.executable, "-c", code], env=os.environ | {"TMPDIR": str(share)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "zygote ready" in res.stdout, res.stderr[-2000:]
