"""Which backend a command runs on: netns where the host kernel has what the topology needs,
vm (the same lab inside a guest kernel) where it does not; --backend overrides."""

from __future__ import annotations

from metrolab.harness import settings
from metrolab.harness.capabilities import probe
from metrolab.harness.errors import CapabilityError
from metrolab.netem.shaper import Shaper

CHOICES = ("auto", "netns", "vm")
RDMA_NEEDS = {"rxe": "Soft-RoCE between lab hosts"}  # what the RDMA commands need of a backend


def in_guest() -> bool:
    return settings.in_guest()


def needs(topology, rdma: bool = False) -> dict[str, str]:
    """Kernel features this topology needs -> why."""
    out: dict[str, str] = {}
    shaper = Shaper(None, "", has_netem=False, has_nft=True)
    for link in topology.links:
        missing = shaper.check(link.impairment(topology.group_index), link.name)
        if missing:
            out.setdefault("netem", f"link {link.name} needs {', '.join(missing)}")
    if rdma or any(h.rdma for h in topology.hosts()):
        out["rxe"] = "Soft-RoCE between lab hosts"
    return out


def choose(requested: str, needed: dict[str, str]) -> tuple[str, str]:
    """(backend, why)."""
    if requested not in CHOICES:
        raise CapabilityError(f"unknown backend {requested!r} (choose from {', '.join(CHOICES)})")
    if in_guest():
        return "netns", "inside the guest kernel"
    if requested != "auto":
        return requested, "requested with --backend"
    caps = probe()
    missing = {k: v for k, v in needed.items() if not caps.has(k)}
    if not missing:
        return "netns", f"the host kernel ({caps.kernel}) has what this needs"
    return "vm", (f"the host kernel ({caps.kernel}) lacks "
                  + "; ".join(f"{k} ({why})" for k, why in missing.items()))
