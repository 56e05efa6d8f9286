"""The switch-side flow learner's pure parts: the nft table it installs, reading its counters back,
and merging what several switches counted."""

from __future__ import annotations

import pytest

from metrolab.harness.policy import flows

pytestmark = pytest.mark.unit

DOC = {"nftables": [
    {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
    {"table": {"family": "inet", "name": "metrolab_flows", "handle": 1}},
    {"set": {"family": "inet", "name": "f4", "table": "metrolab_flows", "elem": [
        {"elem": {"val": {"concat": ["10.1.0.1", "10.2.0.1", "udp", 49153, 4791]},
                  "counter": {"packets": 10, "bytes": 10280}}},
        {"elem": {"val": {"concat": ["10.2.0.1", "10.1.0.1", "tcp", 5201, 41000]},
                  "counter": {"packets": 3, "bytes": 156}}}]}},
    {"set": {"family": "inet", "name": "f6", "table": "metrolab_flows", "elem": [
        {"elem": {"val": {"concat": ["fd00:1::1", "fd00:2::1", "udp", 50000, 4791]},
                  "counter": {"packets": 1, "bytes": 1100}}}]}},
    {"set": {"family": "inet", "name": "other", "table": "someone_else", "elem": [
        {"elem": {"val": {"concat": ["10.9.9.9", "10.1.0.1", "udp", 1, 2]}, "counter": {"bytes": 5}}}]}}]}


def test_counters_read_back_as_5_tuples_of_any_transport():
    got = flows.parse(DOC)
    assert got == {("10.1.0.1", "10.2.0.1", 49153, 4791, 17): 10280,
                   ("10.2.0.1", "10.1.0.1", 5201, 41000, 6): 156,
                   ("fd00:1::1", "fd00:2::1", 50000, 4791, 17): 1100}  # other tables are not ours


def test_merge_keeps_the_largest_count_of_a_flow_and_only_flows_between_the_hosts():
    gw_a = {("10.1.0.1", "10.2.0.1", 49153, 4791, 17): 10280, ("10.1.0.1", "10.3.0.1", 1, 2, 17): 99}
    gw_b = {("10.1.0.1", "10.2.0.1", 49153, 4791, 17): 9252,   # a packet dropped between the switches
            ("10.2.0.1", "10.1.0.1", 49153, 4791, 17): 520}    # the responder's ACKs
    got = flows.merge([gw_a, gw_b], {"10.1.0.1", "10.2.0.1"})
    assert [(f.src, f.sport, f.proto, f.bytes) for f in got] == [("10.1.0.1", 49153, 17, 10280),
                                                                 ("10.2.0.1", 49153, 17, 520)]
    assert flows.merge([gw_a], {"10.1.0.1", "10.2.0.1"}, min_bytes=20000) == []


def test_the_table_counts_both_families_on_egress_under_our_prefix():
    s = flows.script()
    assert f"table inet {flows.TABLE}" in s and flows.TABLE.startswith("metrolab_")
    assert "hook postrouting" in s and "update @f4" in s and "update @f6" in s
    assert "th sport . th dport" in s and "counter;" in s
