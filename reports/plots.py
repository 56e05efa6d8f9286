"""matplotlib figures of a run (PNG bytes): degradation vs distance per loss rate, busbw vs size or
distance, step-time distributions per point."""

from __future__ import annotations

import io
import json

import pandas as pd


def _subplots(figsize: tuple[float, float]):
    """A figure and its axes, outside pyplot (no global state to close, no display backend)."""
    from matplotlib.figure import Figure  # deferred: matplotlib (0.4 s; 8 s under TCG) where a figure is drawn only
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


AXES = {"distance_km": "distance (km)", "convergence": "convergence ratio (N:1)", "rate_bps": "rate (bit/s)",
        "loss": "loss probability", "jitter_s": "jitter (s)"}


def swept_axis(points: pd.DataFrame) -> str:
    """The sweep dimension that varies among the points (distance first), for the x axis."""
    pts = points[~points["baseline"]] if "baseline" in points else points
    for col in AXES:
        if col in pts and pts[col].nunique(dropna=True) > 1:
            return col
    return "distance_km"


def _lines(ax, pts: pd.DataFrame, x: str, y: str, scale: float = 1.0, ci: tuple[str, str] | None = None,
           model: str | None = None) -> None:
    """One line per workload, value of the other network field, and swept workload parameters;
    with `ci` the interval columns as error bars, with `model` the prediction as a dashed line."""
    other = "loss" if x != "loss" else "distance_km"
    pts = pts.assign(_swept=_swept_labels(pts))
    for (wl, o, sw), g in pts.groupby(["workload", other, "_swept"], dropna=False):
        g = g.sort_values(x)
        label = f"{wl}, {other} {o:g}" + (f", {sw}" if sw else "")
        if ci and ci[0] in g and g[ci[0]].notna().any():
            lo, hi = (g[y] - g[ci[0]]).clip(lower=0) * scale, (g[ci[1]] - g[y]).clip(lower=0) * scale
            line = ax.errorbar(g[x], g[y] * scale, yerr=[lo.fillna(0), hi.fillna(0)], marker="o", capsize=3,
                               label=label)
            color = line[0].get_color()
        else:
            color = ax.plot(g[x], g[y] * scale, marker="o", label=label)[0].get_color()
        if model and model in g and g[model].notna().any():
            ax.plot(g[x], g[model] * scale, linestyle="--", color=color, alpha=0.7, label=f"{label} (model)")


def _swept_labels(pts: pd.DataFrame) -> list[str]:
    """'algo=flat'-style labels from the swept-parameter columns (the points' `params` field)."""
    if "params" not in pts:
        return [""] * len(pts)
    return [" ".join(f"{k}={v}" for k, v in json.loads(p).items()) if isinstance(p, str) and p else ""
            for p in pts["params"]]


def degradation(points: pd.DataFrame) -> bytes | None:
    """Efficiency degradation (%) against the swept dimension, one line per workload and loss."""
    pts = points[(~points["baseline"]) & points["efficiency_degradation"].notna()]
    if pts.empty:
        return None
    x = swept_axis(points)
    fig, ax = _subplots(figsize=(7, 4))
    _lines(ax, pts, x, "efficiency_degradation", 100, ci=("ci_low", "ci_high"), model="predicted_degradation")
    ax.axhline(0, color="black", linewidth=0.6)
    if x == "distance_km":
        ax.axhline(5, color="grey", linestyle="--", linewidth=1, label="5 % (white paper, 100-500 km)")
    if x in ("rate_bps", "loss") and (pts[x] > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel(AXES[x])
    ax.set_ylabel("efficiency degradation (%)")
    ax.set_title(f"Computing-efficiency degradation vs {AXES[x].split(' (')[0]}\n"
                 "(mean of paired blocks with its interval; dashed: the model fitted on the baseline)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def busbw(points: pd.DataFrame) -> bytes | None:
    """busbw against message size when the run sweeps sizes, else against the swept dimension."""
    if "busbw_gbs" not in points or points["busbw_gbs"].notna().sum() == 0:
        return None
    pts = points[points["busbw_gbs"].notna()]
    by_size = "bytes" in pts and pts["bytes"].nunique() > 1
    x = "bytes" if by_size else swept_axis(points)
    fig, ax = _subplots(figsize=(7, 4))
    _lines(ax, pts, x, "busbw_gbs")
    if by_size:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)" if by_size else AXES[x])
    ax.set_ylabel("busbw (GB/s)")
    ax.set_title("Bus bandwidth vs " + ("size" if by_size else AXES[x].split(" (")[0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def step_time_distributions(rows: pd.DataFrame) -> bytes | None:
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    if ok.empty or "step_time_s" not in ok:
        return None
    labels, data = [], []
    for (wl, label), g in ok.groupby(["workload", "label"], sort=False):
        labels.append(f"{wl}\n{label}")
        data.append((g["step_time_s"] * 1e3).tolist())
    fig, ax = _subplots(figsize=(max(6, 1.3 * len(labels)), 4))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("step time (ms)")
    ax.set_title("Step time per point (one value per block)")
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
