"""Applies a scenario's policy to the lab's namespaces, replacing the previous one: everything the
old policy installed is removed before the new one goes in, so switching policies between sweep
points leaves nothing stale. (WIP: the allow-list; flow control, slices and load balancing next.)
"""

from __future__ import annotations

from harness import sh
from harness.policy import acl


class PolicyApplier:
    def __init__(self, lab):
        self.lab = lab
        self.current = None
        self._acl_hosts: list[str] = []

    def addresses(self, host: str) -> list[str]:
        n = self.lab.topology.nodes[host]
        return [str(n.address)] + ([str(n.address6)] if n.address6 else [])

    def apply(self, policy) -> None:
        """Make `policy` (a PolicySpec, or None for no policy) the one in force."""
        self.clear()
        if policy is None:
            return
        if policy.allow is not None:
            addrs = {h: self.addresses(h) for h in self.lab.topology.nodes if not self.lab.topology.nodes[h].is_switch}
            hosts = acl.agent_hosts(policy.allow)
            for h in hosts:
                self._acl_hosts.append(h)  # recorded first: a failure half-way still gets cleared
                sh.nft(acl.script(h, policy.allow, addrs), netns=self.lab.ns(h))
        self.current = policy

    def clear(self) -> None:
        for h in self._acl_hosts:
            sh.nft(acl.clear_script(), netns=self.lab.ns(h))
        self._acl_hosts = []
        self.current = None
