"""A tiny real training job, as a user would bring it: a two-layer MLP trained with
DistributedDataParallel over gloo, one process per node. It runs the same under torchrun and under
metrolab's `kind: command` (docs/examples/command-train.yaml): both set MASTER_ADDR, MASTER_PORT,
RANK and WORLD_SIZE. Under metrolab it writes each step's time to METROLAB_METRICS (JSON lines),
which is all metrolab needs from a program to report its step times.

    python train_ddp.py --steps 8 --hidden 128     # each step all-reduces (256*h + h + h*256 + 256) floats
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = DistributedDataParallel(torch.nn.Sequential(
        torch.nn.Linear(256, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 256)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = torch.Generator().manual_seed(1 + dist.get_rank())
    path = os.environ.get("METROLAB_METRICS")
    out = open(path, "a") if path else None  # noqa: SIM115 — one file for the whole run
    for step in range(args.steps):
        t0 = time.perf_counter()
        x = torch.randn(args.batch, 256, generator=data)
        loss = (model(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()  # DDP all-reduces the gradients here, across the network
        opt.step()
        dt = time.perf_counter() - t0
        if out:
            out.write(json.dumps({"step": step, "step_time_s": dt, "loss": loss.item()}) + "\n")
            out.flush()
    if dist.get_rank() == 0:
        print(f"trained {args.steps} steps, last loss {loss.item():.4f}")
    dist.barrier()  # no rank tears its connections down while a peer still uses them
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
