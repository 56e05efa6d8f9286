"""Policies applied to a netns lab on the host kernel (nftables)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness import sh
from harness.policy.apply import PolicyApplier
from harness.policy.model import Allow, PolicySpec
from tests.support.labs import in_ns, rdma_sites

pytestmark = pytest.mark.lab

SERVER = """
import socket, sys
s = socket.create_server(("0.0.0.0", int(sys.argv[1])))
while True:
    c, _ = s.accept()
    c.sendall(b"ok")
    c.close()
"""
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5) as c:
        print(c.recv(2).decode())
except OSError as exc:
    print(type(exc).__name__)
"""


def connects(lab, src: str, dst: str, port: int) -> bool:
    out = in_ns(lab, src, sys.executable, "-c", CLIENT, str(lab.topology.nodes[dst].address), str(port))
    return out.stdout.strip() == "ok"


def test_allow_list_admits_named_pairs_and_drops_the_rest(lab_factory):
    lab = lab_factory(rdma_sites((2, 1), rdma=False))
    servers = [sh.popen([sys.executable, "-c", SERVER, str(p)], netns=lab.ns("b1"), stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL) for p in (29500, 29600)]
    try:
        time.sleep(1.0)
        assert connects(lab, "a2", "b1", 29500) and connects(lab, "a1", "b1", 29600)  # open before
        applier = PolicyApplier(lab)
        applier.apply(PolicySpec(name="agents", allow=[Allow(a="a1", b="b1", ports=[29500], proto="tcp")]))
        assert connects(lab, "a1", "b1", 29500)            # the named pair and port
        assert not connects(lab, "a1", "b1", 29600)        # another port of the same pair
        assert not connects(lab, "a2", "b1", 29500)        # a pair not on the list
        applier.apply(None)                                # switching the policy off leaves nothing
        assert connects(lab, "a2", "b1", 29500)
        listed = in_ns(lab, "b1", "nft", "list", "tables").stdout
        assert "metrolab_acl" not in listed
    finally:
        for s in servers:
            s.kill()
            s.wait()
