"""scripts/suite.py: pytest's exit status, and the threads still running named on the way out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
SUITE = Path(__file__).parents[2] / "scripts" / "suite.py"

# a thread threading did not start (what a native library's callback is) and has ended, and a
# Python thread still blocked when pytest returns
THREADS = """
import _thread, threading, time

def test_threads():
    # the waiting one first: a thread started after the native one ended would reuse its ident,
    # and with it the Dummy's place in threading's table
    threading.Thread(target=threading.Event().wait, name="still-waiting", daemon=True).start()
    done = threading.Event()
    _thread.start_new_thread(lambda: (threading.current_thread(), done.set()), ())
    assert done.wait(10)
    time.sleep(0.2)
    assert any(t.name.startswith("Dummy") for t in threading.enumerate())

def test_fails():
    assert {fails}
"""


@pytest.mark.parametrize("fails", [False, True])
def test_the_exit_status_is_pytests_and_only_running_threads_are_named(tmp_path, fails):
    (tmp_path / "test_threads.py").write_text(THREADS.format(fails=not fails))
    res = subprocess.run([sys.executable, str(SUITE), "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == (1 if fails else 0), res.stdout[-2000:]
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("suite: exiting"))
    # the ended one is still in threading.enumerate() as Dummy-N (Python 3.11), and not named
    assert "['still-waiting'] and 0 native" in line and "Dummy" not in line, line
