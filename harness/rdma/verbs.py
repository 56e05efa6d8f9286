"""The RDMA layer on pyverbs: device/port/GID discovery, RC queue pairs connected out of band,
WRITE / WRITE_WITH_IMM / READ / SEND-RECV, several QPs, zero-copy registration of user buffers.

Every verbs object is owned by a `Device` or `Connection` that closes it on error and on exit.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import random
import socket
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from metrolab.harness.errors import CapabilityError, LabError, MetrolabError
from metrolab.harness.lab.rxe import roce_v2_gid_index

IB_CLASS = Path("/sys/class/infiniband")


class RdmaError(MetrolabError):
    exit_code = 5


def _verbs():
    try:
        import pyverbs.enums as e  # deferred: pyverbs, only where RDMA runs
        from pyverbs.addr import GID, AHAttr, GlobalRoute
        from pyverbs.cq import CQ
        from pyverbs.device import Context
        from pyverbs.mr import MR
        from pyverbs.pd import PD
        from pyverbs.qp import QP, QPAttr, QPCap, QPInitAttr
        from pyverbs.wr import SGE, RecvWR, SendWR
    except ImportError as exc:
        raise CapabilityError(f"pyverbs is not importable ({exc}); run scripts/install.sh (Debian's "
                              "python3-pyverbs)") from None
    return {"e": e, "GID": GID, "AHAttr": AHAttr, "GlobalRoute": GlobalRoute, "CQ": CQ, "Context": Context, "MR": MR,
            "PD": PD, "QP": QP, "QPAttr": QPAttr, "QPCap": QPCap, "QPInitAttr": QPInitAttr, "SGE": SGE,
            "RecvWR": RecvWR, "SendWR": SendWR}


MTU_ENUM = {256: 1, 512: 2, 1024: 3, 2048: 4, 4096: 5}


@dataclass
class QPConfig:
    """RC QP settings (the field's defaults: timeout 14 ~ 67 ms, retry 7, rnr_retry 7 = infinite)."""

    mtu: int = 1024
    timeout: int = 14
    retry_cnt: int = 7
    rnr_retry: int = 7
    min_rnr_timer: int = 12
    traffic_class: int = 0       # IP ToS byte: DSCP << 2 | ECN
    max_send_wr: int = 512
    max_recv_wr: int = 512
    max_rd_atomic: int = 16

    def __post_init__(self):
        if self.mtu not in MTU_ENUM:
            raise RdmaError(f"RoCE MTU must be one of {sorted(MTU_ENUM)}, got {self.mtu}")
        if not 0 <= self.timeout <= 31 or not 0 <= self.retry_cnt <= 7 or not 0 <= self.rnr_retry <= 7:
            raise RdmaError("timeout is 0..31, retry_cnt and rnr_retry 0..7")
        if not 0 <= self.traffic_class <= 255:
            raise RdmaError(f"traffic_class is a ToS byte (0..255), got {self.traffic_class}")


@dataclass
class PeerInfo:
    """What two ends exchange out of band to connect their RC QPs and reach each other's memory."""

    qpns: list[int]
    psns: list[int]
    gid: str
    addr: int
    rkey: int
    length: int


def roce_gid_index(dev: str, port: int, ip: str | None) -> int:
    """The RoCEv2 GID index carrying `ip` (or the first RoCEv2 IPv4 GID when ip is None)."""
    try:
        return roce_v2_gid_index(dev, ip, port, timeout=0.5)
    except LabError as exc:
        raise RdmaError(str(exc)) from None


def list_devices() -> list[str]:
    return sorted(p.name for p in IB_CLASS.iterdir()) if IB_CLASS.exists() else []


def buffer_address(buf) -> tuple[int, int]:
    """(address, length) of a writable contiguous buffer: numpy array, torch tensor, bytearray."""
    if hasattr(buf, "data_ptr"):  # torch
        if not buf.is_contiguous() or buf.device.type != "cpu":
            raise RdmaError("register a contiguous CPU tensor")
        return buf.data_ptr(), buf.numel() * buf.element_size()
    if hasattr(buf, "__array_interface__"):  # numpy
        if not buf.flags["C_CONTIGUOUS"] or not buf.flags["WRITEABLE"]:
            raise RdmaError("register a contiguous, writable numpy array")
        return buf.__array_interface__["data"][0], buf.nbytes
    mv = memoryview(buf)
    if mv.readonly:
        raise RdmaError("register a writable buffer")
    return ctypes.addressof(ctypes.c_char.from_buffer(mv)), mv.nbytes


class _Owner:
    """Owns verbs objects and closes them, newest first, on close() / leaving a with-block."""

    _objs: list[Any]

    def _own(self, obj):
        self._objs.append(obj)
        return obj

    def close(self) -> None:
        for obj in reversed(self._objs):
            try:
                obj.close()
            except Exception:  # noqa: BLE001 — closing: pyverbs objects may already be gone
                pass
        self._objs.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Device(_Owner):
    """An opened RDMA device: context, protection domain, completion queue."""

    def __init__(self, name: str, port: int = 1, gid_index: int | None = None, ip: str | None = None,
                 cq_depth: int = 4096, cm_id=None):
        """`cm_id`: an rdma_cm ID bound to the device; its context and PD belong to librdmacm, so
        only the CQ is ours to close."""
        v = _verbs()
        self.v, self.name, self.port = v, name, port
        if name not in list_devices():
            raise RdmaError(f"no RDMA device {name!r} (devices: {', '.join(list_devices()) or 'none'})")
        self._objs: list[Any] = []
        try:
            self.ctx = cm_id.context if cm_id is not None else self._own(v["Context"](name=name))
            port_attr = self.ctx.query_port(port)
            if gid_index is None:
                gid_index = roce_gid_index(name, port, ip)
            gids = IB_CLASS / name / "ports" / str(port) / "gids"
            if not (gids / str(gid_index)).exists() or ipaddress.IPv6Address(
                    (gids / str(gid_index)).read_text().strip()) == ipaddress.IPv6Address(0):
                raise RdmaError(f"{name} port {port}: GID index {gid_index} is empty or out of range")
            self.gid_index = gid_index
            self.gid = str(self.ctx.query_gid(port, gid_index))
            self.active_mtu = 128 << port_attr.active_mtu
            self.pd = cm_id.pd if cm_id is not None else self._own(v["PD"](self.ctx))
            self.cq = self._own(v["CQ"](self.ctx, cq_depth, None, None, 0))
        except BaseException:
            self.close()
            raise



class Connection(_Owner):
    """`num_qps` RC QPs between this device and a peer, over one registered buffer."""

    def __init__(self, dev: Device, buf, cfg: QPConfig | None = None, num_qps: int = 1):
        v = dev.v
        e = v["e"]
        self.dev, self.cfg, self.v, self.e = dev, cfg or QPConfig(), v, e
        self.buf = buf
        self.addr, self.length = buffer_address(buf)
        if self.length == 0:
            raise RdmaError("cannot register an empty buffer")
        self.peer: PeerInfo | None = None
        self._objs: list[Any] = []
        access = (e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE | e.IBV_ACCESS_REMOTE_READ)
        try:
            # zero-copy: the user's own memory is registered, nothing is allocated or copied
            self.mr = self._own(v["MR"](dev.pd, self.length, access, address=self.addr))
            cap = v["QPCap"](max_send_wr=self.cfg.max_send_wr, max_recv_wr=self.cfg.max_recv_wr,
                             max_send_sge=1, max_recv_sge=1)
            init = v["QPInitAttr"](qp_type=e.IBV_QPT_RC, scq=dev.cq, rcq=dev.cq, cap=cap, sq_sig_all=0)
            self.qps = [self._own(v["QP"](dev.pd, init)) for _ in range(num_qps)]
            self.psns = [random.getrandbits(24) for _ in self.qps]
        except BaseException:
            self.close()
            raise

    def local_info(self) -> PeerInfo:
        return PeerInfo([qp.qp_num for qp in self.qps], self.psns, self.dev.gid, self.addr, self.mr.rkey,
                        self.length)

    def _remote(self) -> PeerInfo:
        if self.peer is None:
            raise RdmaError("not connected: no peer buffer to address")
        return self.peer

    def connect(self, peer: PeerInfo) -> None:
        """INIT -> RTR -> RTS for every QP against the peer's matching QP."""
        v, e, cfg = self.v, self.e, self.cfg
        if len(peer.qpns) != len(self.qps):
            raise RdmaError(f"peer has {len(peer.qpns)} QPs, we have {len(self.qps)}")
        self.peer = peer
        for qp, psn, rqpn, rpsn in zip(self.qps, self.psns, peer.qpns, peer.psns):
            attr = v["QPAttr"](qp_state=e.IBV_QPS_INIT)
            attr.pkey_index = 0
            attr.port_num = self.dev.port
            attr.qp_access_flags = (e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE |
                                    e.IBV_ACCESS_REMOTE_READ)
            qp.to_init(attr)
            gr = v["GlobalRoute"](dgid=v["GID"](peer.gid), sgid_index=self.dev.gid_index,
                                  traffic_class=cfg.traffic_class)
            gr.hop_limit = 64
            ah = v["AHAttr"](gr=gr, is_global=1, port_num=self.dev.port)
            attr = v["QPAttr"](qp_state=e.IBV_QPS_RTR)
            attr.path_mtu = MTU_ENUM[min(cfg.mtu, self.dev.active_mtu)]
            attr.dest_qp_num = rqpn
            attr.rq_psn = rpsn
            attr.max_dest_rd_atomic = cfg.max_rd_atomic
            attr.min_rnr_timer = cfg.min_rnr_timer
            attr.ah_attr = ah
            qp.to_rtr(attr)
            attr = v["QPAttr"](qp_state=e.IBV_QPS_RTS)
            attr.timeout = cfg.timeout
            attr.retry_cnt = cfg.retry_cnt
            attr.rnr_retry = cfg.rnr_retry
            attr.sq_psn = psn
            attr.max_rd_atomic = cfg.max_rd_atomic
            qp.to_rts(attr)

    # -- work requests -------------------------------------------------------------------------
    def _check(self, offset: int, length: int, remote_offset: int | None = None) -> None:
        if offset < 0 or length < 0 or offset + length > self.length:
            raise RdmaError(f"{length} B at offset {offset} exceeds the registered buffer ({self.length} B)")
        if remote_offset is not None:
            if self.peer is None:
                raise RdmaError("not connected")
            if remote_offset < 0 or remote_offset + length > self.peer.length:
                raise RdmaError(f"{length} B at remote offset {remote_offset} exceeds the peer's buffer "
                                f"({self.peer.length} B)")

    def _sge(self, offset: int, length: int):
        return self.v["SGE"](self.addr + offset, length, self.mr.lkey)

    def post_write(self, offset: int, length: int, remote_offset: int = 0, qp: int = 0, wr_id: int = 0,
                   signaled: bool = True, imm: int | None = None) -> None:
        self._check(offset, length, remote_offset)
        e = self.e
        opcode = e.IBV_WR_RDMA_WRITE if imm is None else e.IBV_WR_RDMA_WRITE_WITH_IMM
        wr = self.v["SendWR"](wr_id=wr_id, opcode=opcode, num_sge=1, sg=[self._sge(offset, length)],
                              send_flags=e.IBV_SEND_SIGNALED if signaled else 0)
        wr.set_wr_rdma(self._remote().rkey, self._remote().addr + remote_offset)
        if imm is not None:
            wr.imm_data = imm
        self.qps[qp].post_send(wr)

    def prepare(self, op: str, offset: int, length: int, remote_offset: int = 0, signaled: bool = True,
                wr_id: int = 0):
        """A WRITE/READ/SEND work request built once and posted many times (hot loops: building
        the pyverbs objects costs more than posting them)."""
        e = self.e
        opcode = {"write": e.IBV_WR_RDMA_WRITE, "read": e.IBV_WR_RDMA_READ, "send": e.IBV_WR_SEND}[op]
        self._check(offset, length, None if op == "send" else remote_offset)
        wr = self.v["SendWR"](wr_id=wr_id, opcode=opcode, num_sge=1, sg=[self._sge(offset, length)],
                              send_flags=e.IBV_SEND_SIGNALED if signaled else 0)
        if op != "send":
            wr.set_wr_rdma(self._remote().rkey, self._remote().addr + remote_offset)
        return wr

    def prepare_write(self, offset: int, length: int, remote_offset: int = 0, signaled: bool = True,
                      wr_id: int = 0):
        return self.prepare("write", offset, length, remote_offset, signaled, wr_id)

    def post_prepared(self, wr, qp: int = 0) -> None:
        self.qps[qp].post_send(wr)

    def post_read(self, offset: int, length: int, remote_offset: int = 0, qp: int = 0, wr_id: int = 0,
                  signaled: bool = True) -> None:
        self._check(offset, length, remote_offset)
        e = self.e
        wr = self.v["SendWR"](wr_id=wr_id, opcode=e.IBV_WR_RDMA_READ, num_sge=1, sg=[self._sge(offset, length)],
                              send_flags=e.IBV_SEND_SIGNALED if signaled else 0)
        wr.set_wr_rdma(self._remote().rkey, self._remote().addr + remote_offset)
        self.qps[qp].post_send(wr)

    def post_send(self, offset: int, length: int, qp: int = 0, wr_id: int = 0, signaled: bool = True) -> None:
        self._check(offset, length)
        e = self.e
        wr = self.v["SendWR"](wr_id=wr_id, opcode=e.IBV_WR_SEND, num_sge=1, sg=[self._sge(offset, length)],
                              send_flags=e.IBV_SEND_SIGNALED if signaled else 0)
        self.qps[qp].post_send(wr)

    def post_recv(self, offset: int, length: int, qp: int = 0, wr_id: int = 0) -> None:
        self._check(offset, length)
        self.qps[qp].post_recv(self.v["RecvWR"](wr_id=wr_id, num_sge=1, sg=[self._sge(offset, length)]))

    def poll(self, n: int = 1, timeout: float = 10.0) -> list:
        """Wait for n completions; a failed one raises with its status."""
        cq = self.dev.cq
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            got, wcs = cq.poll(n - len(out))
            for wc in wcs[:got] if got > 0 else []:
                if wc.status != self.e.IBV_WC_SUCCESS:
                    raise RdmaError(f"work completion failed: {wc_status(wc.status)} (wr_id {wc.wr_id}, "
                                    f"opcode {wc.opcode}, qp {wc.qp_num})")
                out.append(wc)
            if got <= 0 and time.monotonic() > deadline:
                raise RdmaError(f"timed out after {timeout:g} s waiting for {n - len(out)} completion(s) "
                                "(is the peer reachable?)")
        return out



WC_STATUS = {0: "success", 1: "local length error", 2: "local QP operation error", 4: "local protection error",
             5: "work request flushed", 9: "remote invalid request", 10: "remote access error",
             11: "remote operation error", 12: "transport retry counter exceeded",
             13: "RNR retry counter exceeded"}


def wc_status(code: int) -> str:
    return WC_STATUS.get(code, f"status {code}")


# -- out-of-band exchange: a length-prefixed JSON message each way over TCP ------------------------
def _send_msg(sock: socket.socket, obj: dict) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def _recv_msg(sock: socket.socket) -> dict:
    head = _recv_exact(sock, 4)
    return json.loads(_recv_exact(sock, struct.unpack("!I", head)[0]))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RdmaError("the peer closed the out-of-band connection")
        buf += chunk
    return buf


def exchange(sock: socket.socket, local: PeerInfo, extra: dict | None = None) -> tuple[PeerInfo, dict]:
    """Swap PeerInfo (and any extra settings) with the other end."""
    _send_msg(sock, {"peer": asdict(local), "extra": extra or {}})
    msg = _recv_msg(sock)
    return PeerInfo(**msg["peer"]), msg.get("extra", {})


def connect_oob(host: str, port: int, timeout: float = 30.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            return socket.create_connection((host, port), timeout=5)
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    raise RdmaError(f"cannot reach the peer at {host}:{port} out of band: {last}")


def barrier(sock: socket.socket, tag: str = "sync") -> None:
    _send_msg(sock, {"barrier": tag})
    _recv_msg(sock)


send_msg, recv_msg = _send_msg, _recv_msg
