"""What the transports of a workload's hosts counted during one repetition: the RDMA devices
(rxe's hw_counters, or a NIC's) and each host's TCP stack (its namespace's SNMP counters). Loss at
work where the queues' drop counters do not see it: a packet lost before any qdisc, a go-back, a
retransmission timeout, a tail-loss probe."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from metrolab.harness.kernel.counters import hw_counters, tcp_counters

# metric -> the device counter summed over the hosts
RDMA = {
    "rdma_sent_pkts": "sent_pkts",
    "rdma_seq_naks": "rcvd_seq_err",          # requesters: NAKs (sequence error) received -> go back N
    "rdma_out_of_seq": "out_of_seq_request",  # responders: packets after a gap, discarded
    "rdma_retries": "completer_retry_err",    # requesters: retransmissions (NAK or timeout)
    "rdma_retry_exceeded": "retry_exceeded_err",
    "rdma_send_errors": "send_err",           # requesters: packets the IP layer refused to send
}
# metric -> the TCP stack's counter (or counters) summed over the hosts (a testbed host's: its machine's)
TCP: dict[str, str | tuple[str, ...]] = {
    # OutSegs leaves resent segments out (RFC 2012): sent = new ones (data, ACKs) + resent ones
    "tcp_sent_segs": ("Tcp:OutSegs", "Tcp:RetransSegs"),
    "tcp_retrans_segs": "Tcp:RetransSegs",     # every segment lost and recovered, and spurious resends
    "tcp_timeouts": "TcpExt:TCPTimeouts",      # recoveries by the retransmission timer (200 ms at the least)
    "tcp_loss_probes": "TcpExt:TCPLossProbes",  # tail-loss probes (about 2 RTTs after a flight's last segment)
}


class Counters:
    """A set of counters read on each of `nodes` before and after a repetition (`read(node)`), and the
    metrics their differences sum to. A host is read once, however many ranks it runs."""

    def __init__(self, nodes: list[str], read: Callable[[str], dict[str, int]],
                 metrics: Mapping[str, str | tuple[str, ...]]):
        self.nodes, self._read, self.map = list(dict.fromkeys(nodes)), read, metrics

    def read(self) -> dict[str, dict[str, int]]:
        return {n: self._read(n) for n in self.nodes}

    def metrics(self, before: dict, after: dict) -> dict[str, int]:
        if not self.nodes:
            return {}
        return {m: sum(after[n].get(c, 0) - before[n].get(c, 0) for n in self.nodes
                       for c in ((cs,) if isinstance(cs, str) else cs)) for m, cs in self.map.items()}


def rdma_counters(lab, nodes: list[str]) -> Counters:
    """The RDMA devices of `nodes`, read where each lives (lab.on)."""
    return Counters(nodes, lambda n: lab.on(n, hw_counters, lab.rxe_device(n)), RDMA)


def tcp_stack_counters(lab, nodes: list[str]) -> Counters:
    """The TCP stacks of `nodes`: every connection of the host's namespace (a testbed's: its machine's)."""
    return Counters(nodes, lambda n: lab.on(n, tcp_counters), TCP)
