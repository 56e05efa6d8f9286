"""A tiny real training job, as a user would bring it: a two-layer MLP trained with
DistributedDataParallel over gloo (or, with --fsdp, sharded by FSDP2), one process per node. It runs the same under torchrun and under
metrolab's `kind: command` (docs/examples/command-train.yaml): both set MASTER_ADDR, MASTER_PORT,
RANK and WORLD_SIZE. Under metrolab it writes each step's time to METROLAB_METRICS (JSON lines),
which is all metrolab needs from a program to report its step times.

    python train_ddp.py --steps 8 --hidden 128     # each step all-reduces (256*h + h + h*256 + 256) floats

With --trace DIR it also records its steps for `kind: trace` (metrolab.workloads.exec_trace): a
PyTorch Execution Trace and a Kineto trace per rank (DIR/et_RANK.json, DIR/kineto_RANK.json) of
--trace-steps steps after two unrecorded ones (the first connects and allocates; the second warms
the profiler). The built-in scenario trace-replay replays one recorded on loopback:

    torchrun --standalone --nproc-per-node 2 train_ddp.py --steps 5 --batch 256 --trace ../../scenarios/traces/ddp-mlp
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def shard(mlp: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: each layer's parameters sharded over the ranks, all-gathered for its forward and
    backward, its gradients reduce-scattered."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in mlp:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(mlp, mesh=mesh)


def recorder(folder: str, steps: int):
    """torch.profiler with the Execution Trace observer over `steps` steps after two unrecorded."""
    from torch.profiler import ExecutionTraceObserver, ProfilerActivity, profile, schedule
    os.makedirs(folder, exist_ok=True)
    rank = dist.get_rank()
    et = ExecutionTraceObserver().register_callback(os.path.join(folder, f"et_{rank}.json"))
    prof = profile(activities=[ProfilerActivity.CPU], execution_trace_observer=et,
                   schedule=schedule(skip_first=1, wait=0, warmup=1, active=steps, repeat=1),
                   on_trace_ready=lambda p: p.export_chrome_trace(os.path.join(folder, f"kineto_{rank}.json")))
    prof.start()
    return prof


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--fsdp", action="store_true", help="shard the model with FSDP2 (fully_shard) instead of DDP")
    ap.add_argument("--trace", help="record the steps' execution traces into this folder")
    ap.add_argument("--trace-steps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    mlp = torch.nn.Sequential(torch.nn.Linear(256, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 256))
    model = shard(mlp) if args.fsdp else DistributedDataParallel(mlp)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = torch.Generator().manual_seed(1 + dist.get_rank())
    path = os.environ.get("METROLAB_METRICS")
    out = open(path, "a") if path else None  # noqa: SIM115 — one file for the whole run
    prof = recorder(args.trace, args.trace_steps) if args.trace else None
    for step in range(args.steps):
        t0 = time.perf_counter()
        x = torch.randn(args.batch, 256, generator=data)
        loss = (model(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()  # DDP all-reduces the gradients here, across the network
        opt.step()
        dt = time.perf_counter() - t0
        if prof:
            prof.step()
        if out:
            out.write(json.dumps({"step": step, "step_time_s": dt, "loss": loss.item()}) + "\n")
            out.flush()
    if prof:
        prof.stop()
        prof.execution_trace_observer.cleanup()  # finishes et_RANK.json (else left to the interpreter's exit)
    if dist.get_rank() == 0:
        print(f"trained {args.steps} steps, last loss {loss.item():.4f}")
    dist.barrier()  # no rank tears its connections down while a peer still uses them
    dist.destroy_process_group()
    if out:
        out.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # The barrier can still hold the last step's all-reduce, and gloo's own thread releases both after
    # the barrier returns; that release takes the GIL (the work keeps backward's Python context). If
    # the interpreter is already shutting down, the thread is refused the GIL and torch 2.13 aborts
    # ("terminate called without an active exception": 4 runs in 80 on loopback here). Nothing is
    # left to finalize, so the process leaves without the interpreter's shutdown.
    os._exit(0)


if __name__ == "__main__":
    main()
