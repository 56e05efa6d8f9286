"""Plays a repetition's events on the lab while its ranks run their steps.

The steps run in a worker thread (they only wait on the ranks); the changes are made from the
calling thread, which owns the lab's netlink handles. Every change is put back before `run`
returns, on success, error and Ctrl-C alike, and the times each was in force are what the steps
are attributed against (metrolab.harness.scenario.events.impact), not the times planned.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metrolab.harness.errors import LabError, MetrolabError
from metrolab.harness.scenario.events import EventSpec, Window, timeline
from metrolab.netem.profile import Impairment, LossModel

log = logging.getLogger(__name__)


@dataclass
class Applied:
    window: Window
    start: float            # wall clock, when the change was made
    end: float | None = None  # when it was put back
    t0: float = 0.0         # the timeline's origin (start - t0 against window.start: how late)
    apply_s: float = 0.0    # what making the change took (the controller's re-plan included)
    undo_s: float = 0.0     # what putting it back took

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.window.event, "kind": self.window.kind, "planned_s": self.window.start,
                "planned_end_s": self.window.end, "at_s": self.start - self.t0,
                "until_s": None if self.end is None else self.end - self.t0, "start": self.start, "end": self.end,
                "apply_s": self.apply_s, "undo_s": self.undo_s}


def links_of(e: EventSpec, topo) -> list[str]:
    """The links an event changes: its link, or every link of its node."""
    if e.kind == "node-down":
        return [lk.name for lk in topo.links if e.node in (lk.a, lk.b)]
    assert e.link is not None
    return [e.link]


@dataclass
class LinkState:
    """What the events in force do to one link."""

    down: int = 0                  # changes holding it cut (a flap inside a node-down: two)
    loss: float | None = None      # a loss burst's probability
    delay_s: float = 0.0           # added one-way delay (a longer route)
    rate_bps: float | None = None  # a changed rate


class EventPlayer:
    """`events` on `lab` over a repetition; `base` is each link's impairment at this point (what a
    change departs from and returns to), `scale` divides an event's rate like the sweep's rates.

    A cut link loses everything on it (100 % loss at both ends: what its queues and delay line
    held is gone with it) and both routers take it out of their routes at once (Lab.set_link).
    Every change recomputes the link's impairment from the point's and what is in force, so
    changes that overlap on one link compose and each undoes only itself."""

    def __init__(self, lab, events: list[EventSpec], base: dict[str, Impairment], scale: float,
                 group_index: float, on_links: Callable[[set[str]], float | None] | None = None):
        """`on_links(down)`: the controller, told the links that are down whenever that set changes
        (planned paths re-plan around them); it returns the seconds it took, None if it did nothing."""
        self.lab, self.events, self.scale, self.group_index = lab, events, scale, group_index
        self.on_links = on_links
        self.base = dict(base)
        self.state: dict[str, LinkState] = {}
        self.applied: list[Applied] = []
        self.replans: list[dict[str, Any]] = []  # what the controller did, when, in how long

    def _links(self, w: Window) -> list[str]:
        return links_of(self.events[w.event], self.lab.topology)

    def impairment(self, link: str) -> Impairment:
        """The link's impairment with the changes in force."""
        base = self.base.get(link) or Impairment()
        st = self.state.get(link) or LinkState()
        loss = LossModel(p=1.0) if st.down else LossModel(p=st.loss) if st.loss is not None else base.loss
        return dataclasses.replace(base, loss=loss, delay_s=base.delay_s + st.delay_s,
                                   rate_bps=st.rate_bps if st.rate_bps is not None else base.rate_bps)

    def _change(self, w: Window, on: bool) -> None:
        e = self.events[w.event]
        rerouted = False
        for link in self._links(w):
            st = self.state.setdefault(link, LinkState())
            if w.kind in ("link-down", "node-down"):
                st.down += 1 if on else -1
                flips = (on and st.down == 1) or (not on and st.down == 0)
                if flips and on:  # the cut first, then the routers notice
                    self.lab.impair(link, self.impairment(link))
                    self.lab.set_link(link, False)
                elif flips:       # the link carries again, then the routers use it
                    self.lab.impair(link, self.impairment(link))
                    self.lab.set_link(link, True)
                rerouted |= flips
                continue
            if w.kind == "loss":
                st.loss = e.loss if on else None
            elif w.kind == "delay":
                st.delay_s = e.added_delay_s(self.group_index) if on else 0.0
            elif w.kind == "rate":
                st.rate_bps = (e.rate or 0.0) / self.scale if on else None
            self.lab.impair(link, self.impairment(link))
        log.info("event %d (%s) %s", w.event, w.kind, "on" if on else "off")
        if rerouted and self.on_links is not None:
            down = {lk for lk, st in self.state.items() if st.down > 0}
            at = time.time()
            took = self.on_links(down)
            if took is not None:
                self.replans.append({"at": at, "down": sorted(down), "seconds": took})

    def _set(self, a: Applied, on: bool) -> None:
        try:
            self._change(a.window, on)
        except MetrolabError as exc:
            raise LabError(f"event {a.window.event} ({a.window.kind}): {exc}") from exc
        except Exception as exc:
            raise LabError(f"event {a.window.event} ({a.window.kind}): {type(exc).__name__}: {exc}") from exc

    def run(self, work: Callable[[], Any]) -> tuple[Any, list[Applied]]:
        """work() in a thread while the timeline plays; its result and what was applied when. A
        change that fails stops the timeline (what was applied goes back) and is raised once the
        steps are over; Ctrl-C puts everything back and does not wait for them."""
        out: dict[str, Any] = {}

        def target() -> None:
            try:
                out["result"] = work()
            except BaseException as exc:  # noqa: BLE001 — handed to the calling thread
                out["error"] = exc

        windows = timeline(self.events)
        # at equal times an off-switch goes first: a flap's up before its next down
        actions = sorted([(w.start, 1, k) for k, w in enumerate(windows)] +
                         [(w.end, 0, k) for k, w in enumerate(windows) if w.end is not None])
        open_: dict[int, Applied] = {}   # index into windows -> the change in force
        failed: LabError | None = None
        t0 = time.time()
        worker = threading.Thread(target=target, name="repetition", daemon=True)
        worker.start()
        try:
            for at, on, k in actions:
                worker.join(max(0.0, t0 + at - time.time()))
                if not worker.is_alive():
                    break  # the steps ended first: the rest never happened
                try:
                    if on:
                        a = open_[k] = Applied(windows[k], time.time(), t0=t0)
                        self.applied.append(a)
                        self._set(a, True)
                        a.apply_s = time.time() - a.start
                    elif k in open_:
                        t = time.time()
                        self._set(open_[k], False)
                        a = open_.pop(k)
                        a.end, a.undo_s = time.time(), time.time() - t
                except LabError as exc:
                    failed = exc
                    break
            self._undo(open_)
            worker.join()
        except BaseException:
            self._undo(open_)
            raise
        if failed is not None:
            raise failed
        if "error" in out:
            raise out["error"]
        return out.get("result"), self.applied

    def _undo(self, open_: dict[int, Applied]) -> None:
        """What is still in force goes back (the end of the repetition, an error, Ctrl-C)."""
        for k, a in list(open_.items()):
            try:
                self._set(a, False)
            except LabError as exc:
                log.error("could not undo %s: %s", a.window, exc)
            a.end = time.time()
            open_.pop(k)
