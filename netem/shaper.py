"""Apply an Impairment to one interface inside a lab namespace, and take it off again.

Where the kernel has sch_netem, one netem root qdisc carries delay, jitter, loss, duplication,
reordering and a BDP-sized limit, and the rate either itself or through a TBF child that policies
act on (`Impairment.rate_in_netem`). Where it does not, TBF carries the rate and an
nftables `numgen random` rule carries random loss; what only netem can do is refused
(strict) or reported as skipped. Applying a profile replaces the previous one.

The nft loss rule sits on the *peer's ingress* (netdev hook): a packet lost on the wire
vanishes without telling the sender, whereas a drop on the sender's own output path would
return EPERM to its socket.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from pyroute2.netlink.exceptions import NetlinkError

from metrolab.harness import settings
from metrolab.harness.errors import CapabilityError, LabError
from metrolab.harness.kernel import sh
from metrolab.netem.models import tbf_burst_bytes
from metrolab.netem.profile import Impairment

log = logging.getLogger(__name__)

NFT_SCALE = 100_000_000  # numgen modulus: loss resolution 1e-8
ROOT = 0x10000
RATE_STAGE = 0x100000  # 10: the TBF child of netem that carries the rate and the byte buffer


def burst_seconds() -> float:
    """TBF bucket depth in time: 1 ms on a host kernel, 5 ms in the TCG guest whose timers run late."""
    if settings.get("METROLAB_TBF_BURST_MS"):
        return settings.get("METROLAB_TBF_BURST_MS") / 1e3
    return 5e-3 if settings.in_guest() else 1e-3


@dataclass
class Applied:
    """What the shaper put on an interface, for status and results."""

    ifname: str
    qdisc: str | None = None          # netem | tbf | None
    nft_loss: float | None = None
    skipped: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)


def _nft_table(ifname: str) -> str:
    return f"metrolab_loss_{ifname}"  # the prefix marks every nft table of ours


def nft_loss_script(ifname: str, p: float) -> str:
    """Replace-or-create the ingress loss table of `ifname` in one nft transaction."""
    t = _nft_table(ifname)
    threshold = round(p * NFT_SCALE)
    # every packet (a cut link) is a plain drop: numgen's modulus is the largest value it can compare
    match = "" if threshold >= NFT_SCALE else f"numgen random mod {NFT_SCALE} < {threshold} "
    return (f"add table netdev {t}\ndelete table netdev {t}\nadd table netdev {t}\n"
            f'add chain netdev {t} ingress {{ type filter hook ingress device "{ifname}" priority 0; policy accept; }}\n'
            f"add rule netdev {t} ingress {match}counter drop\n")


def nft_loss_clear_script(ifname: str) -> str:
    t = _nft_table(ifname)
    return f"add table netdev {t}\ndelete table netdev {t}\n"


def nft_loss_drops(ns: str, ifname: str) -> int | None:
    """Packets the loss rule on `ifname`'s ingress dropped so far (None if no rule)."""
    res = sh.nft_json(f"list table netdev {_nft_table(ifname)}", netns=ns)
    if res.rc != 0:
        return None
    for item in json.loads(res.stdout).get("nftables", []):
        rule = item.get("rule")
        if rule:
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
    return None


