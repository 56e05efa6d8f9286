"""Scenario spec: a topology, workloads, a sweep grid, repetitions, a scale factor and acceptance
criteria, as validated pydantic models; errors name the file, field and value.

    name: allreduce-distance
    topology: default                       # built-in name, path, or an inline mapping
    workloads:
      - {kind: collective, hosts: [a1, b1], params: {backend: gloo, op: all_reduce, size: 4m}}
    sweep: {links: [wan-ab-1], distance_km: [0, 100, 500], loss: [0, 1e-4]}
    repetitions: 3
    warmups: 1
    scale: 1000                             # rates and message sizes divided by 1000
    acceptance:
      - efficiency_degradation <= 0.05 where distance_km in [100, 500] and loss == 0
    quick: {sweep: {distance_km: [0, 100]}, repetitions: 1}   # what --quick overrides
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from metrolab.harness.errors import SpecError, SpecErrors
from metrolab.harness.policy.model import PolicySpec, check_against
from metrolab.harness.resources import scenarios_dir
from metrolab.harness.scenario.criteria import Criterion, parse_criterion
from metrolab.harness.scenario.events import EventSpec
from metrolab.harness.scenario.points import Point, param_combinations
from metrolab.harness.spec.loader import errors_from_pydantic, find_file, load_topology, read_yaml, topology_from_data
from metrolab.harness.spec.topology import NAME
from metrolab.netem.units import parse_rate, parse_time
from metrolab.workloads.registry import WORKLOADS, workload_metrics

POINT_NETWORK_FIELDS = ("distance_km", "loss", "rate_bps", "convergence", "jitter_s", "policy", "baseline",
                        "workload", "params", "label", "status", "error", "repetition")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# a field marked so says how results are judged or how the measurement is prepared, not what is
# measured: it stays out of the scenario's hash, so a stored run resumes under another value
# (metrolab.harness.runner.results)
JUDGING: dict[str, Any] = {"judging": True}


def judging_fields(model: type[BaseModel]) -> dict[str, Any]:
    """The `exclude` for model_dump that leaves out every JUDGING field, nested models included."""
    out: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("judging"):
            out[name] = True
        elif isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            inner = judging_fields(f.annotation)
            if inner:
                out[name] = inner
    return out


class WorkloadSpec(_Strict):
    kind: str
    name: str | None = Field(default=None, pattern=NAME)
    hosts: list[str] | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class FaultSpec(_Strict):
    """Deliberate failures, to prove the runner survives them: the rank crashes (exits) or hangs
    at the given sweep point."""

    kind: Literal["crash", "hang"] = "crash"
    rank: int = Field(ge=0)
    point: dict[str, Any] = Field(default_factory=dict)


class SweepSpec(_Strict):
    links: list[str] | None = None
    distance_km: list[float] = Field(default_factory=lambda: [0.0])
    loss: list[float] = Field(default_factory=lambda: [0.0])
    loss_model: Literal["random", "gilbert-elliott"] = "random"
    burst: float = Field(default=0.3, gt=0, le=1, description="gilbert-elliott: chance to leave the bad state")
    rate: list[float | None] = Field(default_factory=lambda: [None])  # type: ignore[arg-type]  # pydantic's stub wants list[float | None]
    convergence: list[float] = Field(default_factory=lambda: [1.0])
    jitter: list[float] = Field(default_factory=lambda: [0.0])
    policy: list[str] = Field(default_factory=lambda: ["none"])
    params: dict[str, list[str | int | float | bool]] = Field(
        default_factory=dict, description="workload parameters swept like network fields, e.g. request_rate: [1, 4]")

    @field_validator("params")
    @classmethod
    def _params(cls, v):
        for name, values in v.items():
            if not values:
                raise ValueError(f"empty sweep: params.{name} needs at least one value")
            if name == "backend":
                raise ValueError("the backend cannot be swept (the process group lives across points); "
                                 "give each backend its own workload")
            if name in POINT_NETWORK_FIELDS:
                raise ValueError(f"params.{name} would shadow the network field {name}")
        return v

    @field_validator("rate", mode="before")
    @classmethod
    def _rates(cls, v):
        if not isinstance(v, list):
            raise ValueError("a list of rates (e.g. [100gbit, 400gbit]) or null for the link's own")
        return [None if x in (None, "line") else parse_rate(x) for x in v]

    @field_validator("jitter", mode="before")
    @classmethod
    def _jitters(cls, v):
        if not isinstance(v, list):
            raise ValueError("a list of times (e.g. [0, 100us])")
        return [parse_time(x) for x in v]

    @field_validator("distance_km", "loss", "rate", "convergence", "jitter", "policy")
    @classmethod
    def _nonempty(cls, v, info):
        if not v:
            raise ValueError(f"empty sweep: {info.field_name} needs at least one value")
        return v

    @field_validator("distance_km")
    @classmethod
    def _distance(cls, v):
        if any(x < 0 for x in v):
            raise ValueError("distances are >= 0 km")
        return v

    @field_validator("loss")
    @classmethod
    def _loss(cls, v):
        if any(not 0 <= x < 1 for x in v):
            raise ValueError("loss is a probability in [0, 1)")
        return v

    @field_validator("convergence")
    @classmethod
    def _conv(cls, v):
        if any(x < 1 for x in v):
            raise ValueError("a convergence ratio N:1 has N >= 1")
        return v



class StatisticsSpec(_Strict):
    """How points are measured and judged (metrolab.harness.scenario.stats, metrolab.harness.scenario.sequential)."""

    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="interval coverage")
    max_cv: float = Field(default=0.05, gt=0, description="a step time noisier than this is not judged at face value")
    trend_alpha: float = Field(default=0.05, gt=0, lt=1, description="Kendall p-value under which a trend is declared")
    seed: int | None = Field(default=None, description="block order seed (default: drawn and recorded)")
    until_conclusive: bool = Field(default=False, description="the sequential design: a look after every block "
                                   "from `repetitions`, stopping when every criterion is conclusive")
    max_repetitions: int = Field(default=12, ge=1, description="block budget per workload with until_conclusive (the "
                                 "sequential design spends its error over this many blocks)")
    max_minutes: float = Field(default=30, gt=0, description="time budget of the run with until_conclusive")
    allowed_failures: int = Field(default=0, ge=0, description="failed repetitions a point may have and still be "
                                  "judged on the rest (0: a failed repetition fails the point)")
    family: Literal["holm", "per-point"] = Field(default="holm", description="a criterion over several points: "
                                                 "Holm's correction before a point fails (or none, said so)")
    max_interference: float = Field(default=0.1, gt=0, le=1, description="CPU share of the machine taken outside "
                                    "the lab during a measurement above which its block is left out and replaced "
                                    "(netns backend; metrolab.harness.kernel.interference)")
    max_guest_wait: float = Field(default=0.15, gt=0, le=1, description="share of the time the guest's threads "
                                  "waited for a core above which a block is left out and replaced (vm backend)")
    max_interfered_blocks: int = Field(default=4, ge=0, description="blocks that may be replaced for interference "
                                       "per workload before the run goes on with what it has")


class WarmBlocksSpec(_Strict):
    """Discarded passes through every point before the first measured block: the guest's first
    passes through each configuration's qdiscs and code paths are slow (metrolab.harness.runner.run)."""

    min: int = Field(default=1, ge=0, description="passes always made")
    max: int = Field(default=4, ge=0, description="passes at most, while the step times still move")
    tolerance: float = Field(default=0.03, gt=0, description="stationary: the median |log ratio| of each point's step "
                             "time to the previous pass's is under this")


