"""Pure RDMA pieces: the Go-Back-N model and the RoCEv2 packet crafter (no RDMA device needed)."""

import pytest

from metrolab.harness.rdma.gbn import gbn_efficiency, gbn_throughput_bps, packets_in_flight
from metrolab.harness.rdma.packets import OPCODES, craft, decode, icrc, icrc_valid

pytestmark = pytest.mark.unit


def test_lossless_gbn_keeps_everything():
    assert gbn_efficiency(0.0, 100e9, 1e-3) == 1.0


def test_white_paper_claim_tenth_of_a_percent_halves_go_back_n_at_full_scale():
    # 100 Gb/s across 100 km (RTT ~1 ms), 4 KiB RoCE MTU: thousands of packets in flight
    assert gbn_efficiency(1e-3, 100e9, 0.98e-3, mtu=4096) < 0.5
    # the same loss barely matters on a scaled-down lab link: few packets in flight (design.md)
    assert gbn_efficiency(1e-3, 200e6, 0.98e-3) > 0.95


def test_gbn_efficiency_falls_with_loss_and_distance():
    effs = [gbn_efficiency(p, 10e9, 1e-3) for p in (1e-5, 1e-4, 1e-3, 1e-2)]
    assert effs == sorted(effs, reverse=True)
    assert gbn_efficiency(1e-4, 10e9, 4.9e-3) < gbn_efficiency(1e-4, 10e9, 0.98e-3)


def test_packets_in_flight_and_goodput():
    assert packets_in_flight(8e9, 1e-3, mtu=1000 - 58) == 1 + 1000
    assert gbn_throughput_bps(0.0, 1e9, 0) == pytest.approx(1e9 * 1024 / (1024 + 58))
    with pytest.raises(ValueError):
        gbn_efficiency(1.0, 1e9, 1e-3)


@pytest.mark.parametrize("opcode", ["RC_SEND_ONLY", "RC_RDMA_WRITE_ONLY", "RC_ACKNOWLEDGE", "CNP"])
def test_crafted_packet_decodes_field_for_field_with_a_valid_icrc(opcode):
    from scapy.layers.inet import IP
    pkt = craft("10.1.0.1", "10.2.0.1", opcode=opcode, dqpn=0xABCDE, psn=0x123456, dscp=26, ecn=3,
                payload=b"metro" * 7, sport=50000, ackreq=True)
    raw = bytes(pkt[IP])
    got = decode(raw)
    assert got["src"] == "10.1.0.1" and got["dst"] == "10.2.0.1"
    assert (got["dscp"], got["ecn"]) == (26, 3)
    assert (got["sport"], got["dport"]) == (50000, 4791)
    assert got["opcode"] == OPCODES[opcode] and got["opcode_name"] == opcode
    assert (got["dqpn"], got["psn"], got["ackreq"]) == (0xABCDE, 0x123456, True)
    assert got["icrc_ok"] is True


def test_icrc_ignores_fields_routers_may_change_and_catches_corruption():
    from scapy.layers.inet import IP
    raw = bytearray(bytes(craft("10.1.0.1", "10.2.0.1", payload=b"x" * 64)[IP]))
    assert icrc_valid(bytes(raw))
    raw[8] -= 1          # TTL decremented by a router
    raw[1] |= 3          # ECN set to CE by a switch
    assert icrc_valid(bytes(raw))
    raw[-10] ^= 0xFF     # a payload bit flipped
    assert not icrc_valid(bytes(raw))
    assert icrc(bytes(raw[:-4])) != int.from_bytes(raw[-4:], "little")


def test_model_without_timeouts_or_window_is_bertsekas_gallager():
    from metrolab.harness.rdma.gbn import GbnModel
    m = GbnModel(rate_bps=10e9, rtt_s=1e-3, window=10 ** 9, timeout_s=0.0)
    # only the (loss * rtt) idle of a lost NAK or resend remains: negligible at small loss
    assert m.efficiency(1e-5, ack_loss=0.0) == pytest.approx(gbn_efficiency(1e-5, 10e9, 1e-3), rel=1e-3)
    assert m.efficiency(0.0) == 1.0 and m.breakdown(0.0) == {"send": 1.0, "resend": 0.0, "timeout": 0.0}


def test_rxe_window_binds_long_paths_before_any_loss():
    from metrolab.harness.rdma.gbn import RXE_MAX_UNACKED_PSNS, GbnModel
    short = GbnModel(rate_bps=200e6, rtt_s=1e-3)          # 100 km at the lab's rate: 25 packets in flight
    long = GbnModel(rate_bps=200e6, rtt_s=10e-3)          # 1000 km: 232 would be, 128 may
    assert not short.window_bound and short.in_flight == short.bdp_packets < RXE_MAX_UNACKED_PSNS
    assert long.window_bound and long.in_flight == RXE_MAX_UNACKED_PSNS
    # 128 packets of 1082 wire bytes per 10 ms round trip, payload share 1024/1082
    assert long.lossless_goodput_bps() == pytest.approx(128 * 1024 * 8 / 10e-3)
    assert short.lossless_goodput_bps() == pytest.approx(200e6 * 1024 / 1082)


