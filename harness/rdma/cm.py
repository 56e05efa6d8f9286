"""Connecting RC queue pairs through rdma_cm (librdmacm) instead of a TCP exchange.

rdma_cm resolves the peer's IP address to a GID and a route, and carries the REQ/REP/RTU handshake
(QPN, starting PSNs, RDMA read depth). The QPs stay ours: they are created on librdmacm's PD with
our CQ and moved INIT -> RTR -> RTS with the attributes the CM computes (`rdma_init_qp_attr`),
overridden by `QPConfig` where the user set MTU, traffic class, timeout and retries: the
"external QP" flow of rdma-core's own tests. One CM connection per QP, as `perftest -R -q N` does.
The peer's memory (address, rkey, length) travels in the connection's private data.

pyverbs' CMEvent blocks without a timeout and holds the GIL, so every wait first polls the event
channel's file descriptor (found once, when the channel is created).
"""

from __future__ import annotations

import os
import re
import select
import struct
import time
from typing import Any, NoReturn

from metrolab.harness.errors import CapabilityError
from metrolab.harness.rdma.verbs import MTU_ENUM, Connection, Device, PeerInfo, QPConfig, RdmaError, list_devices

# magic, buffer address, rkey, buffer length: fits the 56 bytes a REQ's private data allows
PRIVATE = struct.Struct("!4sQIQ")
MAGIC = b"MLcm"
CM_DEV = "/dev/infiniband/rdma_cm"


def _cm():
    try:
        import pyverbs.cm_enums as ce  # deferred: pyverbs, only where RDMA runs
        from pyverbs.cmid import CMID, AddrInfo, CMEvent, CMEventChannel, ConnParam
    except ImportError as exc:
        raise CapabilityError(f"pyverbs' rdma_cm bindings are not importable ({exc})") from None
    return {"ce": ce, "CMID": CMID, "AddrInfo": AddrInfo, "CMEvent": CMEvent, "CMEventChannel": CMEventChannel,
            "ConnParam": ConnParam}


def available() -> bool:
    return os.path.exists(CM_DEV)