class HeadroomSpec(_Strict):
    """Whether the lab, not the host, sets the step time (metrolab.harness.runner.headroom)."""

    check: bool = Field(default=True, description="measure the unshaped capacity before the sweep")
    max_capacity_ratio: float = Field(default=0.5, gt=0, le=1,
                                      description="emulated line rate / measured capacity above which the host is "
                                                  "the bottleneck")
    max_utilization: float = Field(default=0.8, gt=0, le=1,
                                   description="offered / served requests above which a workload measures its queue")
    # judging: added after runs were made (max_utilization, there from the start, is in the hash:
    # marking it now would change every earlier run's)
    max_cpu_load: float = Field(default=0.8, gt=0, le=1, json_schema_extra=JUDGING,
                                description="the ranks' CPU time over the machine's cores (at a point or its "
                                            "baseline) above which the CPU, not the network, may set the step time")
    auto_scale: bool = Field(default=False, description="divide rates and bytes further until the ratio holds")


class QuickSpec(_Strict):
    sweep: dict[str, Any] = Field(default_factory=dict)
    repetitions: int | None = Field(default=None, ge=1)
    warmups: int | None = Field(default=None, ge=0)
    warm_blocks: dict[str, Any] = Field(default_factory=dict)
    statistics: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict, description="workload params overridden in --quick")


