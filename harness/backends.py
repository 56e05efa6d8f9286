"""The lab backends behind one interface: make a lab (netns on this machine, hosts on a testbed),
find and attach to one that is up, and clean what killed runs of any backend left. Above both
metrolab.harness.lab and metrolab.harness.testbed, which know nothing of each other's labs."""

from __future__ import annotations

from metrolab.harness.errors import LabError
from metrolab.harness.lab.clean import clean_all as clean_netns
from metrolab.harness.lab.netns import NetnsLab
from metrolab.harness.lab.netns import attach as attach_netns
from metrolab.harness.lab.state import LabState, all_states
from metrolab.harness.testbed.hosts import HostsLab, clean_journals
from metrolab.harness.testbed.hosts import attach as attach_hosts
from metrolab.harness.testbed.sandbox import cleanup_leftovers

BACKENDS = ("netns", "hosts")


def create_lab(topology, backend: str = "netns", strict: bool = True, testbed=None):
    if backend == "netns":
        return NetnsLab(topology, strict=strict)
    if backend == "hosts":
        if testbed is None:
            raise LabError("the hosts backend runs on a testbed: pass one (--testbed)")
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
        return attach_netns(state)
    if state.backend == "hosts":
        return attach_hosts(state)
    raise LabError(f"lab {state.lab_id} has unknown backend {state.backend!r}")


def clean_all() -> list[str]:
    """`metrolab lab clean`: every lab on this machine whose run is gone, of every backend."""
    hosts = any(st.backend == "hosts" for st in all_states())  # read before the journals go
    removed = clean_netns(per_backend={"sandbox": cleanup_leftovers})
    return removed + (clean_journals() if hosts else [])
