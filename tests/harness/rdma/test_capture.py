"""The capture's analysis on synthetic frames (no RDMA device): a Go-Back-N recovery's timeline."""

import pandas as pd
import pytest

from metrolab.harness.rdma.capture import recoveries, retry_stretches, timer_stalls

pytestmark = pytest.mark.unit


def _frame(rows, asks=()):
    """Frames of (t, outgoing, kind, dqpn, psn); the requests at row positions `asks` ask for an ACK."""
    df = pd.DataFrame(rows, columns=["t", "outgoing", "kind", "dqpn", "psn"])
    df["ack_req"] = [i in asks for i in range(len(df))]
    req = df["kind"] == "request"
    df["retransmit"] = False
    df.loc[req, "retransmit"] = df[req].duplicated(subset=["dqpn", "psn"], keep="first")
    return df


def test_a_recovery_reads_loss_nak_stall_and_resend_off_the_wire():
    # QP 0x11 sends PSN 0..9 every ms; PSN 3 is lost; the NAK (to requester QPN 0x22) comes at 6.5 ms;
    # the requester sends nothing from 9 ms until it resends 3..9 from 20 ms
    rows = [(i * 1e-3, True, "request", 0x11, i) for i in range(10)]
    rows += [(6.5e-3, False, "nak", 0x22, 3)]
    rows += [(20e-3 + k * 1e-3, True, "request", 0x11, 3 + k) for k in range(7)]
    # another QP whose PSNs overlap, sent long before: not the one NAKed
    rows += [(-5e-3, True, "request", 0x33, 3)]
    rec = recoveries(_frame(sorted(rows)))
    assert len(rec) == 1
    r = rec.iloc[0]
    assert (r["dqpn"], r["psn"]) == (0x11, 3)
    assert r["loss_to_nak_s"] == pytest.approx(3.5e-3) and r["nak_to_resend_s"] == pytest.approx(13.5e-3)
    assert r["idle_s"] == pytest.approx(11e-3)           # 9 ms -> 20 ms: the sender stalled
    assert r["sent_meanwhile"] == 6                      # PSN 4..9, all to be sent again


def test_no_nak_no_recovery():
    rows = [(i * 1e-3, True, "request", 0x11, i) for i in range(5)]
    assert recoveries(_frame(rows)).empty


def test_a_timer_stall_is_a_silence_ended_by_a_resend_without_its_nak():
    # PSN 0..9 every ms; the window fills at 9 ms; a NAK for PSN 3 arrived at 5 ms and was ignored
    # (rxe in a retry); no ACK since; the timer resends from PSN 3 at 75 ms
    rows = [(i * 1e-3, True, "request", 0x11, i) for i in range(10)]
    rows += [(5e-3, False, "nak", 0x22, 3)]
    rows += [(75e-3 + k * 1e-3, True, "request", 0x11, 3 + k) for k in range(3)]
    stalls = timer_stalls(_frame(sorted(rows)), timeout_s=0.068)
    assert len(stalls) == 1 and stalls.iloc[0]["psn"] == 3
    assert stalls.iloc[0]["idle_s"] == pytest.approx(66e-3)
    # an ignored NAK for that PSN may arrive during the silence: the timer still ends it
    assert len(timer_stalls(_frame(sorted(rows + [(20e-3, False, "nak", 0x22, 3)])), timeout_s=0.068)) == 1
    # an ACK shortly before the resend restarted the timer: not the timer's recovery
    assert timer_stalls(_frame(sorted(rows + [(70e-3, False, "ack", 0x22, 2)])), timeout_s=0.068).empty
    # a NAK followed by its resend within milliseconds is a NAK's retry
    rows += [(74e-3, False, "nak", 0x22, 3)]
    assert timer_stalls(_frame(sorted(rows)), timeout_s=0.068).empty
    # a pause in new sends (no retransmission after it) is the application, not the timer
    quiet = [(0.0, True, "request", 0x11, 0), (0.2, True, "request", 0x11, 1)]
    assert timer_stalls(_frame(quiet), timeout_s=0.068).empty


