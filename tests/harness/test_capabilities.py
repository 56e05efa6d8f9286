"""The capability probe reports what the kernel accepts, not what pyroute2 can encode."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from metrolab.harness import capabilities


def _kernel_accepts(kind: str, *args: str) -> bool:
    """Ask the kernel directly, in a throwaway namespace, the way qos.install_ecn builds RED."""
    ns = f"mlcap{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "c0", "type", "veth", "peer", "name", "c1"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "c0", "up"], check=True)
        return subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", "c0", "root", "handle", "1:", kind, *args],
                              capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


RED = ("limit", "400000", "min", "30000", "max", "90000", "avpkt", "1000", "burst", "50", "bandwidth", "100mbit",
       "probability", "1", "ecn")


@pytest.mark.requires("netns")
def test_red_reported_as_the_host_kernel_accepts_it():
    assert capabilities.probe().has("red") == _kernel_accepts("red", *RED)


@pytest.mark.requires("netem")  # the guest kernel has sch_red: where pyroute2's missing encoder showed as absent
def test_red_present_where_the_kernel_has_it():
    assert _kernel_accepts("red", *RED), "this kernel has no sch_red: the test needs one that does"
    cap = capabilities.probe().items["red"]
    assert cap.present, cap.detail


@pytest.mark.requires("netns")
@pytest.mark.parametrize("kind", capabilities.QDISCS)
def test_every_qdisc_reported_as_the_kernel_accepts_it(kind):
    assert capabilities.probe().has(kind) == _kernel_accepts(kind, *capabilities.QDISC_ARGS[kind])


@pytest.mark.requires("netns")
def test_without_the_right_to_make_namespaces_the_probe_says_so_and_offers_no_qdisc():
    """A process that may not make a namespace (CAP_SYS_ADMIN and CAP_NET_ADMIN dropped, as for a
    user without root) gets netns absent with the reason, and no qdisc, nft or SRv6: a lab test
    that requires("netns") then fails saying so, where the probe itself raised."""
    code = ("from metrolab.harness import capabilities as c; p = c.probe(); "
            "print([k for k in ('netns', 'nft', 'srv6', *c.QDISCS) if p.has(k)], p.items['netns'].detail)")
    res = subprocess.run(["setpriv", "--bounding-set=-sys_admin,-net_admin", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("[] cannot create a network namespace") and "root" in res.stdout, res.stdout
