"""Lab backends behind one interface, and finding the labs this machine holds."""

from __future__ import annotations

from metrolab.harness.errors import LabError
from metrolab.harness.lab.state import LabState, all_states

BACKENDS = ("netns", "hosts")


def create_lab(topology, backend: str = "netns", strict: bool = True, testbed=None):
    if backend == "netns":
        from metrolab.harness.lab.netns import NetnsLab
        return NetnsLab(topology, strict=strict)
    if backend == "hosts":
        if testbed is None:
            raise LabError("the hosts backend runs on a testbed: pass one (--testbed)")
        from metrolab.harness.lab.hosts import HostsLab
        return HostsLab(testbed)
    raise LabError(f"unknown lab backend {backend!r} (have: {', '.join(BACKENDS)})")


def find_state(lab_id: str | None) -> LabState:
    """The journal of lab `lab_id`, or of the only lab that is up."""
    states = [s for s in all_states() if s.status == "up" and s.backend != "sandbox"]  # a sandbox holds machines
    if lab_id:
        for s in all_states():
            if s.lab_id == lab_id:
                return s
        raise LabError(f"no lab {lab_id!r} on this machine (labs up: {', '.join(s.lab_id for s in states) or 'none'})")
    if not states:
        raise LabError("no lab is up (start one with `metrolab lab up`)")
    if len(states) > 1:
        raise LabError(f"several labs are up ({', '.join(s.lab_id for s in states)}): pick one with --lab")
    return states[0]


def attach(state: LabState):
    if state.backend == "netns":
        from metrolab.harness.lab.netns import attach as attach_netns
        return attach_netns(state)
    if state.backend == "hosts":
        from metrolab.harness.lab.hosts import attach as attach_hosts
        return attach_hosts(state)
    raise LabError(f"lab {state.lab_id} has unknown backend {state.backend!r}")


__all__ = ["BACKENDS", "LabState", "attach", "create_lab", "find_state"]
