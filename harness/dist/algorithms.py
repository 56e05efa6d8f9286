"""Collective algorithms above torch.distributed, for every backend (gloo, verbs, nccl).

"flat" hands the collective to the backend over all ranks (its own ring/tree). "hierarchical"
follows the sites: reduce inside each site to a leader, exchange among the site leaders across
the WAN, broadcast back inside the site, so the WAN carries one copy per site instead of one per
rank (the white paper's multi-AIDC collaborative training).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

ALGORITHMS = ("flat", "hierarchical")


@dataclass
class SiteGroups:
    """Process groups per site and among site leaders (each site's lowest rank).

    Every rank must build this together (new_group is collective), with the same `sites` list:
    sites[r] is the site of global rank r."""

    sites: list[str]
    backend: str | None = None
    site_ranks: dict[str, list[int]] = field(default_factory=dict)
    groups: dict[str, Any] = field(default_factory=dict)   # site -> ProcessGroup
    leaders: list[int] = field(default_factory=list)
    leader_group: Any = None

    def __post_init__(self):
        if len(self.sites) != dist.get_world_size():
            raise ValueError(f"sites names {len(self.sites)} ranks, the world has {dist.get_world_size()}")
        for r, s in enumerate(self.sites):
            self.site_ranks.setdefault(s, []).append(r)
        for s in sorted(self.site_ranks):  # the same order on every rank
            self.groups[s] = dist.new_group(self.site_ranks[s], backend=self.backend)
        self.leaders = sorted(ranks[0] for ranks in self.site_ranks.values())
        self.leader_group = dist.new_group(self.leaders, backend=self.backend)

    @property
    def my_site(self) -> str:
        return self.sites[dist.get_rank()]

    @property
    def my_leader(self) -> int:
        return self.site_ranks[self.my_site][0]

    @property
    def is_leader(self) -> bool:
        return dist.get_rank() == self.my_leader


def _check(algo: str, groups: SiteGroups | None) -> None:
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r} (choose from {', '.join(ALGORITHMS)})")
    if algo == "hierarchical":
        _sites(algo, groups)


def _sites(algo: str, groups: SiteGroups | None) -> SiteGroups:
    if groups is None:
        raise ValueError(f"the {algo} algorithm needs SiteGroups (which site each rank is in)")
    return groups


def all_reduce(t: torch.Tensor, op=dist.ReduceOp.SUM, algo: str = "flat", groups: SiteGroups | None = None,
               group=None) -> None:
    _check(algo, groups)
    if algo == "flat":
        dist.all_reduce(t, op=op, group=group)
        return
    groups = _sites(algo, groups)
    avg = op == dist.ReduceOp.AVG
    rop = dist.ReduceOp.SUM if avg else op  # gloo has no AVG: sum, then divide once
    site = groups.groups[groups.my_site]
    if len(groups.site_ranks[groups.my_site]) > 1:
        dist.reduce(t, dst=groups.my_leader, op=rop, group=site)
    if groups.is_leader and len(groups.leaders) > 1:
        dist.all_reduce(t, op=rop, group=groups.leader_group)
    if len(groups.site_ranks[groups.my_site]) > 1:
        dist.broadcast(t, src=groups.my_leader, group=site)
    if avg:
        t.div_(dist.get_world_size())


def all_gather_into_tensor(out: torch.Tensor, inp: torch.Tensor, algo: str = "flat",
                           groups: SiteGroups | None = None, group=None) -> None:
    """out holds every rank's inp in global rank order."""
    _check(algo, groups)
    if algo == "flat":
        dist.all_gather_into_tensor(out, inp, group=group)
        return
    groups = _sites(algo, groups)
    n, per = dist.get_world_size(), inp.numel()
    mine = groups.site_ranks[groups.my_site]
    site = groups.groups[groups.my_site]
    width = max(len(r) for r in groups.site_ranks.values())  # leaders exchange equal blocks: pad short sites
    block = torch.zeros(width * per, dtype=inp.dtype)
    if len(mine) > 1:
        dist.all_gather_into_tensor(block[:len(mine) * per], inp.reshape(-1).contiguous(), group=site)
    else:
        block[:per].copy_(inp.reshape(-1))
    everything = torch.empty(len(groups.leaders) * width * per, dtype=inp.dtype)
    if groups.is_leader:
        if len(groups.leaders) > 1:
            dist.all_gather_into_tensor(everything, block, group=groups.leader_group)
        else:
            everything.copy_(block)
    if len(mine) > 1:
        dist.broadcast(everything, src=groups.my_leader, group=site)
    flat = out.view(-1)
    for li, leader in enumerate(groups.leaders):
        ranks = groups.site_ranks[groups.sites[leader]]
        for j, r in enumerate(ranks):
            src = everything[(li * width + j) * per:(li * width + j + 1) * per]
            flat[r * per:(r + 1) * per].copy_(src)
    assert flat.numel() == n * per


def reduce_scatter_tensor(out: torch.Tensor, inp: torch.Tensor, op=dist.ReduceOp.SUM, algo: str = "flat",
                          groups: SiteGroups | None = None, group=None) -> None:
    """Hierarchical: a hierarchical all-reduce, then each rank keeps its shard (the WAN still
    carries one copy per site)."""
    _check(algo, groups)
    if algo == "flat":
        dist.reduce_scatter_tensor(out, inp, op=op, group=group)
        return
    groups = _sites(algo, groups)
    full = inp.reshape(-1).clone()
    all_reduce(full, op, "hierarchical", groups)
    r, per = dist.get_rank(), out.numel()
    out.view(-1).copy_(full[r * per:(r + 1) * per])


def broadcast(t: torch.Tensor, src: int, algo: str = "flat", groups: SiteGroups | None = None,
              group=None) -> None:
    _check(algo, groups)
    if algo == "flat":
        dist.broadcast(t, src=src, group=group)
        return
    groups = _sites(algo, groups)
    src_site = groups.sites[src]
    src_leader = groups.site_ranks[src_site][0]
    site = groups.groups[groups.my_site]
    if groups.my_site == src_site and len(groups.site_ranks[src_site]) > 1:
        dist.broadcast(t, src=src, group=site)  # the source's own site, leader included
    if groups.is_leader and len(groups.leaders) > 1:
        dist.broadcast(t, src=src_leader, group=groups.leader_group)
    if groups.my_site != src_site and len(groups.site_ranks[groups.my_site]) > 1:
        dist.broadcast(t, src=groups.my_leader, group=site)
