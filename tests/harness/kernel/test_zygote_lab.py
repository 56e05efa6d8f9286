"""The rank zygote (used in the guest, tested here on the host): a forked child runs its module or code
in the named network namespace with the caller's pipes and environment, and its exit status comes back,
also while another thread polls."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid

import pytest
from pyroute2 import netns

from metrolab.harness.kernel import zygote as zyg
from metrolab.harness.kernel.zygote import Zygote

pytestmark = pytest.mark.requires("netns")

CODE = """
import os, socket, sys
print(sorted(name for _, name in socket.if_nameindex()), os.environ["ZYGOTE_TEST"], sys.argv[1:])
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    z.wait_ready()
    yield z
    z.close()


def test_a_child_runs_in_its_namespace_with_our_pipes_env_and_exit_code(zygote):
    ns = f"ml-zyg-{uuid.uuid4().hex[:6]}"
    netns.create(ns)
    try:
        p = zygote.popen(["-c", CODE, "3"], netns=ns, env={"ZYGOTE_TEST": "yes", "PATH": "/usr/bin:/bin"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        polled = []
        poller = threading.Thread(target=lambda: [polled.append(p.poll()) for _ in range(200)])
        poller.start()  # run_ranks polls from one thread while another drains the pipes
        out, err = p.communicate(timeout=60)
        poller.join()
        assert p.returncode == 3 and p.poll() == 3
        assert out.strip() == "['lo'] yes ['3']" and err.strip() == "to stderr"
        assert all(x in (None, 3) for x in polled)
    finally:
        netns.remove(ns)


def test_a_killed_child_reports_the_signal_and_a_module_runs_as_main(zygote):
    p = zygote.popen(["-c", "import time; time.sleep(60)"], netns=None, env={}, stdout=subprocess.DEVNULL)
    assert p.poll() is None
    p.kill()
    assert p.wait(timeout=30) == -9
    q = zygote.popen(["-m", "json.tool"], netns=None, env={}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     text=True)
    out, _ = q.communicate('{"a": 1}', timeout=60)
    assert q.returncode == 0 and '"a": 1' in out



def test_prestart_starts_it_only_where_enough_processes_follow(monkeypatch):
    """Where the zygote serves (the guest): a command that starts fewer processes than its own start
    pays for starts them afresh; a sweep of more, or torch ranks (no count given), fork from it."""
    monkeypatch.setattr(zyg, "enabled", lambda: True)
    try:
        zyg.prestart(zyg.PAYS_OFF - 1)  # e.g. rdma lat of three sizes: three pairs
        assert not Zygote.started()
        zyg.prestart(zyg.PAYS_OFF)
        assert Zygote.started()
    finally:
        if Zygote._instance is not None:
            Zygote._instance.close()
            Zygote._instance = None


def test_a_zygote_closed_before_it_serves_leaves_no_directory():
    z = Zygote()
    z.close()  # while it imports: no socket bound yet
    assert not os.path.exists(z.dir)
