"""Backpressure, emulated (white paper 4.3.2): a switch watches the queues of a congested egress;
when one passes its high-water mark (xoff) it signals the upstream switch, which stops sending
what the signal names until a resume arrives (the queue back under the low-water mark, xon). The
signal takes the link's one-way delay to reach upstream, as a pause frame would, so what is
already on its way keeps arriving: the congested queue needs headroom above xoff, exactly as in
hardware (`metrolab.harness.policy.sonic.headroom`).

Two scopes on one mechanism:
- `port`: PFC on one priority. Each egress is one queue; a pause stops the upstream port's, so a
  flow that does not cross the congested egress (a victim) waits too: head-of-line blocking.
- `flow`: flow-level backpressure. The congested egress has a queue per 5-tuple; a pause stops
  only that flow's class upstream, the others keep the link.

Linux has no pause frames across a veth or a bridge, so the controller is a thread here: it reads
the congested egress's HTB class backlogs over netlink every `poll_s` and, `delay_s` later, plugs
the upstream classes' queues (sch_plug: the queue holds what it has and what arrives, sends
nothing) or releases them. Its reaction time (poll interval + netlink round trips) adds to the
signal's delay: it is measured and reported, and it plays the part of the peer's response time in
the headroom a switch needs. sch_plug is in stock kernels (the guest's); the host kernel here
lacks it, so this runs in the guest tier.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from metrolab.harness.errors import LabError
from metrolab.harness.kernel.nsctx import in_netns, iproute_here
from metrolab.harness.policy import qos
from metrolab.netem import tree
from metrolab.netem.profile import Impairment

log = logging.getLogger(__name__)

Scope = Literal["flow", "port"]
THREAD = "metrolab-backpressure"  # the controller's thread: a run must not leave it behind


@dataclass
class Stats:
    """Pause frames' counters, as a switch's PFC counters report them (cumulative)."""

    pauses: int = 0          # pause signals sent (xoff crossed)
    resumes: int = 0         # resume signals sent (back under xon)
    paused_s: dict[str, float] = field(default_factory=dict)  # per upstream class: time spent paused
    max_backlog: int = 0     # deepest congested queue seen (bytes) since the last snapshot
    starved_s: float = 0.0   # queue-seconds a congested queue sat empty while its upstream was paused
    reaction_s: list[float] = field(default_factory=list)     # poll-to-applied times since the last snapshot


def _control_plane_priority(nice: int = -10) -> None:
    """Run the calling thread ahead of the lab's traffic generators. A switch's control plane has
    a CPU of its own; here it shares the machine's with the hosts' senders, and under the guest's
    emulated CPU a poll once waited half a second behind them (reaction 0.51 s against a 0.5 s
    response the headroom was rendered for). Needs CAP_SYS_NICE (root, as labs run); without it
    the thread keeps the default priority and its measured reaction says what that cost."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)  # this thread alone (Linux)
    except OSError as exc:
        log.debug("backpressure controller keeps its priority: %s", exc)


def thresholds(headroom: int, xoff: int | None = None, mtu: int = 1500) -> tuple[int, int, int]:
    """(xoff, xon, buffer) bytes of a congested queue: pause at xoff (default 4 MTU), resume at xon
    (xoff - 2 MTU, at least 1 MTU), hold xoff + headroom before dropping."""
    if headroom < 0:
        raise ValueError("headroom is >= 0 bytes")
    xoff = xoff if xoff is not None else 4 * mtu
    xon = max(mtu, xoff - 2 * mtu)
    return xoff, xon, xoff + headroom