class _Channel:
    """An rdma_cm event channel whose waits time out."""

    def __init__(self):
        self.cm = _cm()
        before = _cm_fds()
        self.channel = self.cm["CMEventChannel"]()
        self.fd = next(iter(_cm_fds() - before), None)
        if self.fd is None:  # cannot happen with librdmacm's ucma channel; never wait blind
            self.channel.close()
            raise RdmaError("cannot find the rdma_cm event channel's descriptor")

    def wait(self, expected: int, timeout: float, what: str):
        """The next event, which must be `expected`; returns it un-acked (private data readable)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            raise RdmaError(f"rdma_cm: no event within {timeout:g} s while {what}")
        ev = self.cm["CMEvent"](self.channel)
        if ev.event_type != expected:
            got = ev.event_str()
            ev.ack_cm_event()
            hint = {"RDMA_CM_EVENT_REJECTED": " (nobody listens there, or the peer refused)",
                    "RDMA_CM_EVENT_UNREACHABLE": " (the peer does not answer)",
                    "RDMA_CM_EVENT_ADDR_ERROR": " (no RDMA device on a route to that address)",
                    "RDMA_CM_EVENT_ROUTE_ERROR": " (no route to the peer)"}.get(got, "")
            raise RdmaError(f"rdma_cm: {got} while {what}{hint}")
        return ev

    def close(self) -> None:
        self.channel.close()


def _cm_fds() -> set[int]:
    """Our open descriptors on the rdma_cm device (listing's own descriptor resolves to nothing)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == CM_DEV:
                out.add(int(fd))
        except OSError:
            pass
    return out


def _device_name(cm_id) -> str:
    name = cm_id.dev_name
    if name not in list_devices():
        raise RdmaError(f"rdma_cm bound to {name!r}, which is not an RDMA device here")
    return name


def _private(conn: Connection) -> bytes:
    return PRIVATE.pack(MAGIC, conn.addr, conn.mr.rkey, conn.length)


def _peer_memory(data: bytes, who: str) -> tuple[int, int, int]:
    if len(data) < PRIVATE.size or data[:4] != MAGIC:
        raise RdmaError(f"rdma_cm: the {who} is not a metrolab verbs endpoint (no memory info in private data)")
    _, addr, rkey, length = PRIVATE.unpack(data[:PRIVATE.size])
    return addr, rkey, length


def _conn_param(cm, cfg: QPConfig, qp, data: bytes | None = None):
    p = cm["ConnParam"](resources=cfg.max_rd_atomic, depth=cfg.max_rd_atomic, retry=cfg.retry_cnt,
                        rnr_retry=cfg.rnr_retry, qp_num=qp.qp_num, data_len=PRIVATE.size if data else 0)
    if data:
        p.set_private_data(data)
    return p


def _to_state(conn: Connection, cm_id, qp, state: str) -> None:
    """Move `qp` to INIT/RTR/RTS with the CM's attributes, then our QPConfig on top."""
    e, cfg = conn.e, conn.cfg
    target = {"init": e.IBV_QPS_INIT, "rtr": e.IBV_QPS_RTR, "rts": e.IBV_QPS_RTS}[state]
    attr, mask = cm_id.init_qp_attr(target)
    if state == "init":
        attr.qp_access_flags = (e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE | e.IBV_ACCESS_REMOTE_READ)
        mask |= e.IBV_QP_ACCESS_FLAGS
    elif state == "rtr":
        attr.path_mtu = min(attr.path_mtu, MTU_ENUM[cfg.mtu])
        attr.min_rnr_timer = cfg.min_rnr_timer
        ah = attr.ah_attr
        ah.traffic_class = cfg.traffic_class  # the CM leaves ToS to RDMA_OPTION_ID_TOS, absent from pyverbs
        attr.ah_attr = ah
        mask |= e.IBV_QP_MIN_RNR_TIMER
    else:
        attr.timeout, attr.retry_cnt, attr.rnr_retry = cfg.timeout, cfg.retry_cnt, cfg.rnr_retry
        mask |= e.IBV_QP_TIMEOUT | e.IBV_QP_RETRY_CNT | e.IBV_QP_RNR_RETRY
    qp.modify(attr, mask)


class _Ids:
    """The CM IDs (each with the channel its events arrive on) behind one connection; closed newest
    first, each channel after its last ID."""

    def __init__(self):
        self.items: list[tuple[Any, _Channel | None]] = []

    def add(self, cm_id, channel: _Channel | None = None):
        self.items.append((cm_id, channel))
        return cm_id

    def drop(self, cm_id) -> None:
        for i, (x, ch) in enumerate(self.items):
            if x is cm_id:
                del self.items[i]
                _quiet(x.close)
                if ch is not None:
                    _quiet(ch.close)
                return

    def close(self) -> None:
        for cm_id, _ in self.items:
            _quiet(cm_id.disconnect)
        for cm_id, ch in reversed(self.items):
            _quiet(cm_id.close)
            if ch is not None:
                _quiet(ch.close)
        self.items.clear()


def _quiet(fn) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 — best-effort cleanup of a failed connection
        pass


class CMConnection(Connection):
    """A `Connection` whose QPs were connected by rdma_cm; closes its CM IDs and channels too.

    Build one with `cm_listen(...)` (passive side) or `cm_connect(...)` (active side)."""

    _ids: _Ids | None = None

    def close(self) -> None:
        super().close()  # QPs and MR first: they live on librdmacm's PD
        self.dev.close()  # our CQ, before librdmacm drops the device context
        if self._ids is not None:
            self._ids.close()


def _reraise(exc: BaseException) -> NoReturn:
    """pyverbs' own errors become RdmaError (a clear message, exit code 5); others pass through."""
    if type(exc).__module__.startswith("pyverbs"):
        raise RdmaError(f"rdma_cm: {exc}") from None
    raise exc


def _abandon(conn: CMConnection | None, dev: Device | None, ids: _Ids) -> None:
    if conn is not None:
        conn.close()
        return
    if dev is not None:
        dev.close()
    ids.close()


def cm_listen(ip: str, port: int, buf, cfg: QPConfig | None = None, num_qps: int = 1,
              timeout: float = 60.0) -> CMConnection:
    """Passive side: listen on ip:port, accept `num_qps` connections, one QP each."""
    cfg = cfg or QPConfig()
    ids, conn, dev = _Ids(), None, None
    try:
        ch = _Channel()
        cm, ce = ch.cm, ch.cm["ce"]
        listen_id = ids.add(cm["CMID"](creator=ch.channel, port_space=ce.RDMA_PS_TCP), ch)
        try:
            listen_id.bind_addr(cm["AddrInfo"](src=ip, src_service=str(port), port_space=ce.RDMA_PS_TCP,
                                               flags=ce.RAI_PASSIVE))
        except Exception as exc:  # noqa: BLE001 — pyverbs raises PyverbsRDMAError or plain errors
            raise RdmaError(f"rdma_cm: cannot bind {ip}:{port} ({exc}); is there an RDMA device on {ip}?") from None
        listen_id.listen()
        dev = Device(_device_name(listen_id), port=listen_id.port_num or 1, ip=ip, cm_id=listen_id)
        conn = CMConnection(dev, buf, cfg, num_qps=num_qps)
        conn._ids = ids
        peer: tuple[int, int, int] | None = None
        deadline = time.monotonic() + timeout
        for qp in conn.qps:
            ev = ch.wait(ce.RDMA_CM_EVENT_CONNECT_REQUEST, max(0.1, deadline - time.monotonic()),
                         f"waiting for a connection on {ip}:{port}")
            data = ev.private_data
            child = ids.add(cm["CMID"](creator=ev, listen_id=listen_id))  # events arrive on the listener's channel
            ev.ack_cm_event()
            peer = peer or _peer_memory(data, "client")
            for state in ("init", "rtr"):
                _to_state(conn, child, qp, state)
            child.accept(_conn_param(cm, cfg, qp, _private(conn)))
            _to_state(conn, child, qp, "rts")
            ch.wait(ce.RDMA_CM_EVENT_ESTABLISHED, max(0.1, deadline - time.monotonic()),
                    "waiting for the client's RTU").ack_cm_event()
        if peer is None:
            raise RdmaError("rdma_cm: no QP to connect")
        conn.peer = PeerInfo([], [], "", *peer)
        return conn
    except BaseException as exc:  # noqa: BLE001 — undo, then re-raise whatever it was
        _abandon(conn, dev, ids)
        _reraise(exc)


RETRYABLE = re.compile("REJECTED|UNREACHABLE")


def cm_connect(ip: str | None, peer_ip: str, port: int, buf, cfg: QPConfig | None = None, num_qps: int = 1,
               timeout: float = 60.0, resolve_ms: int = 2000) -> CMConnection:
    """Active side: resolve peer_ip, connect `num_qps` QPs to the listener at peer_ip:port.

    A peer that is not listening yet is retried until `timeout` (the server may start later). The
    first resolved ID only anchors the device (its context and PD carry our QPs and MR) and is
    never connected, so a rejected try never takes the PD down with it. Every ID has its own event
    channel: a late event of an abandoned try cannot be mistaken for the next one's."""
    cfg = cfg or QPConfig()
    ids, conn, dev = _Ids(), None, None
    deadline = time.monotonic() + timeout
    try:
        anchor, _ = _resolved_id(ids, ip, peer_ip, port, resolve_ms)
        dev = Device(_device_name(anchor), port=anchor.port_num or 1, ip=ip, cm_id=anchor)
        conn = CMConnection(dev, buf, cfg, num_qps=num_qps)
        conn._ids = ids
        for qp in conn.qps:
            while True:
                cm_id, ch = _resolved_id(ids, ip, peer_ip, port, resolve_ms)
                cm_id.connect(_conn_param(ch.cm, cfg, qp, _private(conn)))
                try:
                    ev = ch.wait(ch.cm["ce"].RDMA_CM_EVENT_CONNECT_RESPONSE,
                                 max(0.1, deadline - time.monotonic()), f"connecting to {peer_ip}:{port}")
                except RdmaError as exc:
                    if RETRYABLE.search(str(exc)) and time.monotonic() < deadline and qp is conn.qps[0]:
                        ids.drop(cm_id)  # not listening yet: a fresh ID, a new try
                        time.sleep(0.2)
                        continue
                    raise
                break
            data = ev.private_data
            ev.ack_cm_event()
            addr, rkey, length = _peer_memory(data, "server")
            for state in ("init", "rtr", "rts"):
                _to_state(conn, cm_id, qp, state)
            cm_id.establish()  # the RTU: the passive side sees ESTABLISHED
            conn.peer = PeerInfo([], [], "", addr, rkey, length)
        return conn
    except BaseException as exc:  # noqa: BLE001 — undo, then re-raise whatever it was
        _abandon(conn, dev, ids)
        _reraise(exc)


def _resolved_id(ids: _Ids, ip: str | None, peer_ip: str, port: int, resolve_ms: int):
    """A new CM ID on its own channel, address and route resolved (bound to the local device)."""
    ch = _Channel()
    cm, ce = ch.cm, ch.cm["ce"]
    try:
        cm_id = cm["CMID"](creator=ch.channel, port_space=ce.RDMA_PS_TCP)
    except BaseException:
        ch.close()
        raise
    ids.add(cm_id, ch)
    ai = cm["AddrInfo"](src=ip, dst=peer_ip, dst_service=str(port), port_space=ce.RDMA_PS_TCP)
    cm_id.resolve_addr(ai, resolve_ms)
    ch.wait(ce.RDMA_CM_EVENT_ADDR_RESOLVED, resolve_ms / 1000 + 5, f"resolving {peer_ip}").ack_cm_event()
    cm_id.resolve_route(resolve_ms)
    ch.wait(ce.RDMA_CM_EVENT_ROUTE_RESOLVED, resolve_ms / 1000 + 5, f"resolving a route to {peer_ip}").ack_cm_event()
    return cm_id, ch
