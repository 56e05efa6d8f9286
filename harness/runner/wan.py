"""What crossed the swept links during one repetition: bytes, drops, CE marks, packets, and how
evenly parallel paths shared the bytes (read from both ends of every swept link)."""

from __future__ import annotations

import json
from collections.abc import Callable

from metrolab.harness.policy.planner import imbalance
from metrolab.harness.scenario.kpis import jain, max_mean

Counts = dict[str, tuple[int, int, int, int]]  # link -> (bytes sent, dropped, CE-marked, packets sent)


class WanCounters:
    def __init__(self, lab, links: list[str], ecn: Callable[[], bool] = lambda: False):
        self.lab, self.links, self.ecn = lab, links, ecn

    def read(self) -> Counts:
        """Per swept link (both directions): bytes sent, packets its queues dropped, packets they
        marked CE (read only under an ECN policy: it takes a `tc` per interface), packets sent."""
        ecn = self.ecn()
        return {link: self.lab.link_counters(link, ecn) for link in self.links}

    def metrics(self, before: Counts, after: Counts) -> dict:
        links = self.links
        sent = {lk: after[lk][0] - before[lk][0] for lk in links}
        drops, packets = (sum(after[lk][i] - before[lk][i] for lk in links) for i in (1, 3))
        # the counts travel with the rate (judged on them); nothing counted is not measured, never 0
        m: dict[str, float | str | None] = {
            "wan_bytes": sum(sent.values()), "wan_drops": drops, "wan_packets": packets,
            "wan_loss": drops / (drops + packets) if drops + packets else None,
            "ecn_marks": sum(after[lk][2] - before[lk][2] for lk in links)}
        if len(links) > 1:  # parallel paths: how evenly the traffic spread (max / min bytes; the drafts' MMR, JFI)
            m["path_imbalance"] = imbalance(sent)
            m["ecmp_max_mean"], m["jain_index"] = max_mean(list(sent.values())), jain(list(sent.values()))
            m["path_bytes"] = json.dumps(sent, sort_keys=True)  # per link, for the record (not a metric)
        return m


def backlog_drops() -> int:
    """Packets the kernel's per-CPU input backlogs dropped so far (/proc/net/softnet_stat, second
    column; over net.core.netdev_max_backlog). Kernel-wide: on the netns backend every veth hop of
    the lab goes through it, before any qdisc counts a packet."""
    try:
        with open("/proc/net/softnet_stat") as f:
            return sum(int(line.split()[1], 16) for line in f if line.strip())
    except OSError:
        return 0
