"""What a scenario needs of the kernel (feature -> why), from its topology, workloads, sweep and
policies: the backend choice (metrolab.harness.lab.select.choose) follows from it."""

from __future__ import annotations

from metrolab.harness.lab.select import needs
from metrolab.harness.policy.apply import marks_ecn
from metrolab.workloads.registry import WORKLOADS


def scenario_needs(scn) -> dict[str, str]:
    spec = scn.spec
    needed = needs(scn.topology)
    if any(WORKLOADS[w.kind].needs_rdma_for(w) for w in spec.workloads):
        needed["rxe"] = "Soft-RoCE between lab hosts"
    sweep = spec.sweep
    if any(d > 0 for d in sweep.distance_km) or any(x > 0 for x in sweep.loss) or any(j > 0 for j in sweep.jitter):
        needed.setdefault("netem", "the sweep's distances, loss or jitter")
    ecn = [p.name for p in spec.policies if marks_ecn(p) and p.name in sweep.policy]
    if ecn:
        needed["red"] = f"ECN marking (RED) in policy {', '.join(ecn)}"
    srv6 = [p.name for p in spec.policies if p.load_balancing is not None and p.load_balancing.encap == "srv6"
            and p.name in sweep.policy]
    if srv6:
        needed["srv6"] = f"SRv6 planned paths in policy {', '.join(srv6)}"
    return needed
