"""Ray side of the runner: one actor per rank, which starts the rank (metrolab.harness.runner.rank_agent)
inside its lab host's namespace and relays commands to it.

Ray never enters a lab namespace: its own sockets stay on the machine's loopback, and the rank's
traffic stays in the lab. On a cluster of real hosts (`--ray-address`), an actor is placed on the
node that offers the resource `host:<name>` and starts its rank there without a namespace.

Ray's processes are started by `ray.init` (a local cluster) and stopped by `ray.shutdown`, which
ends exactly the processes it started (never `ray stop`, which matches by name machine-wide).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from metrolab.harness.errors import CapabilityError, LabError
from metrolab.harness.kernel.zygote import python_popen
from metrolab.harness.testbed.cluster import RAY_ENV


class RankFailed(LabError):
    """A rank crashed, answered with an error, or outlived its timeout."""


class RankProcess:
    """The rank process and its line protocol (used inside the Ray actor)."""

    def __init__(self, rank: int, host: str, netns: str | None, env: dict[str, str], log_path: str):
        self.rank, self.host, self.log_path = rank, host, log_path
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self.log = open(log_path, "ab")  # noqa: SIM115 — the rank's stderr for its lifetime; closed in close()
        self.proc = python_popen(["-m", "metrolab.harness.runner.rank_agent"], netns=netns, env=os.environ | env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self.buf = b""

    def pid(self) -> int:
        return self.proc.pid

    def call(self, msg: dict, timeout: float) -> dict:
        if self.proc.poll() is not None:
            raise self._died()
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise RankFailed(f"rank {self.rank} on {self.host}: no answer to {msg['cmd']} within {timeout:g} s "
                                 f"(hung; killed)")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise self._died()
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        reply = json.loads(line)
        if "error" in reply:
            raise RankFailed(f"rank {self.rank} on {self.host}: {reply['error']}")
        return reply

    def _died(self) -> RankFailed:
        rc = self.proc.wait()
        self.log.flush()
        tail = ""
        try:
            with open(self.log_path, "rb") as f:
                tail = f.read()[-1500:].decode(errors="replace").strip()
        except OSError:
            pass
        return RankFailed(f"rank {self.rank} on {self.host} exited with {rc}" + (f": {tail.splitlines()[-1]}"
                                                                                    if tail else ""))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            try:
                self.call({"cmd": "exit"}, timeout)
                self.proc.wait(timeout=timeout)
            except (RankFailed, subprocess.TimeoutExpired, OSError):
                pass
        self.kill()
        self.log.close()


def _ray():
    try:
        import ray  # deferred: Ray, only where a cluster is used
    except ImportError as exc:
        raise CapabilityError(f"Ray is not importable ({exc}); run the README's install command") from None
    return ray


class RayCluster:
    """A local Ray (or a connection to `address`: a cluster's GCS, or `ray://` for Ray Client),
    shut down on close. `placement` maps a lab host to the machine whose `host:<machine>`
    resource its rank is pinned to (a testbed); by default a host is its own machine."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 placement: dict[str, str] | None = None):
        ray = _ray()
        t0 = time.monotonic()
        kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        self._owner = not ray.is_initialized()  # a testbed lab may have connected already
        if self._owner:  # a testbed's connection keeps its own settings (its token authentication)
            os.environ.update(RAY_ENV)
        if not self._owner:
            pass
        elif address and address.startswith("ray://"):
            ray.init(address=address, log_to_driver=False)
        elif address:
            ray.init(address=address, **kw)
        else:
            # the embedded cluster lives on loopback: nothing of Ray's leaves the machine
            ray.init(num_cpus=num_cpus or max(2, os.cpu_count() or 2), _node_ip_address="127.0.0.1", **kw)
        self.start_s = time.monotonic() - t0
        self.address = address
        self.placement = placement or {}
        self.kind = "ray"
        self._actor_cls = ray.remote(num_cpus=0, max_concurrency=2)(RankActor)

    def pids(self) -> list[int]:
        """The Ray processes this driver started (journaled, so `metrolab lab clean` can stop them
        by PID after a kill -9)."""
        if self.address:
            return []
        import psutil  # deferred: Ray's dependency, not ours; here only where a local Ray runs
        return [p.pid for p in psutil.Process().children(recursive=True)
                if any("ray" in part for part in (p.cmdline() or [])[:3])]

    def actor(self, rank: int, host: str, netns: str | None, env: dict[str, str], log_path: str):
        opts: dict = {}
        if self.address:  # real hosts: the node that says it is the host's machine
            need = f"host:{self.placement.get(host, host)}"
            if need not in _ray().cluster_resources():  # else Ray keeps the actor pending, and the run waits
                raise CapabilityError(
                    f"no live node of the Ray cluster at {self.address} offers {need}, where rank {rank} (lab host "
                    f"{host}) must run: a testbed machine whose Ray node is down (`metrolab testbed check` names "
                    f"it), or a cluster whose nodes do not say which machine they are (`ray start --resources "
                    f"'{{\"{need}\": 1}}'` on it)")
            opts["resources"] = {need: 0.001}
            # named: a clean after a kill finds them in the lab's namespace (TestbedRay.kill_actors)
            opts["name"] = f"rank{rank}-{uuid.uuid4().hex[:12]}"
        return self._actor_cls.options(**opts).remote(rank, host, netns, env, log_path)

    def call_all(self, actors: list, msgs: list[dict], timeout: float) -> list[dict]:
        """Send each rank its command at once; all answers, or RankFailed naming the first failure."""
        ray = _ray()
        refs = [a.call.remote(m, timeout) for a, m in zip(actors, msgs)]
        try:
            return ray.get(refs, timeout=timeout + 30)
        except ray.exceptions.GetTimeoutError:
            raise RankFailed(f"ranks did not answer {msgs[0]['cmd']} within {timeout:g} s") from None
        except ray.exceptions.RayActorError as exc:
            raise RankFailed(f"a rank's agent died: {str(exc).splitlines()[0]}") from None
        except RankFailed as exc:  # Ray re-raises the actor's exception type; keep its own message
            cause = getattr(exc, "cause", None)
            raise RankFailed(str(cause) if cause is not None else str(exc).strip().splitlines()[-1]) from None

    def stop_actor(self, actor, kill: bool = False) -> None:
        ray = _ray()
        try:
            ray.get(actor.kill.remote() if kill else actor.stop.remote(), timeout=60)
        except Exception:  # noqa: BLE001 — a dead actor has nothing left to stop
            pass
        try:
            ray.kill(actor)
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        if self._owner:
            _ray().shutdown()


class LocalAgents:
    """The same rank agents without Ray, for the guest backend: under the guest's TCG emulation
    Ray's node does not come up (its raylet misses Ray's fixed 30 s registration window, and given
    longer it is stopped minutes in), and Ray on the host cannot reach into the guest (no network
    between them). The rank processes, their protocol and the sweep are the same."""

    start_s = 0.0
    address = None
    kind = "direct"

    def pids(self) -> list[int]:
        return []

    def actor(self, rank: int, host: str, netns: str | None, env: dict[str, str], log_path: str):
        return RankProcess(rank, host, netns, env, log_path)

    def call_all(self, actors: list, msgs: list[dict], timeout: float) -> list[dict]:
        with ThreadPoolExecutor(len(actors)) as pool:
            futs = [pool.submit(a.call, m, timeout) for a, m in zip(actors, msgs)]
            errors, out = [], []
            for f in futs:
                try:
                    out.append(f.result())
                except RankFailed as exc:
                    errors.append(exc)
            if errors:
                for a in actors:  # the others may wait on the failed one forever
                    a.kill()
                raise errors[0]
            return out

    def stop_actor(self, actor, kill: bool = False) -> None:
        actor.kill() if kill else actor.stop()

    def close(self) -> None:
        pass


class RankActor:
    """A Ray actor owning one rank process (max_concurrency 2: `kill` can run while `call` waits)."""

    def __init__(self, rank, host, netns, env, log_path):
        self.p = RankProcess(rank, host, netns, env, log_path)

    def pid(self) -> int:
        return self.p.pid()

    def call(self, msg: dict, timeout: float) -> dict:
        return self.p.call(msg, timeout)

    def kill(self) -> None:
        self.p.kill()

    def stop(self) -> None:
        self.p.stop()
