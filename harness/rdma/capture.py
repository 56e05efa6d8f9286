"""Capture RoCEv2 on a lab interface (inside its namespace) and analyse it: per-QP PSN
progression, retransmitted PSNs, ACK/NAK syndromes, CNPs, ECN CE marks, throughput over time. A
DataFrame plus a summary. The headers are read at their fixed offsets (`roce_header`), checked
against scapy's dissection in tests/harness/rdma/test_capture.py: scapy took ~20 ms a frame under
TCG, most of a capture test's minute and a half."""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from itertools import pairwise

import pandas as pd

from metrolab.harness.kernel.nsctx import in_netns
from metrolab.harness.rdma.packets import ROCE_PORT

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET, PACKET_STATISTICS = 263, 6  # linux/if_packet.h: struct tpacket_stats {packets, drops}
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
RCVBUF = 64 << 20
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
CMSG_SPACE = socket.CMSG_SPACE(16)  # struct timespec
DRAIN_S = 120.0  # reading out what the reader left queued (thousands of frames under TCG)


@dataclass
class Capture:
    """Packets on `ifname` in namespace `ns` while the block runs (both directions)."""

    ns: str
    ifname: str
    frames: list[tuple[float, bool, bytes]] = field(default_factory=list)  # (time, outgoing, frame)
    drops: int = 0  # frames the kernel dropped because this reader fell behind (a capture with drops lies)

    def __enter__(self) -> Capture:
        with in_netns(self.ns):
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        # SO_RCVBUF is capped by net.core.rmem_max (~200 KiB): under TCG the Python reader falls
        # behind a burst of a few hundred frames. The forced size (root) is not capped.
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        # the kernel stamps each frame as it is queued: the reader lags under TCG, its clock would lie
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.bind((self.ifname, 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _read_one(self) -> None:
        frame, ancdata, _flags, addr = self._sock.recvmsg(65535, CMSG_SPACE)
        t = 0.0
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", data[:16])
                t = sec + nsec * 1e-9
        self.frames.append((t, addr[2] == PACKET_OUTGOING, frame))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._read_one()
            except TimeoutError:
                continue
            except OSError:
                return

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)  # let the last packets in flight land
        end = time.time()  # the kernel's stamps are on this clock
        self._stop.set()
        self._thread.join()
        try:
            # what the reader had not reached yet is still queued (a CI run lost half a capture this
            # way: no kernel drop, the frames were simply never read); frames that arrive meanwhile
            # are after the block and end the reading
            self._sock.setblocking(False)
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline:
                try:
                    self._read_one()
                except BlockingIOError:
                    break
                if self.frames[-1][0] > end:
                    self.frames.pop()
                    break
            else:
                raise RuntimeError(f"capture on {self.ifname}: {len(self.frames)} frames read and still more "
                                   f"queued after {DRAIN_S:.0f} s")
            # the kernel's count of what it could not queue for us (read resets it)
            self.drops += struct.unpack("II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1]
        finally:
            self._sock.close()


ETH_IPV4, ETH_VLAN = b"\x08\x00", b"\x81\x00"
AETH_OPCODES = (0x11, 0x0D, 0x0F, 0x10)  # RC ACK and the READ responses that carry an AETH
READ_RESPONSES = (0x0D, 0x0E, 0x0F, 0x10)


def roce_header(raw: bytes) -> tuple[str, str, int, int, int, int, bool, int | None] | None:
    """(src, dst, IP TOS, BTH opcode, destination QP, PSN, BTH AckReq bit, AETH syndrome or None) of
    an Ethernet (802.1Q or not) / IPv4 / UDP frame to the RoCEv2 port with a whole BTH; None for any
    other."""
    off, kind = 14, raw[12:14]
    if kind == ETH_VLAN:
        off, kind = 18, raw[16:18]
    if kind != ETH_IPV4 or len(raw) < off + 20 or raw[off] >> 4 != 4 or raw[off + 9] != socket.IPPROTO_UDP:
        return None
    udp = off + (raw[off] & 0x0F) * 4
    bth = udp + 8
    if len(raw) < bth + 12 or struct.unpack_from("!H", raw, udp + 2)[0] != ROCE_PORT:
        return None
    op = raw[bth]
    syndrome = raw[bth + 12] if op in AETH_OPCODES and len(raw) >= bth + 16 else None
    return (socket.inet_ntoa(raw[off + 12:off + 16]), socket.inet_ntoa(raw[off + 16:off + 20]), raw[off + 1], op,
            int.from_bytes(raw[bth + 5:bth + 8], "big"), int.from_bytes(raw[bth + 9:bth + 12], "big"),
            bool(raw[bth + 8] & 0x80), syndrome)


def to_frame(frames: list[tuple[float, bool, bytes]]) -> pd.DataFrame:
    """One row per RoCEv2 packet."""
    rows = []
    frames = sorted(frames, key=lambda f: f[0])  # in the kernel's order (the reader's may differ)
    t0 = frames[0][0] if frames else 0.0
    for t, outgoing, raw in frames:
        h = roce_header(raw)
        if h is None:
            continue
        src, dst, tos, op, dqpn, psn, ack_req, syn = h
        row = {"t": t - t0, "outgoing": outgoing, "src": src, "dst": dst, "bytes": len(raw), "opcode": op,
               "dqpn": dqpn, "psn": psn, "ack_req": ack_req, "ecn_ce": (tos & 3) == 3, "syndrome": syn,
               "kind": "request"}
        if op == 0x81:
            row["kind"] = "cnp"
        elif op == 0x11 and syn is not None:
            row["kind"] = {0: "ack", 1: "rnr_nak", 3: "nak"}.get(syn >> 5, "ack")
        elif op in READ_RESPONSES:  # a responder's data, never a request (middle ones carry no AETH)
            row["kind"] = "read_response"
        rows.append(row)
    df = pd.DataFrame(rows, columns=["t", "outgoing", "src", "dst", "bytes", "opcode", "dqpn", "psn", "ack_req",
                                     "ecn_ce", "syndrome", "kind"])
    if not df.empty:
        req = df["kind"] == "request"
        df["retransmit"] = False
        df.loc[req, "retransmit"] = df[req].duplicated(subset=["dqpn", "psn"], keep="first")
    else:
        df["retransmit"] = pd.Series(dtype=bool)
    return df


def summarize(df: pd.DataFrame, bin_s: float = 0.1) -> dict:
    """Per-QP counts and a throughput series; go-back events are PSNs that step backwards."""
    out: dict = {"packets": len(df), "qps": {}}
    req = df[df["kind"] == "request"]
    for qpn, g in req.groupby("dqpn"):
        back = (g["psn"].diff() < 0).sum()
        out["qps"][int(qpn)] = {"packets": len(g), "unique_psns": int(g["psn"].nunique()),
                                "retransmitted": int(g["retransmit"].sum()), "go_back_events": int(back),
                                "first_psn": int(g["psn"].iloc[0]), "last_psn": int(g["psn"].iloc[-1])}
    out["retransmitted"] = int(req["retransmit"].sum()) if len(req) else 0
    out["acks"] = int((df["kind"] == "ack").sum())
    out["naks"] = int((df["kind"] == "nak").sum())
    out["rnr_naks"] = int((df["kind"] == "rnr_nak").sum())
    out["cnps"] = int((df["kind"] == "cnp").sum())
    out["ecn_ce"] = int(df["ecn_ce"].sum())
    if len(df):
        bins = (df["t"] // bin_s).astype(int)
        out["throughput_bps"] = (df.groupby(bins)["bytes"].sum() * 8 / bin_s).round().tolist()
    return out


def recoveries(df: pd.DataFrame) -> pd.DataFrame:
    """One row per NAK a requester received (a capture on the requester's link): how its Go-Back-N
    recovery went on the wire. For the NAKed PSN: when it was first sent (`t_sent`), when the NAK
    came (`t_nak`), when it was sent again (`t_resent`); `loss_to_nak_s`, `nak_to_resend_s`;
    `idle_s`, the longest gap in the requester's transmissions between the loss and the resend (a
    stalled sender: window full, or waiting on its own scheduling); `sent_meanwhile`, new packets
    sent between the loss and the resend (all discarded by the responder and sent again).
    A NAK carries the requester's QPN, the requests the responder's: each NAK is matched to the
    request stream that last sent its PSN before it."""
    cols = ["dqpn", "psn", "t_sent", "t_nak", "t_resent", "loss_to_nak_s", "nak_to_resend_s", "idle_s",
            "sent_meanwhile"]
    out_req = df[df["outgoing"] & (df["kind"] == "request")]
    naks = df[~df["outgoing"] & (df["kind"] == "nak")]
    rows = []
    for _, nak in naks.iterrows():
        sent = out_req[(out_req["psn"] == nak["psn"]) & (out_req["t"] <= nak["t"])]
        if sent.empty:
            continue
        qp = int(sent.iloc[-1]["dqpn"])  # the stream that last sent this PSN before the NAK
        stream = out_req[out_req["dqpn"] == qp]
        t_sent = float(stream[(stream["psn"] == nak["psn"]) & (stream["t"] <= nak["t"])]["t"].iloc[0])
        again = stream[(stream["psn"] == nak["psn"]) & (stream["t"] > nak["t"])]
        t_resent = float(again["t"].iloc[0]) if len(again) else float("nan")
        between = stream[(stream["t"] > t_sent) & (stream["t"] < (t_resent if len(again) else float(nak["t"])))]
        times = [t_sent, *between["t"].tolist()] + ([t_resent] if len(again) else [])
        idle = max((b - a for a, b in pairwise(times)), default=0.0)
        rows.append({"dqpn": qp, "psn": int(nak["psn"]), "t_sent": t_sent, "t_nak": float(nak["t"]),
                     "t_resent": t_resent, "loss_to_nak_s": float(nak["t"]) - t_sent,
                     "nak_to_resend_s": t_resent - float(nak["t"]), "idle_s": idle,
                     "sent_meanwhile": int((~between["retransmit"]).sum())})
    return pd.DataFrame(rows, columns=cols)


def _go_backs(g: pd.DataFrame):
    """Row positions in one request stream (in send order) where a go-back starts: a retransmission
    after a new packet, or one below the resend before it."""
    rt, psns = g["retransmit"].to_numpy(), g["psn"].to_numpy()
    for i in range(1, len(g)):
        if rt[i] and not (rt[i - 1] and psns[i] > psns[i - 1]):
            yield i


def retry_stretches(df: pd.DataFrame) -> pd.DataFrame:
    """Every go-back on the requester's link and its `stretch`: the packets it sends up to and
    including the first that asks for an ACK (the BTH AckReq bit). rxe starts one retry at a time:
    until that ACK returns, a NAK for a loss among them is ignored and only the timer recovers it.
    rxe asks at a message's last packet and once 65 or so have gone without asking, counted in
    send order across the go-back (66 at most in a capture at 1 % loss), so a stretch often ends
    before its message does. `stretch` is None where the capture ends first."""
    cols = ["dqpn", "t", "psn", "stretch"]
    out_req = df[df["outgoing"] & (df["kind"] == "request")]
    rows = []
    for qp, g in out_req.groupby("dqpn"):
        t, psns, asks = g["t"].to_numpy(), g["psn"].to_numpy(), g["ack_req"].to_numpy()
        for i in _go_backs(g):
            ask = next((j for j in range(i, len(g)) if asks[j]), None)
            rows.append({"dqpn": int(qp), "t": float(t[i]), "psn": int(psns[i]),
                         "stretch": None if ask is None else ask - i + 1})
    return pd.DataFrame(rows, columns=cols)


def timer_stalls(df: pd.DataFrame, timeout_s: float, share: float = 0.75) -> pd.DataFrame:
    """Recoveries only the QP's timer made (a capture on the requester's link): per request stream,
    a go-back (a retransmission after a new packet) that comes at least `share` of the timeout
    after the last ACK the requester received, and more than half the timeout after any NAK for its
    PSN. The timer runs from the last response the completer handled; a NAK the requester acts on is
    followed by its resend within milliseconds, one it ignores (rxe while a retry is in progress)
    is not. `idle_s`: how long the requester had been silent (its window full) before the resend."""
    cols = ["dqpn", "t_last", "t_resend", "idle_s", "psn"]
    out_req = df[df["outgoing"] & (df["kind"] == "request")]
    incoming = df[~df["outgoing"]]
    acks = incoming[incoming["kind"] == "ack"]["t"].to_numpy()
    naks = incoming[incoming["kind"] == "nak"][["t", "psn"]]
    rows = []
    for qp, g in out_req.groupby("dqpn"):
        t, psns = g["t"].to_numpy(), g["psn"].to_numpy()
        for i in _go_backs(g):
            before = acks[acks < t[i]]
            if len(before) and t[i] - before[-1] < share * timeout_s:
                continue
            psn = int(psns[i])
            if not naks[(naks["t"] <= t[i]) & (naks["t"] > t[i] - timeout_s / 2) & (naks["psn"] == psn)].empty:
                continue  # a NAK's retry
            rows.append({"dqpn": int(qp), "t_last": float(t[i - 1]), "t_resend": float(t[i]),
                         "idle_s": float(t[i] - t[i - 1]), "psn": psn})
    return pd.DataFrame(rows, columns=cols)
