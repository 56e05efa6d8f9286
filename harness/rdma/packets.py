"""RoCEv2 packets with scapy: craft (DSCP, ECN, opcode, QPN, PSN, valid ICRC) and decode.

The ICRC check is our own implementation of the InfiniBand rule for RoCEv2 (CRC-32 over a
masked copy of the IP, UDP and BTH headers and the payload, behind 8 bytes of 1s standing in
for the absent LRH), so a crafted packet is checked independently of the library that built it.
"""

from __future__ import annotations

import struct
import zlib

ROCE_PORT = 4791
OPCODES = {"RC_SEND_ONLY": 0x04, "RC_RDMA_WRITE_FIRST": 0x06, "RC_RDMA_WRITE_MIDDLE": 0x07,
           "RC_RDMA_WRITE_LAST": 0x08, "RC_RDMA_WRITE_ONLY": 0x0A, "RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE": 0x0B,
           "RC_RDMA_READ_REQUEST": 0x0C, "RC_RDMA_READ_RESPONSE_FIRST": 0x0D,
           "RC_RDMA_READ_RESPONSE_MIDDLE": 0x0E, "RC_RDMA_READ_RESPONSE_LAST": 0x0F,
           "RC_RDMA_READ_RESPONSE_ONLY": 0x10, "RC_ACKNOWLEDGE": 0x11, "CNP": 0x81}
OPCODE_NAMES = {v: k for k, v in OPCODES.items()}


def craft(src: str, dst: str, *, opcode: str = "RC_SEND_ONLY", dqpn: int = 0x11, psn: int = 0, dscp: int = 26,
          ecn: int = 0, payload: bytes = b"", sport: int = 49152, ackreq: bool = False):
    """An Ether/IPv4/UDP/BTH packet with scapy computing the ICRC."""
    from scapy.contrib.roce import BTH  # deferred: scapy (20 s under TCG), only to decode
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    if not 0 <= dscp < 64 or not 0 <= ecn < 4:
        raise ValueError("dscp is 0..63 and ecn 0..3")
    bth = BTH(opcode=OPCODES[opcode], dqpn=dqpn, psn=psn, ackreq=int(ackreq), pkey=0xFFFF)
    return Ether() / IP(src=src, dst=dst, tos=(dscp << 2) | ecn, ttl=64) / UDP(sport=sport, dport=ROCE_PORT) / bth \
        / Raw(payload)


def icrc(ip_packet: bytes) -> int:
    """The RoCEv2 ICRC of an IPv4 packet (headers from IP on, ICRC excluded) per the IBA rule."""
    ihl = (ip_packet[0] & 0x0F) * 4
    ip = bytearray(ip_packet[:ihl])
    ip[1] = 0xFF                 # DSCP/ECN: may change on the way
    ip[8] = 0xFF                 # TTL
    ip[10:12] = b"\xff\xff"      # header checksum
    udp = bytearray(ip_packet[ihl:ihl + 8])
    udp[6:8] = b"\xff\xff"       # UDP checksum
    bth = bytearray(ip_packet[ihl + 8:ihl + 20])
    bth[4] = 0xFF                # BTH reserved byte (FECN/BECN in the IB wire format)
    rest = ip_packet[ihl + 20:]
    return zlib.crc32(b"\xff" * 8 + bytes(ip) + bytes(udp) + bytes(bth) + rest) & 0xFFFFFFFF


def icrc_valid(ip_packet_with_icrc: bytes) -> bool:
    """Whether the trailing 4 bytes are the packet's ICRC (stored little-endian on the wire)."""
    body, trailer = ip_packet_with_icrc[:-4], ip_packet_with_icrc[-4:]
    return struct.unpack("<I", trailer)[0] == icrc(body)


def decode(ip_packet: bytes) -> dict:
    """Field by field: IP (DSCP, ECN, addresses), UDP ports, BTH (opcode, QPN, PSN, ack request),
    AETH (syndrome, MSN) on acknowledgements, and whether the ICRC holds."""
    ihl = (ip_packet[0] & 0x0F) * 4
    tos = ip_packet[1]
    src = ".".join(str(b) for b in ip_packet[12:16])
    dst = ".".join(str(b) for b in ip_packet[16:20])
    sport, dport = struct.unpack("!HH", ip_packet[ihl:ihl + 4])
    b = ip_packet[ihl + 8:ihl + 20]
    op = b[0]
    out = {"src": src, "dst": dst, "dscp": tos >> 2, "ecn": tos & 3, "sport": sport, "dport": dport,
           "opcode": op, "opcode_name": OPCODE_NAMES.get(op, f"0x{op:02x}"), "se": bool(b[1] & 0x80),
           "pkey": struct.unpack("!H", b[2:4])[0], "dqpn": int.from_bytes(b[5:8], "big"),
           "ackreq": bool(b[8] & 0x80), "psn": int.from_bytes(b[9:12], "big"), "icrc_ok": icrc_valid(ip_packet)}
    if op in (0x11, 0x0D, 0x0F, 0x10) and len(ip_packet) >= ihl + 24 + 4:
        syn = ip_packet[ihl + 20]
        out["aeth_syndrome"] = syn
        out["aeth_kind"] = {0: "ACK", 1: "RNR_NAK", 3: "NAK"}.get(syn >> 5, "reserved")
        out["aeth_nak_code"] = syn & 0x1F if syn >> 5 == 3 else None
        out["msn"] = int.from_bytes(ip_packet[ihl + 21:ihl + 24], "big")
    return out
