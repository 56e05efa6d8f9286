"""torch.distributed backends by name: the one metrolab brings ("verbs", RoCEv2 over pyverbs) is
registered by importing its module, which every process that names it must do first (a rank forked
from the zygote has it preloaded; a fresh one, on a host with rdma_rxe or a testbed machine, does not)."""

from __future__ import annotations


def register(name: str) -> None:
    """Make `name` a backend `init_process_group` accepts; torch's own (gloo, nccl) need nothing."""
    if name == "verbs":
        import metrolab.harness.dist.verbs_pg  # noqa: F401  # deferred: torch and pyverbs, rank side only; registers it