class ScenarioSpec(_Strict):
    name: str = Field(pattern=NAME)
    description: str = ""
    topology: str | dict[str, Any] = "default"
    workloads: list[WorkloadSpec] = Field(min_length=1)
    sweep: SweepSpec = Field(default_factory=SweepSpec)
    repetitions: int = Field(default=3, ge=1)
    warmups: int = Field(default=1, ge=0)
    warm_blocks: WarmBlocksSpec = Field(default_factory=WarmBlocksSpec, json_schema_extra=JUDGING)
    scale: float | Literal["auto"] = Field(default=1.0, description="time-preserving scale factor k, or auto "
                                                                   "(k from the measured headroom)")
    timeout_s: float = Field(default=600, gt=0, description="per sweep point")
    acceptance: list[str] = Field(default_factory=list)
    faults: list[FaultSpec] = Field(default_factory=list)
    events: list[EventSpec] = Field(default_factory=list, description="network changes during each repetition "
                                    "of the points they name (metrolab.harness.scenario.events)")
    policies: list[PolicySpec] = Field(default_factory=list)
    statistics: StatisticsSpec = Field(default_factory=StatisticsSpec, json_schema_extra=JUDGING)
    headroom: HeadroomSpec = Field(default_factory=HeadroomSpec)
    link_samples: float | None = Field(default=None, gt=0, description="seconds between samples of the swept "
                                       "links' bytes during each repetition: link utilization over time "
                                       "(link_util, link_util_min, link_series)")
    quick: QuickSpec | None = None

    @field_validator("scale")
    @classmethod
    def _scale(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("the scale factor k is >= 1 (or auto)")
        return v

    @model_validator(mode="after")
    def _auto_scale(self):
        if self.scale == "auto":  # k from 1, chosen by the headroom check
            self.scale = 1.0
            self.headroom.auto_scale = True
        return self

    @model_validator(mode="after")
    def _unique_workloads(self):
        names = [w.name or w.kind for w in self.workloads]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"workload names must be unique; give each a name (repeated: {', '.join(sorted(dup))})")
        return self


class Scenario:
    """A validated scenario: the spec, its topology, parsed criteria and workload params."""

    def __init__(self, spec: ScenarioSpec, source: str, topology, criteria: list[Criterion], quick: bool):
        self.spec, self.source, self.topology, self.criteria, self.quick = spec, source, topology, criteria, quick

    @property
    def name(self) -> str:
        return self.spec.name


# --quick makes no warm passes unless its scenario's quick section asks for them: a smoke run's
# blocks are few and its numbers are no claim, and a pass through every point doubled the suite's
# longest tests (the main job's quick section keeps one to two)
QUICK_WARM_BLOCKS = {"min": 0, "max": 0}


def _apply_quick(data: dict) -> dict:
    q = data.get("quick") or {}
    out = dict(data)
    out["warm_blocks"] = {**(data.get("warm_blocks") or {}), **QUICK_WARM_BLOCKS}
    if q.get("sweep"):
        out["sweep"] = {**(data.get("sweep") or {}), **q["sweep"]}
    for key in ("repetitions", "warmups"):
        if q.get(key) is not None:
            out[key] = q[key]
    for key in ("statistics", "warm_blocks"):
        if q.get(key):
            out[key] = {**(data.get(key) or {}), **q[key]}
    if q.get("params"):
        out["workloads"] = [{**w, "params": {**(w.get("params") or {}), **q["params"]}} for w in data["workloads"]]
    return out


