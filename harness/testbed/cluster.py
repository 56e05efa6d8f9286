"""The Ray cluster across a testbed's machines, seen from the controller.

The ray_node role starts a node on every machine offering the resource `host:<machine>`; the
controller joins as a Ray Client (`ray://HEAD:client_port`), so nothing of Ray runs on it. Work
meant for a machine runs as a Ray task pinned to that resource.
"""

from __future__ import annotations

import os
import os as _os
import socket as _socket
import time
import time as _time
from collections.abc import Callable
from typing import Any

from metrolab.harness.errors import CapabilityError, LabError
from metrolab.harness.testbed.ops import ray_token
from metrolab.harness.testbed.resolve import Testbed
from metrolab.harness.testbed.versions import collect

# every Ray client metrolab starts: no usage reports; one auth mode on every node (a testbed: tokens)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}

CONNECT_ATTEMPTS = 3
SERVER_DIED = ("Starting Ray client server failed", "ZombieProcess")


def _where() -> dict[str, Any]:
    """Run on a machine: its clock and what it is (hostname, network namespace inode, versions)."""
    return {"time": _time.time(), "hostname": _socket.gethostname(), "netns": _os.stat("/proc/self/ns/net").st_ino,
            "pid": _os.getpid(), "versions": collect()}


class TestbedRay:
    """A Ray Client connection to the testbed's cluster; `on(machine, fn, *args)` runs fn there."""

    __test__ = False  # not a pytest class

    def __init__(self, tb: Testbed, namespace: str | None = None):
        """`namespace`: the Ray namespace this connection's named actors live in (a lab's id: what
        `testbed clean` finds of a killed run's ranks)."""
        # the cluster's token authentication: this process presents the token every node holds.
        # Ray reads the mode into its C++ config when it is imported: set it first, and refresh
        # that config where Ray was imported already (what Ray's own ray.init does on a mode change)
        os.environ.update(RAY_ENV | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(ray_token(tb, create=False))})
        try:
            import ray  # deferred: Ray, only where a cluster is used
            from ray._raylet import Config  # type: ignore[attr-defined]  # Ray's cached C++ config
        except ImportError as exc:
            raise CapabilityError(f"Ray is not importable ({exc})") from None
        Config.initialize("")
        self.ray, self.tb = ray, tb
        head = tb.ray_head
        self.address = f"ray://{head.mgmt}:{tb.spec.ray.client_port}"
        t0 = time.monotonic()
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                ray.init(address=self.address, log_to_driver=False, namespace=namespace)
                break
            except ConnectionError as exc:
                # the head's proxy starts a server process per client; on a loaded machine that
                # process can die starting (seen in local suite runs: "Starting Ray client server
                # failed", or the proxy finding it a zombie). A second try gets a new one; a
                # cluster that is not there fails every try the same way, at once
                if any(w in str(exc) for w in SERVER_DIED) and attempt + 1 < CONNECT_ATTEMPTS:
                    time.sleep(2)
                    continue
                raise LabError(f"testbed {tb.name}: no Ray cluster at {self.address} ({exc}); "
                               "run `metrolab testbed provision` first") from None
        self.connect_s = time.monotonic() - t0

    def kill_actors(self, namespace: str) -> list[str]:
        """Every named actor in `namespace` (a killed run's ranks, whose Ray Client session Ray
        keeps for a grace period: they would hold their ports against the next run)."""
        out = []
        for a in self.ray.util.list_named_actors(all_namespaces=True):
            if a["namespace"] == namespace:
                try:
                    self.ray.kill(self.ray.get_actor(a["name"], namespace=namespace), no_restart=True)
                except ValueError:  # gone meanwhile
                    continue
                out.append(a["name"])
        return out

    def machines(self) -> dict[str, dict[str, Any]]:
        """machine -> its Ray node (alive ones offering `host:<machine>`)."""
        out = {}
        for node in self.ray.nodes():
            if not node.get("Alive"):
                continue
            for res in node.get("Resources", {}):
                if res.startswith("host:"):
                    out[res[5:]] = node
        return out

    def on(self, machine: str, fn: Callable, *args, timeout: float = 120, **kw) -> Any:
        task = self.ray.remote(num_cpus=0, resources={f"host:{machine}": 0.001})(fn)
        ref = task.remote(*args, **kw)
        try:
            return self.ray.get(ref, timeout=timeout)
        except self.ray.exceptions.GetTimeoutError:
            raise LabError(f"testbed {self.tb.name}: machine {machine} did not answer within {timeout:g} s") from None

    def clock(self, machine: str, samples: int = 5) -> dict[str, Any]:
        """The machine's clock offset from the controller's, from the sample with the shortest round
        trip: offset = remote − midpoint, known to ± half that round trip."""
        best: tuple[float, float, dict] | None = None
        for _ in range(samples):
            t0 = time.time()
            info = self.on(machine, _where)
            t1 = time.time()
            rtt = t1 - t0
            if best is None or rtt < best[0]:
                best = (rtt, info["time"] - (t0 + t1) / 2, info)
        assert best is not None
        return {"offset_s": best[1], "uncertainty_s": best[0] / 2, "where": best[2]}

    def close(self) -> None:
        self.ray.shutdown()

    def __enter__(self) -> TestbedRay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