class Backpressure:
    """Install, run and remove the emulation on one congested egress and its upstream port.

    congested: (switch, link) whose egress queue is watched (the switch's side of the link);
    upstream: (switch, link) whose egress the signals act on; flows: the 5-tuples crossing the
    congested egress (scope `flow`: a class each on both egresses; scope `port` needs none: one
    queue on each side). `congested_imp` / `upstream_imp`: the egresses' impairments (rate, and
    the upstream queue's bytes); `netem`: whether each egress has a netem root (the guest's)."""

    def __init__(self, lab, *, scope: Scope, congested: tuple[str, str], upstream: tuple[str, str], flows=(),
                 congested_imp: Impairment, upstream_imp: Impairment, headroom: int, xoff: int | None = None,
                 delay_s: float = 0.0, poll_s: float = 0.0005, netem: tuple[bool, bool] = (False, False)):
        if scope not in ("flow", "port"):
            raise ValueError(f"scope is flow or port, not {scope!r}")
        if not congested_imp.rate_bps or not upstream_imp.rate_bps:
            raise LabError("backpressure: both egresses need a rate (the congested one and the upstream one)")
        self.lab, self.scope = lab, scope
        self.flows = list(flows) if scope == "flow" else []
        if scope == "flow" and not self.flows:
            raise LabError("flow-level backpressure needs the flows crossing the congested egress (none were learned)")
        self.delay_s, self.poll_s = delay_s, poll_s
        self.netem = netem
        self.xoff, self.xon, self.buffer = thresholds(headroom, xoff)
        self.down = self._end(*congested)
        self.up = self._end(*upstream)
        self.down_imp = dataclasses.replace(congested_imp, queue_bytes=self.buffer)
        self.up_imp = upstream_imp
        self.stats = Stats()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._installed: list = []
        self._paused_at: dict[str, float] = {}

    def _end(self, node: str, link: str):
        try:
            return next(e for e in self.lab.plan.ends(link) if e.node == node)
        except (StopIteration, KeyError):
            raise LabError(f"backpressure: {node} is not an end of link {link}") from None

    # -- the queues ------------------------------------------------------------------------------
    def install(self) -> None:
        """HTB on both egresses, a class per flow (scope flow) or one queue (port); the congested
        side's queues hold xoff + headroom bytes each, the upstream side's are sch_plug."""
        try:
            for end, imp, netem, leaf in ((self.down, self.down_imp, self.netem[0], "bfifo"),
                                          (self.up, self.up_imp, self.netem[1], "plug")):
                shaper = self.lab.shaper(end.node)
                self._installed.append(end)
                if self.flows:
                    qos.install_per_flow(shaper, end.ifname, imp, self.flows, netem=netem, leaf=leaf)
                else:
                    qos.install_classes(shaper, end.ifname, imp, [], netem=netem, leaf=leaf)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Stop the controller (everything released) and take the queues out."""
        try:
            self.stop()
        finally:
            for end in self._installed:
                self.lab.shaper(end.node).clear(end.ifname)
            self._installed = []

    def congested_counts(self) -> tuple[int, int]:
        """(packets sent, dropped) by the congested egress since it was installed."""
        sent, dropped, _ = tree.counts(tree.read_tree(self.lab.handle(self.down.node), self.lab.ns(self.down.node),
                                                      self.down.ifname, netlink_only=True))
        return sent, dropped

    def snapshot(self) -> dict:
        """Cumulative counters (pauses, resumes, pause time so far) and the window's deepest queue
        and slowest reaction, which restart from here."""
        if self._error is not None or (self._thread is not None and not self._thread.is_alive()):
            raise LabError(f"backpressure controller stopped: {self._error or 'no reason given'}")
        now = time.monotonic()
        paused = sum(self.stats.paused_s.values()) + sum(now - t for t in list(self._paused_at.values()))
        r = sorted(self.stats.reaction_s)
        out = {"pauses": self.stats.pauses, "resumes": self.stats.resumes, "pause_s": paused,
               "max_backlog": self.stats.max_backlog, "starved_s": self.stats.starved_s,
               "reaction_max_s": r[-1] if r else 0.0,
               "reaction_p50_s": r[len(r) // 2] if r else 0.0}
        out["packets"], out["drops"] = self.congested_counts()
        self.stats.max_backlog, self.stats.reaction_s = 0, []
        return out

    # -- the controller --------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=THREAD, daemon=True)
        self._thread.start()

    def stop(self) -> Stats:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            if self._thread.is_alive():  # said, not left polling: its sockets hold the lab's namespaces
                raise LabError("backpressure controller did not stop within 10 s")
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise LabError(f"backpressure controller failed: {err}") from err
        return self.stats

    def _classes(self) -> dict[str, int]:
        """Upstream leaf classes by name: one per flow (in install order) and the default."""
        out = {f"{f.src}:{f.sport}>{f.dst}:{f.dport}/{f.proto}": 0x10 + i for i, f in enumerate(self.flows)}
        out["default"] = qos.DEFAULT_CLASS
        return out

    def _watched(self) -> dict[int, list[str]]:
        """Downstream class minor -> the upstream classes its pause stops."""
        names = list(self._classes())
        if self.scope == "port":
            return {qos.DEFAULT_CLASS: names}  # one queue each side: the whole upstream port
        return {0x10 + i: [names[i]] for i in range(len(self.flows))}

    def _run(self) -> None:
        _control_plane_priority()
        try:  # sockets of its own, made in each namespace (a netlink socket stays in the one it was
            # made in): direct, where IPRoute(netns=) would relay every call through a helper process
            with in_netns(self.lab.ns(self.down.node)):
                down = iproute_here()
            with in_netns(self.lab.ns(self.up.node)):
                up = iproute_here()
            with down, up:
                try:
                    self._loop(down, up)
                finally:  # nothing stays paused, whatever stopped the loop
                    self._resume_all(up)
        except BaseException as exc:  # noqa: BLE001 — reported by stop()
            self._error = exc

    def _loop(self, down, up) -> None:
        didx = down.link_lookup(ifname=self.down.ifname)[0]
        uidx = up.link_lookup(ifname=self.up.ifname)[0]
        classes = self._classes()
        watched = self._watched()
        signalled = {minor: False for minor in watched}  # what the congested switch has told upstream
        due: list[tuple[float, int, bool, tuple[str, ...], float]] = []  # (when, seq, pause?, classes, polled at)
        paused_at = self._paused_at
        seq = 0
        last_poll: float | None = None
        while not self._stop.is_set():
            t_poll = time.monotonic()
            backlog = self._backlogs(down, didx)
            for minor, targets in watched.items():
                b = backlog.get(minor, 0)
                self.stats.max_backlog = max(self.stats.max_backlog, b)
                # empty with its upstream still held: the resume is on its way and the egress idles
                # (xon below what it sends while the resume travels: docs/policies.md)
                if b == 0 and last_poll is not None and any(t in paused_at for t in targets):
                    self.stats.starved_s += t_poll - last_poll
                if not signalled[minor] and b > self.xoff:
                    signalled[minor] = True
                    self.stats.pauses += 1
                    heapq.heappush(due, (t_poll + self.delay_s, seq, True, tuple(targets), t_poll))
                    seq += 1
                elif signalled[minor] and b < self.xon:
                    signalled[minor] = False
                    self.stats.resumes += 1
                    heapq.heappush(due, (t_poll + self.delay_s, seq, False, tuple(targets), t_poll))
                    seq += 1
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, _, pause, names, polled = heapq.heappop(due)
                for name in names:
                    self._set(up, uidx, classes[name], paused=pause)
                    if pause:
                        paused_at.setdefault(name, time.monotonic())
                    elif name in paused_at:
                        self.stats.paused_s[name] = self.stats.paused_s.get(name, 0.0) + \
                            time.monotonic() - paused_at.pop(name)
                self.stats.reaction_s.append(time.monotonic() - polled - self.delay_s)
            last_poll = t_poll
            wait = self.poll_s if not due else min(self.poll_s, max(0.0, due[0][0] - time.monotonic()))
            self._stop.wait(wait)
        end = time.monotonic()
        for name, t in list(paused_at.items()):
            self.stats.paused_s[name] = self.stats.paused_s.get(name, 0.0) + end - t
        paused_at.clear()

    @staticmethod
    def _backlogs(ipr, idx: int) -> dict[int, int]:
        """Bytes queued per HTB leaf class (its qdisc's backlog), by minor."""
        out = {}
        for c in ipr.get_classes(index=idx):
            st = c.get_attr("TCA_STATS2")
            q = st.get_attr("TCA_STATS_QUEUE") if st is not None else None
            if q is not None:
                out[c["handle"] & 0xFFFF] = int(q["backlog"])
        return out

    def _set(self, ipr, idx: int, minor: int, paused: bool) -> None:
        """Plug (hold everything) or release the upstream class's queue."""
        action = "TCQ_PLUG_BUFFER" if paused else "TCQ_PLUG_RELEASE_INDEFINITE"
        # parent 0: found by its handle alone, as `tc qdisc change dev IF handle H: plug ...` does
        ipr.tc("change", "plug", idx, (0x100 + minor) << 16, parent=0, action=action)  # the leaf's handle (qos)

    def _resume_all(self, up) -> None:
        idx = up.link_lookup(ifname=self.up.ifname)[0]
        for minor in self._classes().values():
            self._set(up, idx, minor, paused=False)
