"""The measurement design's interval multipliers: one look (fixed) or a look after every block
(sequential), pure.

A run that adds blocks until its criteria are decided looks at the data after each block and stops
at the first conclusive answer. Re-judging a fixed 95 % interval at every look inflates the chance
of a wrong verdict with the number of looks (to ~20 % at 16 looks: tests/harness/scenario/
test_sequential_unit.py). The sequential design keeps it at its nominal level with repeated
confidence intervals (Jennison & Turnbull, *Group Sequential Methods*, ch. 9): the error budget
alpha is spent over the looks by the Lan-DeMets O'Brien-Fleming function

    alpha(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t)),   t = n / n_max (the share of the block budget),

and the boundary c_k of look k solves P(|Z_k| > c_k, |Z_j| <= c_j for j < k) = alpha(t_k) - alpha(t_k-1)
for the correlated statistics Z_j of one accumulating sample (Armitage, McPherson & Rowe's recursive
integration). The spread is estimated from the blocks, and successive t statistics share that
estimate: Student's t quantile at each z boundary's tail probability (the usual conversion) lets
5.6-5.8 % of wrong verdicts through at 2-16 looks from 3 blocks. So the t boundaries are calibrated
directly: the t statistic of Gaussian blocks is pivotal (its law does not depend on the mean or the
spread), and a seeded simulation of MC_SIMS runs sets each look's boundary to spend exactly its
share of alpha among the runs still open. A look whose share is too small to simulate (the first
looks: under 1e-4) keeps the converted z boundary. The interval at look k,
mean +- c_k s / sqrt(n), covers the true value at every look at once with probability >= 1 - alpha,
so a verdict read from it at whatever look the run stops is wrong with probability <= alpha/2 per
side. Early looks are wide (little of alpha is spent there); the last one is close to the fixed
design's t interval. With one look (`n_max == n_min`) the design is the fixed one exactly.

Counts (drops among packets) are judged on Clopper-Pearson bounds; under the sequential design each
look gets the share of alpha spent at it (a union bound: conservative, valid at any stopping time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

GRID_STEP = 0.02     # of the standard normal's z, for the recursive integration
GRID_HALF = 9.0      # z beyond this carries < 1e-18 of the density
MC_SIMS = 200_000    # simulated runs that calibrate the t boundaries (the level to about +-0.001)
MC_SEED = 20261204   # fixed: every run, here or anywhere, gets the same design
MC_MIN_TAIL = 20     # crossings a look's boundary is read from (fewer: the converted z boundary)


def obf_spent(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming alpha spending: the error spent by information fraction t."""
    if t <= 0:
        return 0.0
    if t >= 1:
        return alpha
    from scipy.stats import norm  # deferred: scipy.stats, 20 s under TCG
    return float(2 - 2 * norm.cdf(norm.ppf(1 - alpha / 2) / math.sqrt(t)))


@lru_cache(maxsize=256)
def z_boundaries(looks: tuple[int, ...], n_max: int, alpha: float) -> tuple[float, ...]:
    """Two-sided z boundaries c_k for looks at `looks` blocks (increasing, the last <= n_max) under
    O'Brien-Fleming spending over n_max blocks (recursive numerical integration on a grid)."""
    from scipy.stats import norm  # deferred: scipy.stats, 20 s under TCG
    z = np.arange(-GRID_HALF, GRID_HALF + GRID_STEP / 2, GRID_STEP)
    density = None
    spent_before = 0.0
    out: list[float] = []
    prev_n = None
    for n in looks:
        spend = max(obf_spent(n / n_max, alpha) - spent_before, 0.0)
        spent_before += spend
        if density is None:
            density = norm.pdf(z)
        else:
            assert prev_n is not None
            r = prev_n / n  # Z_k | Z_k-1 = u ~ N(u sqrt(r), 1 - r)
            sd = math.sqrt(1 - r)
            c = min(out[-1], GRID_HALF)
            # the continuation region [-c, c] exactly: its grid points plus its two ends, trapezoid weights
            u = np.concatenate(([-c], z[np.abs(z) < c], [c]))
            gaps = np.diff(u)
            w = np.concatenate(([gaps[0] / 2], (gaps[:-1] + gaps[1:]) / 2, [gaps[-1] / 2]))
            fu = np.interp(u, z, density) * w
            density = (norm.pdf((z[:, None] - u[None, :] * math.sqrt(r)) / sd) / sd) @ fu
        total = float(density.sum() * GRID_STEP)
        if spend <= 1e-15:
            out.append(math.inf)
        else:
            # the tail mass beyond +-c, by the grid's cumulative sums (symmetric density)
            right = (np.cumsum(density[::-1])[::-1] - density / 2) * GRID_STEP  # mass at z >= z_i
            tail = 2 * right
            i = int(np.searchsorted(-tail, -spend))  # first z whose two-sided tail <= spend
            if i >= len(z) or total <= spend:
                out.append(0.0 if total <= spend else math.inf)
            else:
                # interpolate between grid points for a smooth boundary
                lo = max(i - 1, 0)
                t0, t1 = tail[lo], tail[i]
                frac = 0.0 if t0 == t1 else (t0 - spend) / (t0 - t1)
                out.append(float(z[lo] + frac * (z[i] - z[lo])))
        prev_n = n
    return tuple(out)


