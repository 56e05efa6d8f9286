"""Full-scale figures for a claim, from the same models the lab's predictions use (pure).

The convergence claim at full scale: the scenario's training step with the WAN at its topology
rate x the scenario's scale (200 Mbit/s x 1000: 200 Gbit/s a link), the full gradient, its
distance's delay, against the lossless 0 km baseline at 1:1 — and how much compute a step needs
before 64:1 reaches the paper's 95 % (DDP overlaps only the last micro-batch's backward, so the
rest of the exchange must be small beside the whole step's compute)."""

from __future__ import annotations

import dataclasses

from metrolab.harness.scenario.points import Point
from metrolab.harness.scenario.predict import cross_site_pair, path_links, point_path
from metrolab.workloads import models as wm
from metrolab.workloads.training_step import TrainingParams, training_shape


def convergence_efficiency(shape: wm.TrainingShape, base: wm.Path, path: wm.Path) -> float:
    """Step time on the baseline path (0 km, 1:1) over step time on `path`."""
    return wm.training_step_s(shape, base) / wm.training_step_s(shape, path)


def micro_batches_for(shape: wm.TrainingShape, base: wm.Path, path: wm.Path, target: float = 0.95,
                      limit: int = 1 << 20) -> int | None:
    """The fewest micro-batches (doubling from the shape's) whose step reaches `target` on `path`;
    None past `limit`."""
    mb = shape.micro_batches
    per_mb = shape.compute_s / shape.micro_batches
    while mb <= limit:
        s = dataclasses.replace(shape, micro_batches=mb, compute_s=per_mb * mb)
        if convergence_efficiency(s, base, path) >= target:
            return mb
        mb *= 2
    return None


def convergence_full_scale(scn, ratios: tuple[float, ...] = (32.0, 64.0)) -> str:
    """One line for the report: the model's efficiency at each ratio at full scale (the lab's
    rates x the scenario's scale, the full gradient), per algorithm, and the compute a step needs
    for 95 % at the last ratio."""
    w = next(w for w in scn.spec.workloads if w.kind == "training-step")
    topo, sweep, k = scn.topology, scn.spec.sweep, scn.spec.scale
    hosts = list(w.hosts or [h.name for h in topo.hosts()])
    sites = len({topo.nodes[h].site for h in hosts})
    links = path_links(topo, *cross_site_pair(topo, hosts))
    km = max(sweep.distance_km or [0.0])

    def full(point) -> wm.Path:
        p = point_path(topo, links, point, set(sweep.links))
        return dataclasses.replace(p, rate_bps=p.rate_bps * k if p.rate_bps else None)
    base = full(Point(baseline=True))
    paths = {r: full(Point(distance_km=km, convergence=r)) for r in ratios}
    tps = {algo: TrainingParams.model_validate({**w.params, "algo": algo}) for algo in ("flat", "hierarchical")}
    shapes = {algo: training_shape(tp, 1.0, len(hosts), sites) for algo, tp in tps.items()}
    parts = [f"{algo} " + ", ".join(f"{convergence_efficiency(shape, base, paths[r]):.2f} at {r:g}:1" for r in ratios)
             for algo, shape in shapes.items()]
    tp, shape = tps["hierarchical"], shapes["hierarchical"]
    need = micro_batches_for(shape, base, paths[ratios[-1]])
    per_mb = shape.compute_s / shape.micro_batches
    tail = (f"95 % at {ratios[-1]:g}:1 needs {need} micro-batches ({need * per_mb:.0f} s of compute a step)"
            if need else f"95 % at {ratios[-1]:g}:1 is out of reach")
    wan = min((lk.rate_bps for lk in topo.links if lk.name in sweep.links and lk.rate_bps), default=0) * k
    mbs = f"{tp.micro_batches} micro-batch{'es' if tp.micro_batches > 1 else ''}"
    return (f"model, {tp.model}, {mbs} ({shape.compute_s:.1f} s a step)"
            + (f", WAN {wan / 1e9:g} Gbit/s a link at 1:1" if wan else "") + f", {km:g} km: "
            + "; ".join(parts) + f"; {tail}")
