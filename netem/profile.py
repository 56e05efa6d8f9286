"""What impairment one interface's egress gets: the shaper's input, independent of how it is applied."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

LossKind = Literal["random", "gilbert-elliott"]
JitterDistribution = Literal["uniform", "normal", "pareto", "paretonormal"]


@dataclass(frozen=True)
class LossModel:
    """Random loss (p) or netem's 4-state-free Gilbert-Elliott model (p, r, 1-h, 1-k)."""

    kind: LossKind = "random"
    p: float = 0.0           # random: loss probability; GE: good->bad transition probability
    r: float = 1.0           # GE: bad->good transition probability
    h: float = 0.0           # GE: probability of delivery in the bad state (netem's 1-h is loss there)
    k: float = 1.0           # GE: probability of delivery in the good state
    correlation: float = 0.0  # random only: netem's loss correlation

    @property
    def mean_loss(self) -> float:
        """Long-run loss probability of the model."""
        if self.kind == "random":
            return self.p
        if self.p + self.r == 0:
            return 1 - self.k
        pi_bad = self.p / (self.p + self.r)
        return pi_bad * (1 - self.h) + (1 - pi_bad) * (1 - self.k)


@dataclass(frozen=True)
class Impairment:
    """Egress impairment of one interface. Zero / None means 'not applied'."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    jitter_distribution: JitterDistribution = "uniform"
    loss: LossModel | None = None
    duplicate: float = 0.0
    reorder: float = 0.0
    rate_bps: float | None = None
    limit_packets: int | None = None  # netem queue (delay line included)
    queue_bytes: int | None = None     # a byte buffer: the TBF/HTB rate stage's limit
    # under netem: the rate by a classful TBF child (handle 10:) that the policies replace or fill,
    # not by netem's own rate (see `rate_in_netem`)
    tbf_stage: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.delay_s or self.jitter_s or self.has_loss or self.duplicate
                    or self.reorder or self.rate_bps)

    @property
    def has_loss(self) -> bool:
        return self.loss is not None and self.loss.mean_loss > 0

    @property
    def per_packet(self) -> bool:
        """Whether it acts on packets one by one (loss, duplication, reordering, jitter): the
        qdiscs do so per buffer, so a host must hand the link wire-sized packets
        (metrolab.harness.lab.base.Lab.wire_packets), not GSO super-packets. A cut (all lost) is not."""
        lossy = self.loss is not None and 0 < self.loss.mean_loss < 1
        return bool(lossy or self.duplicate or self.reorder or self.jitter_s)

    @property
    def rate_in_netem(self) -> bool:
        """Where the kernel has netem, whether netem itself carries the rate. It does unless something
        needs the classful TBF stage after the delay line: a byte buffer, a policy's queues
        (`tbf_stage`), or jitter (netem's rate keeps packets in order; jitter in netem's delay line
        reorders them, as it always has here). netem's rate keeps an absolute schedule, so a timer
        that fires late (QEMU TCG) sends what is due; TBF's bucket, full by then, loses the rate."""
        return bool(self.rate_bps) and not (self.tbf_stage or self.queue_bytes or self.jitter_s)

    def netem_only(self) -> list[str]:
        """Parts of this impairment that only sch_netem can apply (empty: TBF + nft suffice)."""
        out = []
        if self.delay_s:
            out.append(f"delay {self.delay_s * 1e3:g} ms")
        if self.jitter_s:
            out.append(f"jitter {self.jitter_s * 1e3:g} ms")
        if self.duplicate:
            out.append(f"duplicate {self.duplicate:g}")
        if self.reorder:
            out.append(f"reorder {self.reorder:g}")
        if self.loss is not None and self.loss.kind == "gilbert-elliott":
            out.append("Gilbert-Elliott loss")
        if self.loss is not None and self.loss.correlation:
            out.append("correlated loss")
        return out

    def to_dict(self) -> dict:
        return asdict(self)
