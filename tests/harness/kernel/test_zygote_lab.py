"""The rank zygote (used in the guest, tested here on the host): a forked child runs its module or code
in the named network namespace with the caller's pipes and environment, and its exit status comes back,
also while another thread polls."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

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


def test_lab_clean_removes_a_killed_runs_zygote_and_keeps_a_live_one(tmp_path):
    env = os.environ | {"METROLAB_STATE_DIR": str(tmp_path)}
    run = subprocess.Popen([sys.executable, "-c", "from metrolab.harness.kernel.zygote import Zygote\n"
                            "z = Zygote(); z.wait_ready(); print(z.dir, flush=True)\n"
                            "import time; time.sleep(600)"], env=env, stdout=subprocess.PIPE, text=True)
    killed = run.stdout.readline().strip()
    run.kill()  # SIGKILL: no atexit; its zygote sees its parent gone and ends, leaving its socket
    run.wait()
    deadline = time.monotonic() + 10
    while any(f"zygote {killed}/sock" in _cmdline(p) for p in os.listdir("/proc") if p.isdigit()):
        assert time.monotonic() < deadline, "the killed run's zygote did not end"
        time.sleep(0.05)
    live = Path(tempfile.mkdtemp(prefix="zygote-", dir=tmp_path))  # a live one: a listener on its socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(live / "sock"))
        srv.listen(1)
        starting = Path(tempfile.mkdtemp(prefix="zygote-", dir=tmp_path))  # importing: no socket yet
        res = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "lab", "clean", "--json"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"zygote:{Path(killed).name}" in json.loads(res.stdout)["removed"]
    assert not Path(killed).exists() and live.exists() and starting.exists()


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
