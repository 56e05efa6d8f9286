"""A task plan: transfer requests on one path of a topology, the path's bandwidth history, and the
rate changes tenants ask for mid-transfer (white paper §4.2.1-4.2.2). `metrolab tasks PLAN`
commits a window for each request (metrolab.harness.scenario.schedule) and plays the plan on a lab
(metrolab.harness.runner.tasks).

    name: task-scheduling
    topology: metro-pair
    path: {link: wan-ab, egress: gw-a, src: a1, dst: b1, capacity: 50mbit}
    minute: 1s                  # a minute-level slot plays in a second (hour and day scale alike)
    guard: 250ms                # each window's start, left to the sender starting
    history: {interval: 1s, period: 10s, used: [25mbit, 25mbit, ..., 5mbit]}
    requests:
      - {name: sync, bytes: 3m, deadline: 4s, service: minute}
    changes:
      - {task: sync, after: 500ms, rate: 25mbit}   # elastic: the tenant's slice raised mid-transfer

Deadlines and times are the lab's (seconds from the plan's start), as played.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from metrolab.harness.errors import SpecError, SpecErrors
from metrolab.harness.resources import scenarios_dir
from metrolab.harness.scenario.events import seconds
from metrolab.harness.scenario.schedule import SLOT_S, History, Request, ServiceLevel
from metrolab.harness.spec.loader import find_file, read_yaml, validate_mapping
from metrolab.netem.units import parse_rate, parse_size


def _rate(v: Any) -> float:
    return parse_rate(v) if isinstance(v, str) else float(v)


def _size(v: Any) -> Any:
    return parse_size(v) if isinstance(v, str) else v


# the units a plan is written in: '250ms' or seconds, '50mbit' or bit/s, '15mb' or bytes
Seconds = Annotated[float, BeforeValidator(seconds)]
Rate = Annotated[float, BeforeValidator(_rate)]
Bytes = Annotated[int, BeforeValidator(_size)]


class PathSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    link: str = Field(description="the path's bottleneck link, whose egress carries the slices")
    egress: str = Field(description="the switch whose egress onto `link` is shaped (the senders' side)")
    src: str = Field(description="the host the transfers leave from")
    dst: str = Field(description="the host they go to")
    capacity: Rate = Field(gt=0, description="the rate the operator sells on the link")


class HistorySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interval: Seconds = Field(gt=0, description="one sample per interval (the lab's time)")
    period: Seconds | None = Field(default=None, description="the samples repeat with this period (a day's "
                                                             "profile, played in the lab's time)")
    used: list[Rate] = Field(description="what the path's own traffic carried, sample by sample")


class RequestSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    bytes: Bytes
    deadline: Seconds = Field(description="from the plan's start (the lab's time)")
    service: ServiceLevel = "minute"


class ChangeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str
    after: Seconds = Field(description="how long into the task's window")
    rate: Rate = Field(description="the slice's new rate")


class TaskPlanSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    topology: str = "metro-pair"
    path: PathSpec
    minute: Seconds = Field(default=60.0, description="how long a minute-level slot plays in the lab "
                                                      "(hour and day slots scale alike)")
    guard: Seconds = Field(default=0.0, ge=0, description="the start of each window the transfer is not "
                                                          "counted on for (its sender starting): the bytes must "
                                                          "fit in the rest")
    history: HistorySpec
    requests: list[RequestSpec] = Field(min_length=1)
    changes: list[ChangeSpec] = Field(default_factory=list)

    @property
    def time_scale(self) -> float:
        return self.minute / SLOT_S["minute"]

    def history_model(self) -> History:
        return History(self.history.interval, tuple(self.history.used), self.history.period)

    def request_models(self) -> list[Request]:
        return [Request(r.name, r.bytes, r.deadline, r.service) for r in self.requests]


def check_plan(spec: TaskPlanSpec, topo, file: str) -> None:
    """Names the plan uses that the topology lacks, all at once."""
    errors = []
    links = {lk.name: lk for lk in topo.links}
    p = spec.path
    if p.link not in links:
        errors.append(SpecError(file, "path.link", p.link, f"no such link in {topo.name} "
                                f"(links: {', '.join(sorted(links))})"))
    elif p.egress not in (links[p.link].a, links[p.link].b):
        errors.append(SpecError(file, "path.egress", p.egress, f"not an end of {p.link} "
                                f"({links[p.link].a}, {links[p.link].b})"))
    hosts = {h.name for h in topo.hosts()}
    for fld in ("src", "dst"):
        if getattr(p, fld) not in hosts:
            errors.append(SpecError(file, f"path.{fld}", getattr(p, fld), f"not a host of {topo.name} "
                                    f"(hosts: {', '.join(sorted(hosts))})"))
    names = [r.name for r in spec.requests]
    for i, r in enumerate(spec.requests):
        if names.count(r.name) > 1:
            errors.append(SpecError(file, f"requests[{i}].name", r.name, "two requests have this name"))
        if r.bytes <= 0:
            errors.append(SpecError(file, f"requests[{i}].bytes", r.bytes, "a transfer has bytes (> 0)"))
    for i, c in enumerate(spec.changes):
        if c.task not in names:
            errors.append(SpecError(file, f"changes[{i}].task", c.task, f"no such request (requests: "
                                    f"{', '.join(names)})"))
    if errors:
        raise SpecErrors(errors)


def builtin_plans() -> dict[str, Path]:
    return {p.stem: p for p in sorted((scenarios_dir() / "tasks").glob("*.yaml"))}


def load_plan(ref: str) -> tuple[TaskPlanSpec, str]:
    """A plan from a path or a built-in name; (the spec, its file)."""
    path = find_file(ref, builtin_plans(), "task plan")
    return validate_mapping(TaskPlanSpec, read_yaml(path), str(path), "a task plan is a mapping with a path, "
                            "a history and requests"), str(path)
