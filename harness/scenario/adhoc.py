"""A one-workload scenario built from arguments (`metrolab workload`, `metrolab.run_workload`):
the baseline and the given network points, validated like a scenario file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metrolab.harness.scenario.spec import scenario_from_data


def workload_scenario(kind: str, *, params: dict[str, Any] | None = None, hosts: list[str] | None = None,
                      topology: str = "default", links: list[str] | None = None,
                      distance_km: Sequence[float] = (0.0,), loss: Sequence[float] = (0.0,),
                      convergence: Sequence[float] = (1.0,), repetitions: int = 3, warmups: int = 1,
                      scale: float = 1.0, source: str = "metrolab workload") -> dict:
    """The scenario's data (what a YAML file would hold); bad input raises SpecError naming `source`."""
    w: dict[str, Any] = {"kind": kind, "params": dict(params or {})}
    if hosts:
        w["hosts"] = list(hosts)
    sweep: dict[str, Any] = {"distance_km": list(distance_km), "loss": list(loss), "convergence": list(convergence)}
    if links:
        sweep["links"] = list(links)
    data = {"name": kind, "topology": topology, "workloads": [w], "sweep": sweep, "repetitions": repetitions,
            "warmups": warmups, "scale": scale}
    scenario_from_data(data, source)  # bad input fails here, before a run directory exists
    if Path(topology).exists():
        data["topology"] = str(Path(topology).resolve())  # the file is written into the run directory
    return data
