"""Go-Back-N: what loss costs RDMA (RoCEv2 RC) throughput. Pure model, unit-tested.

On a loss the responder NAKs the next packet out of sequence and the requester resends from
the lost PSN, so everything in flight behind the lost packet (a bandwidth-delay product's worth)
is sent twice. With W packets in flight and per-packet loss p (Bertsekas & Gallager):

    efficiency = (1 - p) / (1 + (W - 1) p),   W = 1 + ceil(rate * RTT / (8 * packet_bytes))

A scaled lab (rates / k) holds k times fewer packets in flight, so the same loss costs it far
less: the model gives the full-scale figure beside every measured, scaled point (design.md).
"""

from __future__ import annotations

import math

ROCE_HEADERS = 14 + 20 + 8 + 12 + 4  # Ethernet, IPv4, UDP, BTH, ICRC


def packets_in_flight(rate_bps: float, rtt_s: float, mtu: int = 1024) -> int:
    if rate_bps <= 0 or rtt_s < 0 or mtu <= 0:
        raise ValueError("rate and MTU must be > 0 and RTT >= 0")
    return 1 + math.ceil(rate_bps * rtt_s / (8 * (mtu + ROCE_HEADERS)))


def gbn_efficiency(loss: float, rate_bps: float, rtt_s: float, mtu: int = 1024) -> float:
    """Fraction of the loss-free goodput that Go-Back-N keeps at per-packet loss `loss`."""
    if not 0 <= loss < 1:
        raise ValueError(f"loss must be in [0, 1), got {loss}")
    w = packets_in_flight(rate_bps, rtt_s, mtu)
    return (1 - loss) / (1 + (w - 1) * loss)


def gbn_throughput_bps(loss: float, rate_bps: float, rtt_s: float, mtu: int = 1024) -> float:
    """Expected RDMA WRITE goodput (payload bit/s) on a link of `rate_bps`."""
    payload_share = mtu / (mtu + ROCE_HEADERS)
    return rate_bps * payload_share * gbn_efficiency(loss, rate_bps, rtt_s, mtu)
