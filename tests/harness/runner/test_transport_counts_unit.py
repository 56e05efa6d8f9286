"""The transports' counters around a repetition: /proc/net/snmp's layout read, and the metrics as
differences summed over the hosts, each host once."""

from __future__ import annotations

import pytest

from metrolab.harness.kernel.counters import snmp_counters, tcp_counters
from metrolab.harness.runner.transport_counts import Counters, rdma_counters, tcp_stack_counters

pytestmark = pytest.mark.unit

SNMP = """Ip: Forwarding DefaultTTL
Ip: 1 64
Tcp: RtoAlgorithm MaxConn OutSegs RetransSegs
Tcp: 1 -1 852 466
"""


class Lab:
    """Where each node's counters are read: a dict per node, as lab.on(node, fn) returns them."""

    def __init__(self, counts: dict[str, dict[str, int]]):
        self.counts, self.calls = counts, []

    def on(self, node, fn, *args):
        self.calls.append(node)
        return self.counts[node]

    def rxe_device(self, node):
        return f"rxe-{node}"


def test_snmp_lines_pair_names_with_values_per_protocol():
    assert snmp_counters(SNMP) == {"Ip:Forwarding": 1, "Ip:DefaultTTL": 64, "Tcp:RtoAlgorithm": 1,
                                   "Tcp:MaxConn": -1, "Tcp:OutSegs": 852, "Tcp:RetransSegs": 466}
    here = tcp_counters()  # this machine's, both files
    assert {"Tcp:OutSegs", "Tcp:RetransSegs", "TcpExt:TCPTimeouts", "TcpExt:TCPLossProbes"} <= set(here)


def test_rdma_metrics_sum_the_hosts_devices():
    before = {"a1": {"sent_pkts": 10, "rcvd_seq_err": 1}, "b1": {"out_of_seq_request": 0}}
    after = {"a1": {"sent_pkts": 110, "rcvd_seq_err": 4, "completer_retry_err": 3}, "b1": {"out_of_seq_request": 40}}
    c = rdma_counters(Lab(before), ["a1", "b1"])
    assert c.read() == before
    assert c.metrics(before, after) == {"rdma_sent_pkts": 100, "rdma_seq_naks": 3, "rdma_out_of_seq": 40,
                                        "rdma_retries": 3, "rdma_retry_exceeded": 0, "rdma_send_errors": 0}
    assert rdma_counters(None, []).metrics({}, {}) == {}


def test_tcp_sent_counts_new_and_resent_segments_and_a_host_of_two_ranks_once():
    before = {"a1": {"Tcp:OutSegs": 100, "Tcp:RetransSegs": 1}, "b1": {"Tcp:OutSegs": 50}}
    after = {"a1": {"Tcp:OutSegs": 900, "Tcp:RetransSegs": 41, "TcpExt:TCPTimeouts": 2, "TcpExt:TCPLossProbes": 3},
             "b1": {"Tcp:OutSegs": 450}}
    lab = Lab(before)
    c = tcp_stack_counters(lab, ["a1", "a1", "b1"])  # two ranks on a1
    c.read()
    assert lab.calls == ["a1", "b1"]
    # sent: 800 + 400 new, 40 resent (OutSegs leaves resent ones out)
    assert c.metrics(before, after) == {"tcp_sent_segs": 1240, "tcp_retrans_segs": 40, "tcp_timeouts": 2,
                                        "tcp_loss_probes": 3}
    assert Counters([], tcp_counters, {}).metrics({}, {}) == {}
