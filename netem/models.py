"""Pure link models: fiber delay, bandwidth-delay product, queue sizing, convergence.

No kernel access here, so every function is unit-tested without a lab.
"""

from __future__ import annotations

import math

C_VACUUM_KM_S = 299_792.458
DEFAULT_GROUP_INDEX = 1.468  # standard single-mode fiber at 1550 nm -> ~4.9 us/km
DEFAULT_MTU = 1500
ETH_OVERHEAD = 14  # what tc counts per packet above the IP MTU on a veth
NETEM_DEFAULT_LIMIT = 1000  # packets; tail-drops at metro distances, so never used as is


def fiber_delay_s(distance_km: float, group_index: float = DEFAULT_GROUP_INDEX) -> float:
    """One-way propagation delay of `distance_km` of fiber, in seconds."""
    if distance_km < 0:
        raise ValueError(f"distance_km must be >= 0, got {distance_km}")
    if group_index < 1:
        raise ValueError(f"group_index must be >= 1, got {group_index}")
    return distance_km * group_index / C_VACUUM_KM_S


def link_delay_s(distance_km: float = 0.0, hops: int = 0, hop_latency_s: float = 0.0,
                 group_index: float = DEFAULT_GROUP_INDEX) -> float:
    """One-way delay of a link: fiber propagation plus per-hop device latency."""
    if hops < 0 or hop_latency_s < 0:
        raise ValueError("hops and hop_latency_s must be >= 0")
    return fiber_delay_s(distance_km, group_index) + hops * hop_latency_s


def bdp_bytes(rate_bps: float, rtt_s: float) -> float:
    """Bandwidth-delay product: bytes in flight to fill a pipe of `rate_bps` over `rtt_s`."""
    if rate_bps < 0 or rtt_s < 0:
        raise ValueError("rate and RTT must be >= 0")
    return rate_bps * rtt_s / 8


def netem_limit_packets(rate_bps: float, one_way_delay_s: float, mtu: int = DEFAULT_MTU,
                        headroom: float = 1.5, queue_packets: int = 0, floor: int = 64) -> int:
    """netem queue limit (packets) that holds the delay line without tail drops.

    netem keeps every delayed packet in its queue, so the limit must cover rate x delay
    worth of full-size packets (x headroom) plus the buffer the link is meant to have.
    """
    if mtu <= 0 or headroom < 1:
        raise ValueError("mtu must be > 0 and headroom >= 1")
    in_flight = rate_bps * one_way_delay_s / 8 / (mtu + ETH_OVERHEAD)
    return max(floor, math.ceil(in_flight * headroom) + queue_packets)


def convergence_rate_bps(access_rate_bps: float, access_links: int, ratio: float) -> float:
    """WAN rate for a convergence (oversubscription) ratio: total access capacity / ratio."""
    if ratio < 1:
        raise ValueError(f"convergence ratio must be >= 1 (e.g. 32 for 32:1), got {ratio}")
    if access_links < 1 or access_rate_bps <= 0:
        raise ValueError("need at least one access link with a positive rate")
    return access_rate_bps * access_links / ratio




def tbf_burst_bytes(rate_bps: float, burst_s: float = 1e-3, mtu: int = DEFAULT_MTU) -> int:
    """TBF bucket: `burst_s` of traffic (at least a timer tick; below that TBF under-shoots) and a few MTUs.

    1 ms suits a host kernel; under QEMU TCG timers fire late and TBF needs ~5 ms to reach its rate.
    """
    return max(int(rate_bps / 8 * burst_s), 10 * (mtu + ETH_OVERHEAD), 16 * 1024)


def binomial_interval(n: int, p: float, z: float = 2.5758) -> tuple[float, float]:
    """Interval (as counts) that holds `Binomial(n, p)` with the given z (default 99 %)."""
    mean = n * p
    sd = math.sqrt(n * p * (1 - p))
    return max(0.0, mean - z * sd), mean + z * sd