@lru_cache(maxsize=64)
def t_boundaries(looks: tuple[int, ...], n_max: int, alpha: float) -> tuple[float, ...]:
    """Boundaries for |t| = |mean| / (s / sqrt(n)) at looks of `looks` blocks under O'Brien-Fleming
    spending over n_max blocks, calibrated on simulated Gaussian blocks (seeded: deterministic)."""
    from scipy.stats import t as student  # deferred: scipy.stats, 20 s under TCG
    zb = z_boundaries(looks, n_max, alpha)
    rng = np.random.default_rng(MC_SEED)
    s1 = np.zeros(MC_SIMS)
    s2 = np.zeros(MC_SIMS)
    open_ = np.ones(MC_SIMS, dtype=bool)
    out: list[float] = []
    spent = 0.0
    k = 0
    for n in range(1, looks[-1] + 1):
        x = rng.standard_normal(MC_SIMS)
        s1 += x
        s2 += x * x
        if n != looks[k]:
            continue
        share = max(obf_spent(n / n_max, alpha) - spent, 0.0)
        spent += share
        crossings = round(share * MC_SIMS)
        if crossings < MC_MIN_TAIL:
            c = math.inf if not math.isfinite(zb[k]) else float(student.isf(0.5 * math.erfc(zb[k] / math.sqrt(2)), n - 1))
        else:
            mean = s1 / n
            t = np.abs(mean) / np.sqrt(np.maximum(s2 - n * mean * mean, 1e-300) / (n - 1) / n)
            alive = np.sort(t[open_])
            c = float(alive[-crossings - 1]) if crossings < len(alive) else 0.0
        if math.isfinite(c):
            mean = s1 / n
            t = np.abs(mean) / np.sqrt(np.maximum(s2 - n * mean * mean, 1e-300) / (n - 1) / n)
            open_ &= t <= c
        out.append(c)
        k += 1
    return tuple(out)


@dataclass(frozen=True)
class Design:
    """How intervals are taken: `fixed` (one look, Student's t) or `sequential` (a look after every
    block from `n_min` to `n_max`, repeated confidence intervals)."""

    kind: str = "fixed"              # fixed | sequential
    confidence: float = 0.95
    n_min: int = 2
    n_max: int = 2

    @property
    def alpha(self) -> float:
        return 1 - self.confidence

    @property
    def sequential(self) -> bool:
        return self.kind == "sequential" and self.n_max > self.n_min

    def looks(self) -> tuple[int, ...]:
        return tuple(range(max(self.n_min, 2), self.n_max + 1)) if self.sequential else (self.n_max,)

    def critical(self, n: int, alpha: float | None = None) -> float:
        """The multiplier of s / sqrt(n) for an interval of the mean of n blocks at this design's
        level (or `alpha`, two-sided): Student's t for one look, the look's repeated-CI boundary
        for a sequential one (a look beyond n_max takes the last boundary)."""
        a = self.alpha if alpha is None else alpha
        if n < 2:
            return math.inf
        from scipy.stats import t as student  # deferred: scipy.stats, 20 s under TCG
        if not self.sequential:
            return float(student.ppf(1 - a / 2, n - 1))
        looks = self.looks()
        if n < looks[0]:
            return math.inf  # before the first look: no interval is read
        return t_boundaries(looks, self.n_max, round(a, 12))[min(n, looks[-1]) - looks[0]]

    def count_alpha(self, n: int, alpha: float | None = None) -> float:
        """The two-sided error a count's bound at a look of n blocks may use: all of it for one look,
        the share spent at this look for a sequential design (a union bound over looks)."""
        a = self.alpha if alpha is None else alpha
        if not self.sequential:
            return a
        m = min(max(n, self.n_min), self.n_max)
        return obf_spent(m / self.n_max, a) - obf_spent((m - 1) / self.n_max, a) if m > self.n_min else \
            obf_spent(m / self.n_max, a)

    def describe(self) -> str:
        if not self.sequential:
            return f"fixed: one look, Student's t, {self.confidence:.0%}"
        return (f"sequential: a look after every block from {self.n_min} to {self.n_max}, repeated "
                f"{self.confidence:.0%} intervals (Lan-DeMets O'Brien-Fleming spending)")

    def to_dict(self) -> dict:
        return {"kind": self.kind if self.sequential else "fixed", "confidence": self.confidence,
                "n_min": self.n_min, "n_max": self.n_max, "describe": self.describe()}

    @classmethod
    def from_dict(cls, d: dict | None, confidence: float = 0.95) -> Design:
        if not d:
            return cls("fixed", confidence)
        return cls(d.get("kind", "fixed"), d.get("confidence", confidence), int(d.get("n_min", 2)),
                   int(d.get("n_max", 2)))