def test_a_retrys_stretch_runs_to_the_first_ack_request_it_sends():
    # PSN 0..9 (9 asks), then a go-back to 3 that asks again at PSN 5 (rxe's count of packets
    # without a request runs across the go-back), then a go-back to 7 that the capture cuts off
    rows = [(i * 1e-3, True, "request", 0x11, i) for i in range(10)]
    rows += [(20e-3 + k * 1e-3, True, "request", 0x11, 3 + k) for k in range(4)]   # rows 10..13: PSN 3..6
    rows += [(40e-3 + k * 1e-3, True, "request", 0x11, 5 + k) for k in range(2)]   # rows 14..15: PSN 5..6
    st = retry_stretches(_frame(rows, asks={9, 12}))
    assert st["psn"].tolist() == [3, 5]
    assert st["stretch"].iloc[0] == 3                  # PSN 3, 4 and 5, which asks
    assert pd.isna(st["stretch"].iloc[1])              # no request asked before the capture ended
    assert retry_stretches(_frame(rows[:10], asks={9})).empty


def test_headers_read_as_scapy_dissects_them_and_read_responses_are_not_requests():
    """to_frame reads the headers at fixed offsets (scapy cost ~20 ms a frame under TCG); scapy's
    dissection of the same frames is the reference: addresses, TOS, opcode, QPN, PSN, AckReq and the ACK's
    AETH syndrome. Frames that are not RoCEv2 (another UDP port, TCP, IPv6, a cut BTH) are left out."""
    from scapy.contrib.roce import AETH, BTH
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether

    from metrolab.harness.rdma.capture import to_frame
    from metrolab.harness.rdma.packets import OPCODES, craft

    frames = []
    for i, op in enumerate(OPCODES):
        aeth = bytes([(i * 37) & 0xFF, 0, 1, i])  # syndromes of every kind across the opcodes
        frames.append(bytes(craft(f"10.1.0.{i + 1}", "10.2.0.9", opcode=op, dqpn=0x10000 + i * 4099,
                                  psn=(i * 1000003) & 0xFFFFFF, dscp=i % 64, ecn=i % 4, ackreq=i % 3 == 0,
                                  payload=aeth + b"d" * 32)))
    tagged = Ether(frames[0])
    frames.append(bytes(Ether(dst=tagged.dst, src=tagged.src) / Dot1Q(vlan=7) / tagged[IP]))
    others = [Ether() / IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1, dport=4792) / (b"\x11" * 40),
              Ether() / IP(src="10.1.0.1", dst="10.2.0.1") / TCP(sport=4791, dport=4791),
              Ether() / IPv6() / UDP(sport=1, dport=4791) / (b"\x11" * 40),
              Ether() / IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1, dport=4791) / (b"\x11" * 8)]
    df = to_frame([(k * 1e-3, k % 2 == 0, f) for k, f in enumerate(frames + [bytes(o) for o in others])])
    assert len(df) == len(frames)
    for (_, row), raw in zip(df.iterrows(), frames):
        pkt = Ether(raw)
        want = (pkt[IP].src, pkt[IP].dst, (pkt[IP].tos & 3) == 3, pkt[BTH].opcode, pkt[BTH].dqpn, pkt[BTH].psn,
                bool(pkt[BTH].ackreq))
        assert (row["src"], row["dst"], row["ecn_ce"], row["opcode"], row["dqpn"], row["psn"], row["ack_req"]) == want
        if AETH in pkt:  # scapy binds AETH to the RC ACK only
            assert row["syndrome"] == pkt[AETH].syndrome
            assert row["kind"] == {0: "ack", 1: "rnr_nak", 3: "nak"}.get(pkt[AETH].syndrome >> 5, "ack")
    kinds = dict(zip(df["opcode"], df["kind"]))
    assert all(kinds[OPCODES[op]] == "read_response" for op in OPCODES if "READ_RESPONSE" in op)
    assert kinds[OPCODES["CNP"]] == "cnp" and kinds[OPCODES["RC_RDMA_WRITE_ONLY"]] == "request"
