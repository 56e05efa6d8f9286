"""Go-Back-N: what loss costs RDMA (RoCEv2 RC) throughput. Pure model, unit-tested.

On a loss the responder NAKs the next packet out of sequence and the requester resends from
the lost PSN, so everything in flight behind the lost packet (a bandwidth-delay product's worth)
is sent twice. With W packets in flight and per-packet loss p (Bertsekas & Gallager):

    efficiency = (1 - p) / (1 + (W - 1) p),   W = 1 + ceil(rate * RTT / (8 * packet_bytes))

A scaled lab (rates / k) holds k times fewer packets in flight, so the same loss costs it far
less: the model gives the full-scale figure beside every measured, scaled point (design.md).

`GbnModel` adds what a real requester does besides (issue 20; every constant comes from the
configuration or the lossless baseline, nothing is fitted per point):

- a **window**: at most `window` packets unacknowledged (rxe: RXE_MAX_UNACKED_PSNS = 128; a NIC
  holds far more), so a long path can be window-bound before any loss;
- the **line rate** the requester really reaches: the link's, or what the CPU moves (Soft-RoCE
  under emulation), read off the lossless baseline;
- **retransmission timeouts**: the responder NAKs a sequence gap once; when that NAK is lost, or
  the resent packet is lost again, or nothing follows the lost packet (the tail of the transfer),
  only the QP's timer (4.096 µs * 2^timeout) recovers it, and the line stays idle meanwhile;
- **rxe's one retry at a time** (`ack_interval`): once a NAK has started a retry, rxe's completer
  ignores further NAKs until a positive ACK arrives (rxe_comp.c: `started_retry`, cleared by
  `reset_retry_counters` on an ACK). ACKs are requested at a message's end or every 65 packets, so a
  second loss among the resent packets up to that ACK (or the ACK itself) waits for the timer. At
  1 % loss and 64-packet messages that is ~28 % of losses: a capture in the guest (0 km, 200 Mbit/s)
  read 15 timer recoveries (~68 ms) for 65 retries, each after a NAK the requester did not act on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ROCE_HEADERS = 14 + 20 + 8 + 12 + 4  # Ethernet, IPv4, UDP, BTH, ICRC
RXE_MAX_UNACKED_PSNS = 128            # drivers/infiniband/sw/rxe/rxe_param.h
RXE_MAX_PKT_PER_ACK = 64              # rxe_param.h: an ACK is requested at least every 65 packets
IB_TIMEOUT_UNIT_S = 4.096e-6          # IBA: local ACK timeout = 4.096 µs * 2^timeout


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


def timer_share(stretches: Sequence[int], loss: float, ack_loss: float | None = None) -> float:
    """The share of retries that only the timer ends, given each retry's vulnerable stretch (the
    packets resent up to the first ACK request, `capture.retry_stretches`): a loss among them, or
    of that ACK, has its NAK ignored. `GbnModel.timeout_probability` assumes each stretch runs to
    its message's end (uniform from 1 to `ack_interval`); under rxe they are shorter, because the
    ACK requests are counted across a go-back."""
    if not stretches:
        raise ValueError("no retry stretch to predict from")
    if any(s < 1 for s in stretches) or not 0 <= loss < 1:
        raise ValueError(f"stretches must be >= 1 and loss in [0, 1), got {min(stretches)}, {loss}")
    ack = loss if ack_loss is None else ack_loss
    return sum(1 - (1 - loss) ** s * (1 - ack) for s in stretches) / len(stretches)


def ib_timeout_s(exponent: int, hz: int | None = None) -> float:
    """The QP's local ACK timeout; with `hz`, rounded up to the kernel's timer ticks (rxe arms a
    jiffies timer)."""
    if not 0 <= exponent <= 31:
        raise ValueError(f"timeout exponent must be 0..31, got {exponent}")
    t = IB_TIMEOUT_UNIT_S * 2 ** exponent
    return math.ceil(t * hz) / hz if hz else t


@dataclass(frozen=True)
class GbnModel:
    """One RC requester streaming WRITEs over a path; all times in seconds, rates in bit/s.

    rate_bps: what the requester can put on the wire loss-free (min of link and CPU);
    rtt_s: the path's round trip including the hosts' own turnaround (the lab's 0 km RTT);
    window: packets allowed unacknowledged; timeout_s: the QP's retransmission timer;
    transfer_packets: packets per measured transfer (the tail: its last loss has no successor);
    ack_interval: packets between ACK requests where the requester ignores NAKs during a retry until
    the next ACK (rxe: `rxe_ack_interval(message)`); None for a requester that acts on every NAK.
    """

    rate_bps: float
    rtt_s: float
    mtu: int = 1024
    window: int = RXE_MAX_UNACKED_PSNS
    timeout_s: float = ib_timeout_s(14)
    transfer_packets: int | None = None
    ack_interval: int | None = None

    def __post_init__(self):
        if self.rate_bps <= 0 or self.rtt_s < 0 or self.mtu <= 0 or self.window < 1 or self.timeout_s < 0 \
                or (self.ack_interval is not None and self.ack_interval < 1):
            raise ValueError(f"bad Go-Back-N model parameters: {self}")

    @property
    def bdp_packets(self) -> int:
        return packets_in_flight(self.rate_bps, self.rtt_s, self.mtu)

    @property
    def in_flight(self) -> int:
        """Packets sent in one round trip: the BDP, or the window where that binds first."""
        return min(self.window, self.bdp_packets)

    @property
    def window_bound(self) -> bool:
        return self.window < self.bdp_packets

    def lossless_goodput_bps(self) -> float:
        """Payload rate without loss: the line rate, or a window per round trip."""
        wire = self.rate_bps if not self.window_bound else \
            self.window * 8 * (self.mtu + ROCE_HEADERS) / max(self.rtt_s, 1e-12)
        return wire * self.mtu / (self.mtu + ROCE_HEADERS)

    def timeout_probability(self, loss: float, ack_loss: float | None = None) -> float:
        """Per data loss, the chance that only the timer recovers it: the NAK lost, the resent
        packet lost again, a loss at the transfer's tail (nothing behind it to reveal the gap) or,
        with `ack_interval`, any loss in the retry's vulnerable stretch (every resent packet up to
        the next ACK request, and that ACK). A loss inside that stretch is itself a data loss the
        timer recovers, so this is also the share of all losses that cost a timeout."""
        ack = loss if ack_loss is None else ack_loss
        q = 1 - loss
        if self.ack_interval:
            # the lost packet sits uniformly among the interval's m packets: the resend runs from it
            # to the interval's end, j = 1..m packets, all of which must arrive, then the ACK
            m = self.ack_interval
            resent_ok = q * (1 - q ** m) / (m * loss) if loss > 0 else 1.0
            ok = (1 - ack) * resent_ok * (1 - ack)
        else:
            ok = (1 - ack) * q
        # a transfer's last packet has no successor to reveal its loss: 1 of its N packets
        tail = 1.0 / self.transfer_packets if self.transfer_packets else 0.0
        return min(1.0, 1 - ok + tail * ok)

    def _loss_cost_s(self, loss: float, ack_loss: float | None) -> tuple[float, float]:
        """Per data loss: (time resending, time lost to the timer). A NAK's retry resends what was
        in flight behind the loss. The timer runs from the last ACK: what the requester sends
        meanwhile (its window, then nothing) is discarded, so a timeout costs its whole length."""
        p_to = self.timeout_probability(loss, ack_loss)
        resend = (1 - p_to) * (self.in_flight - 1) * self.lossless_packet_s()
        return resend, p_to * (self.timeout_s + self.rtt_s)

    def efficiency(self, loss: float, ack_loss: float | None = None) -> float:
        """Goodput with loss over goodput without: each data loss costs the packets resent behind
        it and, when only the timer recovers it, the timeout spent idle."""
        if not 0 <= loss < 1 or not 0 <= (ack_loss if ack_loss is not None else 0) < 1:
            raise ValueError(f"loss must be in [0, 1), got {loss}, {ack_loss}")
        if loss == 0:
            return 1.0
        resend, idle = self._loss_cost_s(loss, ack_loss)
        return (1 - loss) / (1 + loss * (resend + idle) / self.lossless_packet_s())

    def lossless_packet_s(self) -> float:
        """Time per delivered packet without loss (line-rate or window-bound)."""
        return 8 * self.mtu / self.lossless_goodput_bps()

    def goodput_bps(self, loss: float, ack_loss: float | None = None) -> float:
        return self.lossless_goodput_bps() * self.efficiency(loss, ack_loss)

    def breakdown(self, loss: float, ack_loss: float | None = None) -> dict[str, float]:
        """Where the time goes per delivered packet (shares of the lossy total): sending, resending
        the packets behind a loss, waiting for a timer."""
        if loss == 0:
            return {"send": 1.0, "resend": 0.0, "timeout": 0.0}
        per = self.lossless_packet_s()
        resend, idle = self._loss_cost_s(loss, ack_loss)
        total = per + loss * (resend + idle)
        return {"send": per / total, "resend": loss * resend / total, "timeout": loss * idle / total}


def rxe_ack_interval(message_bytes: int, mtu: int = 1024) -> int:
    """Packets between rxe's ACK requests: a message's last packet, or every 65th packet."""
    if message_bytes <= 0 or mtu <= 0:
        raise ValueError("message size and MTU must be > 0")
    return min(math.ceil(message_bytes / mtu), RXE_MAX_PKT_PER_ACK + 1)


def rtt_for_efficiency(loss: float, rate_bps: float, mtu: int = 4096, target: float = 0.5) -> float:
    """The round trip at which plain Go-Back-N (window = BDP, no timeouts) keeps only `target` of its
    goodput at this loss: the regime a claim like "0.1 % loss halves RDMA" needs."""
    if not 0 < loss < 1 or not 0 < target < 1:
        raise ValueError("loss and target must be in (0, 1)")
    # (1 - p) / (1 + (W - 1) p) = target  ->  W - 1 = ((1 - p) / target - 1) / p
    w_minus_1 = ((1 - loss) / target - 1) / loss
    return w_minus_1 * 8 * (mtu + ROCE_HEADERS) / rate_bps