class Shaper:
    """Shapes the egress of interfaces of one namespace. `ipr` is a pyroute2 `IPRoute(netns=ns)`.

    `peer` = (namespace, ifname) of the other end of the wire, where nft loss is applied.
    """

    def __init__(self, ipr, ns: str | None, has_netem: bool, has_nft: bool):  # None: this process's namespace
        self.ipr, self.ns, self.has_netem, self.has_nft = ipr, ns, has_netem, has_nft

    def _index(self, ifname: str) -> int:
        found = self.ipr.link_lookup(ifname=ifname)
        if not found:
            raise LabError(f"interface {ifname} not found in namespace {self.ns}")
        return found[0]

    def clear(self, ifname: str, peer: tuple[str | None, str] | None = None) -> None:
        idx = self._index(ifname)
        try:
            self.ipr.tc("del", index=idx, handle=ROOT, root=True)
        except NetlinkError as exc:
            if exc.code not in (2, 22):  # no root qdisc of ours: nothing to clear
                raise
        if self.has_nft and not self.has_netem and peer is not None:  # with netem, loss never goes to nft
            sh.nft(nft_loss_clear_script(peer[1]), netns=peer[0])

    def check(self, imp: Impairment, where: str) -> list[str]:
        """What of `imp` this namespace cannot apply; raises nothing."""
        missing = []
        if not self.has_netem:
            missing += imp.netem_only()
            loss = imp.loss
            if loss is not None and loss.p and loss.kind == "random" and not loss.correlation and not self.has_nft:
                missing.append("random loss (needs netem or nftables)")
        return missing

    def apply(self, ifname: str, imp: Impairment, strict: bool = True, where: str = "",
              peer: tuple[str | None, str] | None = None) -> Applied:
        missing = self.check(imp, where)
        if log.isEnabledFor(logging.DEBUG):  # to_dict() only when someone reads it
            log.debug("%s %s: %s%s", self.ns, ifname, imp.to_dict() if not imp.is_empty else "cleared",
                      f" (cannot apply: {', '.join(missing)})" if missing else "")
        if missing and strict:
            raise CapabilityError(
                f"{where or ifname}: this kernel lacks sch_netem, so it cannot apply {', '.join(missing)}; "
                "run on the vm backend (--backend vm) or pass --best-effort to skip them")
        loss = imp.loss
        nft_loss = not self.has_netem and loss is not None and bool(loss.p) and loss.kind == "random" and \
            "random loss (needs netem or nftables)" not in missing
        # nft_loss_script replaces the peer's table in one transaction: clearing it first would cost
        # a second nft process (a link cut on the host waited ~40 ms per end for it)
        self.clear(ifname, None if nft_loss else peer)
        out = Applied(ifname, skipped=missing)
        if imp.is_empty:
            return out
        idx = self._index(ifname)
        if self.has_netem:
            self._apply_netem(idx, ifname, imp, out)
            return out
        if imp.rate_bps:
            out.qdisc, out.params = "tbf", self._tbf(idx, imp) | {"rate_stage": "tbf"}
        if nft_loss and loss is not None:
            if peer is None:
                raise LabError(f"{where or ifname}: nft loss needs the peer interface of {ifname}")
            sh.nft(nft_loss_script(peer[1], loss.p), netns=peer[0])
            out.nft_loss = loss.p
        return out

    def _tbf(self, idx: int, imp: Impairment, parent: int | None = None, handle: int = ROOT) -> dict:
        rate = imp.rate_bps
        if not rate:
            raise LabError("a TBF rate stage needs a rate")
        burst = tbf_burst_bytes(rate, burst_seconds())
        limit = imp.queue_bytes or max(burst, int(rate / 8 * 0.05))  # 50 ms of buffer by default
        kw = {"parent": parent} if parent is not None else {}
        self.ipr.tc("add", "tbf", idx, handle, rate=int(rate / 8), burst=burst, limit=limit, **kw)
        return {"rate_bps": rate, "burst": burst, "limit": limit}

    def _apply_netem(self, idx: int, ifname: str, imp: Impairment, out: Applied) -> None:
        """One tree for every impairment, whichever tool writes netem: netem 1: (delay line, loss,
        jitter, duplication, reordering) carrying the rate itself, or, where the link needs a byte
        buffer or a policy's queues (`Impairment.rate_in_netem`), a TBF child 10: with the rate and
        that buffer: the policies (buffer, RED, HTB classes) act on that child."""
        loss = imp.loss
        in_netem = imp.rate_in_netem
        # pyroute2 0.9.7 encodes neither netem's rate (its encoder raises TypeError) nor loss models
        # or delay distributions: tc writes those
        needs_tc = in_netem or (loss is not None and loss.kind == "gilbert-elliott") or bool(
            imp.jitter_s and imp.jitter_distribution != "uniform")
        limit = imp.limit_packets or 10000
        if needs_tc:
            sh.tc(netem_tc_args(ifname, imp, limit), netns=self.ns)
        else:
            kw: dict[str, float] = {"delay": int(imp.delay_s * 1e6), "limit": limit}
            if imp.jitter_s:
                kw["jitter"] = int(imp.jitter_s * 1e6)
            if loss is not None and loss.p:
                kw["loss"] = loss.p * 100
                if loss.correlation:
                    kw["loss_corr"] = loss.correlation * 100
            if imp.duplicate:
                kw["duplicate"] = imp.duplicate * 100
            if imp.reorder:
                kw["prob_reorder"] = imp.reorder * 100
            self.ipr.tc("add", "netem", idx, ROOT, **kw)
        stage = None
        if imp.rate_bps and not in_netem:
            # under TCG its late timer costs rate (docs/statistics.md): only where a policy, a byte
            # buffer or jitter needs it
            stage = self._tbf(idx, imp, parent=ROOT | 1, handle=RATE_STAGE)
        out.qdisc = "netem"
        out.params = {"delay_s": imp.delay_s, "jitter_s": imp.jitter_s, "limit": limit,
                      "loss": loss.mean_loss if loss else 0.0, "rate_bps": imp.rate_bps,
                      "rate_stage": ("netem" if in_netem else "tbf") if imp.rate_bps else None}
        if stage:
            out.params["tbf"] = stage


def netem_tc_args(ifname: str, imp: Impairment, limit: int) -> list[str]:
    """`tc` arguments for a netem root with what pyroute2 cannot encode: loss models, delay
    distributions, and netem's own rate where it carries it (else the TBF child does)."""
    loss = imp.loss
    args = ["qdisc", "add", "dev", ifname, "root", "handle", "1:", "netem", "limit", str(limit),
            "delay", f"{imp.delay_s * 1e6:.0f}us"]
    if imp.jitter_s:
        args += [f"{imp.jitter_s * 1e6:.0f}us"]
        if imp.jitter_distribution != "uniform":
            args += ["distribution", imp.jitter_distribution]
    if loss is not None and loss.kind == "gilbert-elliott":
        args += ["loss", "gemodel", f"{loss.p * 100:g}%", f"{loss.r * 100:g}%",
                 f"{(1 - loss.h) * 100:g}%", f"{(1 - loss.k) * 100:g}%"]
    elif loss is not None and loss.p:
        args += ["loss", "random", f"{loss.p * 100:g}%"]
    if imp.duplicate:
        args += ["duplicate", f"{imp.duplicate * 100:g}%"]
    if imp.reorder:
        args += ["reorder", f"{imp.reorder * 100:g}%"]
    if imp.rate_in_netem:
        args += ["rate", f"{int(imp.rate_bps or 0)}bit"]
    return args
