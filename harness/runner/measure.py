"""A run measured where the host put it (the guest kernel): the host writes a typed request into
the run directory, a share both kernels see; `metrolab measure RUN_DIR` in the guest measures it
into the same directory's Record and judges nothing. The host's Judge reads that Record: one
verdict, from the rows, whichever kernel measured them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from metrolab.harness import settings
from metrolab.harness.errors import SpecError
from metrolab.harness.runner.record import Record
from metrolab.harness.runner.run import RunOutcome, run_scenario, soak_plan
from metrolab.harness.scenario.spec import Scenario, load_scenario
from metrolab.harness.spec.loader import errors_from_pydantic

REQUEST = "request.json"


class Overrides(BaseModel):
    """What `metrolab run` may change of a scenario's statistics (None: the scenario's own)."""

    model_config = ConfigDict(extra="forbid")
    until_conclusive: bool | None = None
    max_repetitions: int | None = None
    max_minutes: float | None = None
    seed: int | None = None

    def apply(self, scn: Scenario) -> Scenario:
        stats = scn.spec.statistics
        for name, value in self.model_dump().items():
            if value not in (None, False):
                setattr(stats, name, value)
        if stats.until_conclusive and stats.max_repetitions < scn.spec.repetitions:
            stats.max_repetitions = scn.spec.repetitions
        return scn


class MeasureRequest(BaseModel):
    """One run to measure: the scenario (built-in name or path, as the host resolved it), how, and
    for a soak its duration and point."""

    model_config = ConfigDict(extra="forbid")
    scenario: str
    quick: bool = False
    resume: bool = False
    overrides: Overrides = Overrides()
    soak_s: float | None = None
    point: str | None = None

    def write(self, run_dir: Path) -> None:
        Record(run_dir).write_json(REQUEST, self.model_dump(mode="json"))


def measure(run_dir: str | Path) -> RunOutcome:
    """The request in `run_dir`, measured into it (refused as the host's run would be: a bad point
    or duration before anything is built)."""
    run_dir = Path(run_dir)
    doc: Any = Record(run_dir).read_json(REQUEST)
    if doc is None:
        raise SpecError(str(run_dir / REQUEST), "", str(run_dir), "no measurement request in this run directory")
    try:
        req = MeasureRequest.model_validate(doc)
    except ValidationError as exc:
        raise errors_from_pydantic(exc, str(run_dir / REQUEST)) from None
    scn = req.overrides.apply(load_scenario(req.scenario, quick=req.quick))
    plan = soak_plan(scn, req.soak_s, req.point) if req.soak_s is not None else None
    return run_scenario(scn, run_dir, resume=req.resume, backend="vm" if settings.in_guest() else "netns", soak=plan)