def scenario_from_data(data: Any, file: str, quick: bool = False, base_dir: Path | None = None) -> Scenario:
    if not isinstance(data, dict):
        raise SpecError(file, "", data, "a scenario is a mapping (name, topology, workloads, sweep, …)")
    try:
        ScenarioSpec.model_validate(data)  # the file as written, errors at its own paths
        spec = ScenarioSpec.model_validate(_apply_quick(data) if quick else data)
    except ValidationError as exc:
        raise errors_from_pydantic(exc, file) from None
    if isinstance(spec.topology, dict):
        topo = topology_from_data(spec.topology, f"{file}: topology")
    else:
        ref = spec.topology
        if base_dir is not None and (base_dir / ref).exists():
            ref = str(base_dir / ref)
        topo = load_topology(ref)
    errors: list[SpecError] = []
    links = {lk.name for lk in topo.links}
    for w in spec.workloads:  # a file a workload names is relative to the scenario's own folder
        for name in getattr(WORKLOADS.get(w.kind), "path_params", ()):
            if isinstance(w.params.get(name), str):
                w.params[name] = str(((base_dir or Path.cwd()) / w.params[name]).resolve())
    for i, w in enumerate(spec.workloads):
        if w.kind not in WORKLOADS:
            errors.append(SpecError(file, f"workloads[{i}].kind", w.kind,
                                    f"unknown workload (known: {', '.join(sorted(WORKLOADS))})"))
            continue
        for combo in param_combinations(spec.sweep):
            try:
                WORKLOADS[w.kind].validate(w.model_copy(update={"params": {**w.params, **dict(combo)}}), topo,
                                           1.0 if spec.scale == "auto" else spec.scale)  # auto starts at k = 1
            except SpecError as exc:
                where = f"workloads[{i}].{exc.path}" if exc.path else f"workloads[{i}]"
                if combo and exc.path.startswith("params.") and exc.path.split(".")[1] in dict(combo):
                    where = f"sweep.{exc.path}"
                errors.append(SpecError(file, where, exc.value, exc.message))
                break
    for j, name in enumerate(spec.sweep.links or []):
        if name not in links:
            errors.append(SpecError(file, f"sweep.links[{j}]", name, f"no such link in {topo.name} "
                                    f"(links: {', '.join(sorted(links))})"))
    if spec.sweep.links is None and not any(n.startswith("wan") for n in links):
        errors.append(SpecError(file, "sweep.links", None, "name the links the sweep impairs (this topology has "
                                "no link called wan*)"))
    errors += check_against(spec.policies, topo, file)
    known = ["none"] + [p.name for p in spec.policies]
    for j, name in enumerate(spec.sweep.policy):
        if name not in known:
            errors.append(SpecError(file, f"sweep.policy[{j}]", name, f"unknown policy (policies: {', '.join(known)})"))
    metrics = workload_metrics([w.kind for w in spec.workloads if w.kind in WORKLOADS])
    criteria = []
    for k, text in enumerate(spec.acceptance):
        try:
            criteria.append(parse_criterion(text, metrics, tuple(spec.sweep.params)))
        except ValueError as exc:
            errors.append(SpecError(file, f"acceptance[{k}]", text, str(exc)))
    for k, f in enumerate(spec.faults):
        if f.rank >= max(len(WORKLOADS[w.kind].hosts(w, topo)) for w in spec.workloads if w.kind in WORKLOADS):
            errors.append(SpecError(file, f"faults[{k}].rank", f.rank, "no such rank"))
    errors += _check_events(spec, topo, file)
    if errors:
        raise SpecErrors(errors) if len(errors) > 1 else errors[0]
    return Scenario(spec, file, topo, criteria, quick)


def _check_events(spec: ScenarioSpec, topo, file: str) -> list[SpecError]:
    errors: list[SpecError] = []
    links = {lk.name for lk in topo.links}
    switches = {n.name for n in topo.switches()}
    fields = set(Point.__dataclass_fields__) | set(spec.sweep.params)
    for k, e in enumerate(spec.events):
        if e.link is not None and e.link not in links:
            errors.append(SpecError(file, f"events[{k}].link", e.link, f"no such link in {topo.name} "
                                    f"(links: {', '.join(sorted(links))})"))
        if e.node is not None and e.node not in switches:
            errors.append(SpecError(file, f"events[{k}].node", e.node, f"not a switch of {topo.name} "
                                    f"(switches: {', '.join(sorted(switches))})"))
        for key in e.point:
            if key not in fields:
                errors.append(SpecError(file, f"events[{k}].point.{key}", key, "not a sweep field or swept parameter "
                                        f"(fields: {', '.join(sorted(fields))})"))
    if spec.events:
        for i, w in enumerate(spec.workloads):
            if w.kind in WORKLOADS and not WORKLOADS[w.kind].logs_steps:
                errors.append(SpecError(file, f"workloads[{i}].kind", w.kind, "events need a workload that times "
                                        "each step (training-step, pd-inference)"))
    return errors


def builtin_scenarios() -> dict[str, Path]:
    return {p.stem: p for p in sorted(scenarios_dir().glob("*.yaml"))}


def load_scenario(ref: str, quick: bool = False) -> Scenario:
    path = find_file(ref, builtin_scenarios(), "scenario")
    return scenario_from_data(read_yaml(path), str(path), quick=quick, base_dir=path.parent)
