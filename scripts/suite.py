"""The suite's entry point (scripts/test.sh): pytest, and pytest's exit status.

A CI run printed its summary (3 failed, 480 passed) and then exited 139: a native library crashed
while the interpreter tore itself down, after every test had reported, and the crash replaced
pytest's verdict. Here the exit handlers run as they would (atexit: fixtures and our own cleanups),
the threads still alive are named on stderr (what a teardown crash would involve), and the process
then ends with pytest's status without the teardown. faulthandler stays on: a crash before this
point prints every thread's stack.
"""

from __future__ import annotations

import atexit
import faulthandler
import os
import sys
import threading


def main(argv: list[str]) -> int:
    import pytest

    faulthandler.enable()
    rc = int(pytest.main(argv))
    atexit._run_exitfuncs()  # what interpreter shutdown runs first; the teardown after it is skipped
    tasks = set(os.listdir("/proc/self/task"))
    # a thread Python did not start (a native library's callback) stays listed as Dummy-N after its
    # end (threading keeps it in 3.11): only the ones whose kernel task is still there are running
    python = sorted(t.name for t in threading.enumerate()
                    if t is not threading.main_thread() and str(t.native_id) in tasks)
    native = len(tasks) - 1 - len(python)
    if python or native > 0:
        print(f"suite: exiting {rc} with {len(python)} python thread(s) {python} and {native} native one(s) "
              "still running", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    return rc


if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # as `python -m pytest` has it (the repository root), not scripts/
    os._exit(main(sys.argv[1:]))
