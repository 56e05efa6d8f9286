"""Link utilization over time during one repetition (white paper §2.3.1: "> 90 % link utilization"
for a sample-data upload): a thread samples the bytes each swept link's ends have sent, and
`utilization` turns the samples into per-link series and figures.

The sampler reads each end's namespace's /proc/net/dev through a file it opened inside that
namespace (the file stays bound to it): no lab handle is shared with the thread that runs the
measurement, and a read costs microseconds, so the samples keep their pace under TCG. A link's
utilization is its busier direction's bits over its rate: the data direction of an upload, not
its ACKs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from metrolab.harness.kernel.nsctx import in_netns

Sample = tuple[float, dict[str, tuple[int, ...]]]  # (monotonic s, link -> tx bytes of each end)


class LinkSampler:
    """Sample the tx bytes of both ends of `links` every `interval_s` while the block runs."""

    def __init__(self, lab, links: Sequence[str], interval_s: float = 0.1):
        if interval_s <= 0:
            raise ValueError(f"the sampling interval must be > 0 s, got {interval_s}")
        self.lab, self.links, self.interval_s = lab, list(links), interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._ready = threading.Event()  # the first sample is taken: the measurement may start
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="link-sampler", daemon=True)

    def __enter__(self) -> LinkSampler:
        # wait for the first sample: entering each namespace takes a while under TCG, and a transfer
        # that starts before it is sampled only at its tail (seen: a 0.5 s RDMA upload with no busy
        # interval at all)
        self._thread.start()
        self._ready.wait(timeout=60)
        if self._error is not None:
            self._stop.set()
            raise self._error
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._error is not None and exc[0] is None:
            raise self._error

    def _run(self) -> None:
        files: dict[str, Any] = {}
        try:
            ends: dict[str, list[tuple[str, str]]] = {}  # link -> (node, ifname) of each end
            for link in self.links:
                for end in self.lab.plan.ends(link):
                    if end.node not in files:  # a proc file opened inside a namespace reads that one's
                        with in_netns(self.lab.ns(end.node)):
                            files[end.node] = open("/proc/thread-self/net/dev", "rb", buffering=0)  # noqa: SIM115
                    ends.setdefault(link, []).append((end.node, end.ifname))
            while True:
                t = time.monotonic()
                tx = {node: _tx_bytes(f) for node, f in files.items()}
                self.samples.append((t, {lk: tuple(tx[node][ifname] for node, ifname in ends[lk])
                                         for lk in self.links}))
                self._ready.set()
                if self._stop.wait(self.interval_s):
                    break
        except BaseException as exc:  # noqa: BLE001 — raised in the measuring thread by __enter__/__exit__
            self._error = exc
        finally:
            self._ready.set()
            for f in files.values():
                f.close()


def _tx_bytes(f) -> dict[str, int]:
    """Interface -> bytes sent, from an open /proc/net/dev (re-read from the start: microseconds,
    where a netlink dump parsed by pyroute2 takes tens of ms under TCG and starves the samples)."""
    f.seek(0)
    out = {}
    for line in f.read().decode().splitlines()[2:]:
        name, _, fields = line.partition(":")
        out[name.strip()] = int(fields.split()[8])
    return out


def utilization(samples: list[Sample], rates: dict[str, float | None], busy: float = 0.1) -> dict:
    """Per link, utilization per sampling interval (its busier direction over its rate); over the
    busy period (first to last interval where the links together carry more than `busy` of their
    capacity, without those two, partly idle; fewer than three such intervals give no figures, only
    `link_sample_gap_s`, the longest interval, which says how well the sampler kept its pace):
    `link_util` (all links' bits over their capacity), `link_util_min` (the least used
    link's share: the claim is per link) and the series as JSON (`link_series`, for the record
    and the plots). Links without a rate are left out; nothing busy, no figures."""
    links = [lk for lk, r in rates.items() if r]
    if len(samples) < 2 or not links:
        return {}
    t = [s[0] for s in samples]
    dts = [t1 - t0 for t0, t1 in pairwise(t)]
    series: dict[str, list[float]] = {lk: [] for lk in links}
    sent: dict[str, list[float]] = {lk: [] for lk in links}  # bits in each interval, busier direction
    for dt, ((_, a), (_, b)) in zip(dts, pairwise(samples)):
        for lk in links:
            bits = max(8 * (y - x) for x, y in zip(a[lk], b[lk]))
            sent[lk].append(bits)
            series[lk].append(bits / (dt * rates[lk]) if dt > 0 else 0.0)  # type: ignore[operator]
    cap = sum(rates[lk] for lk in links)  # type: ignore[misc]
    hot = [i for i, dt in enumerate(dts) if dt > 0 and sum(sent[lk][i] for lk in links) / (dt * cap) > busy]
    if not hot:
        return {}
    lo, hi = hot[0], hot[-1]
    gap = max(dts[lo:hi + 1])
    if hi - lo < 2:  # a transfer seen in fewer than three samples: its edges would be the figure
        return {"link_sample_gap_s": gap}
    lo, hi = lo + 1, hi - 1  # the first and last busy intervals hold the transfer's start and end, partly idle
    span = sum(dts[lo:hi + 1])
    per_link = {lk: sum(sent[lk][lo:hi + 1]) / (span * rates[lk]) for lk in links}  # type: ignore[operator]
    return {"link_util": sum(sum(sent[lk][lo:hi + 1]) for lk in links) / (span * cap),
            "link_util_min": min(per_link.values()), "busy_s": span, "link_sample_gap_s": gap,
            "link_series": json.dumps({"t": [round(x - t[0], 4) for x in t[1:]],
                                       **{lk: [round(u, 4) for u in v] for lk, v in series.items()}})}
