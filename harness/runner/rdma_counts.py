"""What the RDMA devices of a workload's hosts counted during one repetition (rxe's hw_counters,
or a NIC's): Go-Back-N at work where the queues' drop counters do not see it (a packet lost
before any qdisc, a retransmission timeout)."""

from __future__ import annotations

from metrolab.harness.kernel.counters import hw_counters

# metric -> the device counter summed over the hosts
METRICS = {
    "rdma_sent_pkts": "sent_pkts",
    "rdma_seq_naks": "rcvd_seq_err",          # requesters: NAKs (sequence error) received -> go back N
    "rdma_out_of_seq": "out_of_seq_request",  # responders: packets after a gap, discarded
    "rdma_retries": "completer_retry_err",    # requesters: retransmissions (NAK or timeout)
    "rdma_retry_exceeded": "retry_exceeded_err",
    "rdma_send_errors": "send_err",           # requesters: packets the IP layer refused to send
}


class RdmaCounters:
    def __init__(self, lab, nodes: list[str]):
        self.lab, self.nodes = lab, list(nodes)

    def read(self) -> dict[str, dict[str, int]]:
        return {n: self.lab.on(n, hw_counters, self.lab.rxe_device(n)) for n in self.nodes}

    def metrics(self, before: dict, after: dict) -> dict[str, int]:
        if not self.nodes:
            return {}
        return {m: sum(after[n].get(c, 0) - before[n].get(c, 0) for n in self.nodes) for m, c in METRICS.items()}