def blocks_needed(sd: float, margin: float, design: Design, cap: int = 10_000) -> int | None:
    """Blocks at which an interval of half-width c(n) sd / sqrt(n) would clear `margin` (the
    estimate's distance from the threshold), if the spread stays as observed. For a sequential
    design, c(n) is Student's t widened by the ratio of the design's last boundary to t there (the
    price of looking, about what a budget of that many blocks would pay at its last look); None
    beyond `cap`."""
    if margin <= 0 or not math.isfinite(sd):
        return None
    if sd == 0:
        return max(design.n_min, 2)
    from scipy.stats import t as student  # deferred: scipy.stats, 20 s under TCG
    a = design.alpha
    widen = 1.0
    if design.sequential:
        widen = design.critical(design.n_max) / float(student.ppf(1 - a / 2, design.n_max - 1))

    def clears(n: int) -> bool:
        return widen * float(student.ppf(1 - a / 2, n - 1)) * sd / math.sqrt(n) < margin

    lo = hi = max(design.n_min, 2)
    while not clears(hi):
        lo, hi = hi, hi * 2
        if hi > cap:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if clears(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def simulate(looks: int, sims: int = 20_000, seed: int = 20261204, n_min: int = 3, alpha: float = 0.05,
             spread: float = 0.02, threshold: float = 0.03) -> dict:
    """Wrong-verdict rates of runs that look after every block from n_min and stop at the first
    conclusive verdict on `mean <= threshold`, with Gaussian blocks: the sequential design against
    re-reading a fixed interval at every look (what --until-conclusive did before). `at_threshold`:
    the truth on the threshold, where any verdict is wrong; `null_fail`: no effect, a fail is wrong."""
    from scipy.stats import t as student  # deferred: scipy.stats, 20 s under TCG
    n_max = n_min + looks - 1
    rng = np.random.default_rng(seed + looks)
    designs = {"sequential": Design("sequential", 1 - alpha, n_min, n_max).critical,
               "fixed, re-read": lambda n: float(student.ppf(1 - alpha / 2, n - 1))}
    out: dict = {"looks": looks, "n_min": n_min, "n_max": n_max, "sims": sims}
    at = rng.normal(threshold, spread, (sims, n_max))
    null = rng.normal(0.0, spread, (sims, n_max))
    for name, crit in designs.items():
        for key, x, wrong in (("at_threshold", at, lambda v: v != 0), ("null_fail", null, lambda v: v == -1)):
            verdict = np.zeros(sims, dtype=int)
            open_ = np.ones(sims, dtype=bool)
            for n in range(n_min, n_max + 1):
                s = x[:, :n]
                m, sd = s.mean(1), s.std(1, ddof=1)
                h = crit(n) * sd / math.sqrt(n)
                ok, bad = open_ & (m + h < threshold), open_ & (m - h > threshold)
                verdict[ok], verdict[bad] = 1, -1
                open_ &= ~(ok | bad)
            out[f"{name}: {key}"] = float(np.mean(wrong(verdict)))
    return out


def rates(sims: int = 20_000, seed: int = 20261204) -> list[dict]:
    """The guarantee, measured for 1 to 16 looks (`metrolab bench sequential`)."""
    return [simulate(k, sims, seed) for k in (1, 2, 4, 8, 16)]


def markdown_table(rows: list[dict] | None = None) -> str:
    """`rates` as docs/statistics.md shows them (a test keeps the two equal)."""
    lines = ["| looks (blocks) | sequential: any verdict, truth on the threshold | sequential: fail, no effect | "
             "fixed interval re-read: any verdict, truth on the threshold |", "|---|---|---|---|"]
    for r in rows if rows is not None else rates():
        lines.append(f"| {r['looks']} ({r['n_min']}-{r['n_max']}) | {r['sequential: at_threshold']:.3f} | "
                     f"{r['sequential: null_fail']:.4f} | {r['fixed, re-read: at_threshold']:.3f} |")
    return "\n".join(lines) + "\n"