def test_timeouts_dominate_the_lab_where_few_packets_are_in_flight():
    from metrolab.harness.rdma.gbn import GbnModel, ib_timeout_s
    assert ib_timeout_s(14) == pytest.approx(0.0671, abs=1e-4)
    assert ib_timeout_s(14, hz=250) == pytest.approx(0.068)          # 17 ticks of 4 ms
    m = GbnModel(rate_bps=200e6, rtt_s=1e-3, timeout_s=ib_timeout_s(14, hz=250))
    # at 1 % loss a 68 ms timer after 2 % of the losses outweighs resending 25 packets after each
    b = m.breakdown(0.01)
    assert b["timeout"] > b["resend"] > 0 and sum(b.values()) == pytest.approx(1.0)
    assert m.efficiency(0.01) < gbn_efficiency(0.01, 200e6, 1e-3)
    # efficiency falls with loss and with distance
    effs = [m.efficiency(p) for p in (1e-5, 1e-4, 1e-3, 1e-2)]
    assert effs == sorted(effs, reverse=True)
    far = GbnModel(rate_bps=200e6, rtt_s=5e-3, timeout_s=m.timeout_s)
    assert far.efficiency(1e-3) < m.efficiency(1e-3)
    # a transfer's tail loss waits for the timer too: short transfers pay more
    short = GbnModel(rate_bps=200e6, rtt_s=1e-3, timeout_s=m.timeout_s, transfer_packets=64)
    assert short.timeout_probability(1e-3) > m.timeout_probability(1e-3)
    with pytest.raises(ValueError):
        GbnModel(rate_bps=0, rtt_s=1e-3)


def test_rxe_ignores_naks_during_a_retry_so_second_losses_wait_for_the_timer():
    from metrolab.harness.rdma.gbn import GbnModel, ib_timeout_s, rxe_ack_interval
    assert rxe_ack_interval(65536) == 64 and rxe_ack_interval(1 << 20) == 65 and rxe_ack_interval(100) == 1
    t = ib_timeout_s(14, hz=250)
    nic = GbnModel(rate_bps=119e6, rtt_s=0.4e-3, timeout_s=t)
    rxe = GbnModel(rate_bps=119e6, rtt_s=0.4e-3, timeout_s=t, ack_interval=64)
    # 1 %, 64-packet messages: a loss among the ~32 resent packets or the 2 control packets —
    # the guest's capture read 17 timer stalls for 65 NAKs (0.26)
    assert rxe.timeout_probability(0.01) == pytest.approx(0.28, abs=0.01)
    assert nic.timeout_probability(0.01) == pytest.approx(1 - 0.99 ** 2)
    # at small loss the stretch is (m + 1) / 2 + 2 packets long
    assert rxe.timeout_probability(1e-5) == pytest.approx(1e-5 * (65 / 2 + 2), rel=1e-3)
    assert rxe.efficiency(0.01) < nic.efficiency(0.01)
    # one-packet messages ask an ACK for each packet: the rule costs nothing beyond the plain NAK path
    one = GbnModel(rate_bps=119e6, rtt_s=0.4e-3, timeout_s=t, ack_interval=1)
    assert one.timeout_probability(0.01) == pytest.approx(1 - 0.99 ** 3)
    # the timer, not the resending, is where the time goes
    b = rxe.breakdown(0.01)
    assert b["timeout"] > b["resend"] > 0 and sum(b.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        GbnModel(rate_bps=1e6, rtt_s=0.0, ack_interval=0)


def test_the_timers_share_follows_each_retrys_own_stretch():
    from metrolab.harness.rdma.gbn import GbnModel, timer_share
    # a stretch of s resent packets and one ACK: any of the s + 1 lost leaves it to the timer
    assert timer_share([1], 0.01) == pytest.approx(1 - 0.99 ** 2)
    assert timer_share([10, 30], 0.01) == pytest.approx(1 - (0.99 ** 11 + 0.99 ** 31) / 2)
    assert timer_share([10], 0.01, ack_loss=0.0) == pytest.approx(1 - 0.99 ** 10)
    assert timer_share([5], 0.0) == 0.0
    # stretches from 1 to 64, each to its message's end, and the NAK lost too: GbnModel's rxe case
    m = GbnModel(rate_bps=1e8, rtt_s=1e-3, ack_interval=64)
    whole = [1 - (1 - timer_share([s], 0.01)) * 0.99 for s in range(1, 65)]
    assert sum(whole) / 64 == pytest.approx(m.timeout_probability(0.01))
    for bad in ([], [0]):
        with pytest.raises(ValueError):
            timer_share(bad, 0.01)


def test_the_regime_where_a_tenth_of_a_percent_halves_go_back_n():
    from metrolab.harness.rdma.gbn import rtt_for_efficiency
    rtt = rtt_for_efficiency(1e-3, 100e9, mtu=4096)        # ~1000 packets of 4 KiB in flight
    assert gbn_efficiency(1e-3, 100e9, rtt, mtu=4096) == pytest.approx(0.5, abs=0.01)
    assert 0.3e-3 < rtt < 0.45e-3                          # 100 Gb/s: past ~35 km of fiber
    assert rtt_for_efficiency(1e-3, 10e9, mtu=4096) == pytest.approx(10 * rtt)
