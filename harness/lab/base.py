"""The lab interface every backend (netns, vm, hosts) implements."""

from __future__ import annotations

import abc
from typing import Any

from harness.lab.plan import LabPlan, build_plan
from harness.spec.resolve import Topology
from netem.profile import Impairment


class Lab(abc.ABC):
    backend: str = "?"

    def __init__(self, topology: Topology, lab_id: str):
        self.topology = topology
        self.lab_id = lab_id
        self.plan: LabPlan = build_plan(topology)

    @abc.abstractmethod
    def up(self) -> None:
        """Build everything; on any failure undo what was built and re-raise."""

    @abc.abstractmethod
    def down(self) -> None:
        """Remove everything this lab created. Safe to call twice."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """Nodes, links, addresses and qdiscs as read back from the lab."""

    @abc.abstractmethod
    def impair(self, link: str, imp: Impairment, strict: bool = True) -> None:
        """Replace the impairment on both ends of `link`."""

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()
