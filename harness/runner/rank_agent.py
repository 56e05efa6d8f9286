"""A long-lived rank: `python -m metrolab.harness.runner.rank_agent`, started inside a lab host (its
namespace) by a Ray actor, driven by one JSON command per line on stdin, answering one JSON line
on stdout. The process group comes up once and serves every sweep point; impairments change
under it between points.

    {"cmd": "init", "backend": "gloo", "timeout": 600}
    {"cmd": "setup", "workload": "collective", "params": {...}, "scale": 1000, "sites": [...], "fault": null}
    {"cmd": "measure", "warmups": 1, "iters": null}   # -> metrics, and the rank's CPU and wall time
    {"cmd": "warm", "steps": 1}                        # unmeasured steps (after a network change)
    {"cmd": "exit"}
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from datetime import timedelta

from metrolab.harness.dist import backends
from metrolab.harness.runner.soak import own_stats
from metrolab.workloads.registry import rank_workload


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the protocol
    state: dict = {}
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            reply = handle(msg, state)
        except Exception as exc:  # noqa: BLE001 — reported to the runner, which fails the point
            reply = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
        out.write(json.dumps(reply) + "\n")
        out.flush()
        if msg.get("cmd") == "exit":
            break
    return 0


def handle(msg: dict, state: dict) -> dict:
    cmd = msg["cmd"]
    if cmd == "init":
        import torch.distributed as dist  # deferred: torch (40 s under TCG) on the rank side only
        backends.register(msg["backend"])
        t0 = time.monotonic()
        dist.init_process_group(msg["backend"], timeout=timedelta(seconds=msg.get("timeout", 600)))
        return {"ok": True, "rank": dist.get_rank(), "init_s": time.monotonic() - t0}
    if cmd == "setup":
        state["fault"] = msg.get("fault")
        # the same workload with the same parameters keeps its buffers, connections and threads:
        # between points only the network changes (every rank decides alike: same message)
        key = json.dumps([msg["workload"], msg["params"], msg.get("scale", 1.0), msg.get("sites"),
                          msg.get("hosts")], sort_keys=True)
        if state.get("key") == key and "workload" in state:
            return {"ok": True, "rebuilt": False}
        old = state.pop("workload", None)
        state.pop("key", None)
        if hasattr(old, "close"):
            old.close()  # threads, connections and registered memory of the previous parameters
        state["workload"] = rank_workload(msg["workload"])(msg["params"], msg.get("scale", 1.0), msg.get("sites"),
                                                          hosts=msg.get("hosts"), base_dir=msg.get("base_dir"))
        state["key"] = key
        return {"ok": True, "rebuilt": True}
    if cmd == "measure":
        fault = state.get("fault")
        if fault and fault["kind"] == "crash":
            os._exit(13)  # a deliberate crash (scenario faults), no goodbye
        if fault and fault["kind"] == "hang":
            time.sleep(10 ** 6)
        cpu0, t0 = time.process_time(), time.perf_counter()
        metrics = state["workload"].measure(msg.get("warmups", 0), msg.get("iters"))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        if "_cpu_s" in metrics:  # the workload's own account: its program's CPU while its steps ran
            cpu, wall = metrics.pop("_cpu_s"), metrics.pop("_wall_s")
        # the machine and its cores: the runner's CPU load is per machine (ranks may share one)
        return {"ok": True, "metrics": metrics, "cpu_s": cpu, "wall_s": wall, "machine": os.uname().nodename,
                "cpus": os.cpu_count()}
    if cmd == "warm":  # steps after the network changed, before the measured ones (not measured)
        if msg.get("steps", 0) > 0:
            state["workload"].warm(msg["steps"])
        return {"ok": True}
    if cmd == "stats":  # a soak's sample: this rank's own resources
        return {"ok": True, **own_stats()}
    if cmd == "exit":
        import torch.distributed as dist  # deferred: torch (40 s under TCG) on the rank side only
        old = state.pop("workload", None)
        if hasattr(old, "close"):
            old.close(final=True)  # ranks are told to exit one after another: nothing collective
        if dist.is_initialized():
            dist.destroy_process_group()
        return {"ok": True}
    return {"error": f"unknown command {cmd!r}"}


if __name__ == "__main__":
    sys.exit(main())
