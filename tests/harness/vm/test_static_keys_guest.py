"""The guest holds on the static keys that tests flip (harness/vm/guest_pin.sh): under multi-threaded
TCG, a key flipping while the other vCPU runs one of its sites crashed the guest (int3 oops)."""

from __future__ import annotations

import socket
import time

import pytest

from metrolab.harness import settings
from tests.support.static_keys import kallsyms, keys_on, nf_hook_key

pytestmark = pytest.mark.requires("netem")  # runs where the guest runs: the guest tier here

NAMED = ["netstamp_needed_key", "ingress_needed_key", "egress_needed_key",
         "udp_encap_needed_key", "udpv6_encap_needed_key"]


def _keys() -> dict[str, int | None]:
    base = kallsyms({"nf_hooks_needed"})["nf_hooks_needed"]
    nf = {f"nf_hooks_needed[{fam}][{hook}]": nf_hook_key(base, fam, hook)
          for fam in ("ipv4", "ipv6") for hook in ("prerouting", "input", "forward", "output", "postrouting")}
    nf["nf_hooks_needed[netdev][ingress]"] = nf_hook_key(base, "netdev", "prerouting")  # NF_NETDEV_INGRESS = 0
    return {**dict.fromkeys(NAMED), **nf}


def test_the_keys_tests_flip_stay_on():
    if not settings.in_guest():
        pytest.skip("only metrolab's guest pins keys: a host kernel is not patched under TCG")
    keys = _keys()
    assert {k for k, on in keys_on(keys).items() if not on} == set()
    # what flipped netstamp in CI: a timestamping socket opened, then closed (the key drops in a
    # workqueue after the close; an unpinned key reads off again a moment later)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
    s.close()
    time.sleep(1)
    assert {k for k, on in keys_on(keys).items() if not on} == set()
