"""The allow-list nft script (pure; the lab test loads it into namespaces)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from metrolab.harness.policy.acl import agent_hosts, clear_script, script
from metrolab.harness.policy.model import Allow

pytestmark = pytest.mark.unit

ALLOW = [Allow(a="a1", b="b1", ports=[29500], proto="tcp"), Allow(a="a2", b="b1"),
         Allow(a="b1", b="a1", ports=[53, 5353])]
ADDR = {"a1": ["10.1.0.1", "fd00:1::1"], "a2": ["10.1.0.2"], "b1": ["10.2.0.1"]}


def test_rules_for_each_agent_host():
    assert agent_hosts(ALLOW) == ["a1", "b1", "a2"]
    b1 = script("b1", ALLOW, ADDR)
    assert "ip saddr 10.1.0.1 tcp dport { 29500 } accept" in b1
    assert "ip6 saddr fd00:1::1 tcp dport { 29500 } accept" in b1
    assert "ip saddr 10.1.0.2 accept" in b1 and "policy drop" in b1
    a1 = script("a1", ALLOW, ADDR)
    assert "ip saddr 10.2.0.1 meta l4proto { tcp, udp } th dport { 53, 5353 } accept" in a1
    assert "10.1.0.2" not in a1  # a2 may not reach a1
    assert script("a2", ALLOW, ADDR).count("saddr") == 0  # a2 accepts nobody (but its own replies)


def test_scripts_parse():
    assert shutil.which("nft"), "nft is installed by scripts/install.sh"
    for text in (script("b1", ALLOW, ADDR), clear_script()):
        out = subprocess.run(["nft", "-c", "-f", "-"], input=text, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
