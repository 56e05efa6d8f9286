"""The ssh agent's loader run here by the machine's kind of Python — the system's python3 without
its site-packages (-S): only the standard library and the bundle — as ssh runs it on a switch.
The sandbox tests run it over ssh on every switch and WAN emulator."""

from __future__ import annotations

import base64
import shutil
import sys
import time

import pytest

from metrolab.harness.errors import LabError
from metrolab.harness.lab import remote
from metrolab.harness.policy import node
from metrolab.harness.testbed.agent import LOADER, Session, answer

pytestmark = pytest.mark.unit
BARE = (shutil.which("python3", path="/usr/bin"), "-S")


@pytest.fixture
def here():
    s = Session([*BARE, "-c", LOADER], "here")
    yield s
    s.close()


def test_the_operations_import_from_the_bundle_alone_on_a_bare_python(here):
    got = here.call(remote.imports, (), {}, 60)
    assert got["foreign"] == [] and got["python"].startswith("3."), got
    # a function's result comes back as a value, call after call on one session
    assert here.call(node.read_sysctls, (["net.ipv4.ip_forward"],), {}, 60) == node.read_sysctls(["net.ipv4.ip_forward"])
    # a module that needs a compiled dependency fails there; where the machine happens to have it,
    # check names it (the lab plan's pydantic models: never among the operations)
    with pytest.raises(ModuleNotFoundError, match="pydantic"):
        here.call(remote.imports, (("metrolab.harness.lab.plan",),), {}, 60)
    venv = Session([sys.executable, "-c", LOADER], "venv")
    try:
        assert "pydantic" in venv.call(remote.imports, (("metrolab.harness.lab.plan",),), {}, 60)["foreign"]
    finally:
        venv.close()


def test_an_error_there_is_raised_here_as_itself_and_the_session_goes_on(here):
    # configure refuses a port the machine lacks before it changes anything: the error names it
    with pytest.raises(LookupError, match="no interface nosuchport0"):
        here.call(remote.configure, ([{"ifname": "nosuchport0", "local": "10.99.0.1", "peer": None}], [], []), {}, 60)
    assert here.call(print, ("noise on stdout",), {}, 60) is None  # prints go to stderr, not the answers
    assert here.call(remote.imports, (), {}, 60)["foreign"] == []
    # a call that outlives its timeout ends the session; one whose machine is gone names why
    with pytest.raises(LabError, match=r"no answer from sleep within 0\.5 s"):
        here.call(time.sleep, (5,), {}, 0.5)
    assert not here.alive
    refused = ["/bin/sh", "-c", "echo 'ssh: connect to host 10.0.0.9 port 22: Connection refused' >&2; exit 255"]
    with pytest.raises(LabError, match=r"machine gone: .*connection closed \(rc 255\): ssh: connect"):
        Session(refused, "machine gone").call(remote.imports, (), {}, 10)  # refused sending the bundle, or after


def test_an_answer_the_controller_cannot_rebuild_is_named():
    # a pickle naming a class this side does not have (a module only the machine had)
    with pytest.raises(LabError, match="an answer this controller cannot read"):
        answer(base64.b64encode(b"cnosuchmodule\nThing\n."))
