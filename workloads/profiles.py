"""Model and device profiles, and the pure models built on them: FLOPs and compute time of a
training step, the per-layer gradient bytes, DDP's gradient buckets, KV-cache bytes (unit-tested
without a lab).

Sizes here are full scale; a scenario's scale factor k divides the bytes that cross the network
(the lab's rates are divided by k too), so the emulated transfer times are the full-scale ones;
modeled compute times are never scaled.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelProfile:
    name: str
    params: float            # parameters
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    seq_len: int             # tokens per sample
    batch: int               # samples per rank per micro-batch

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.seq_len * self.batch

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


# Parameter counts and shapes as published; batch sizes are typical per-accelerator choices.
PROFILES: dict[str, ModelProfile] = {p.name: p for p in (
    ModelProfile("gpt2-small", 124e6, 12, 768, 12, 12, 1024, 8),
    ModelProfile("gpt2-xl", 1.56e9, 48, 1600, 25, 25, 1024, 4),
    ModelProfile("llama2-7b", 6.74e9, 32, 4096, 32, 32, 4096, 1),
    ModelProfile("llama2-13b", 13.0e9, 40, 5120, 40, 40, 4096, 1),
    ModelProfile("llama2-70b", 69.0e9, 80, 8192, 64, 8, 4096, 1),
)}


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    tflops: float            # dense bf16 peak
    hbm_gbs: float           # memory bandwidth, GB/s (bounds a decode step)


DEVICES: dict[str, DeviceProfile] = {d.name: d for d in (
    DeviceProfile("h100", 989.0, 3350.0),
    DeviceProfile("a100", 312.0, 2039.0),
    DeviceProfile("h20", 148.0, 4000.0),
)}


def training_flops(params: float, tokens: float) -> float:
    """FLOPs of one forward + backward pass: 6 per parameter per token (2 forward, 4 backward)."""
    if params <= 0 or tokens <= 0:
        raise ValueError("parameters and tokens must be > 0")
    return 6.0 * params * tokens


def compute_time_s(flops: float, tflops: float, mfu: float) -> float:
    """Time an accelerator of `tflops` peak needs at model-FLOPs utilisation `mfu`."""
    if tflops <= 0 or not 0 < mfu <= 1:
        raise ValueError("device TFLOPs must be > 0 and MFU in (0, 1]")
    return flops / (tflops * 1e12 * mfu)


def layer_bytes(total_bytes: int, layers: int) -> list[int]:
    """Gradient bytes of each layer (equal layers; the remainder on the first), in forward order."""
    if layers < 1:
        raise ValueError("a model has at least one layer")
    if total_bytes < layers:
        raise ValueError(f"{total_bytes} gradient bytes cannot fill {layers} layers")
    per, rest = divmod(total_bytes, layers)
    return [per + rest] + [per] * (layers - 1)


def bucket_plan(per_layer: list[int], bucket_bytes: int) -> list[list[int]]:
    """DDP's buckets: layers in backward order (last layer first), packed until a bucket holds at
    least `bucket_bytes`; returns the layer indices of each bucket, in the order they are reduced."""
    if bucket_bytes <= 0:
        raise ValueError("bucket size must be > 0")
    if bucket_bytes > sum(per_layer):
        raise ValueError(f"bucket size {bucket_bytes} B exceeds the model's {sum(per_layer)} gradient bytes")
    buckets: list[list[int]] = [[]]
    filled = 0
    for i in reversed(range(len(per_layer))):
        buckets[-1].append(i)
        filled += per_layer[i]
        if filled >= bucket_bytes and i:
            buckets.append([])
            filled = 0
    return [b for b in buckets if b]


def kv_bytes_per_token(p: ModelProfile, bytes_per_elem: int = 2) -> int:
    """K and V of every layer for one token (grouped-query attention stores kv_heads heads)."""
    return 2 * p.layers * p.kv_heads * p.head_dim * bytes_per_elem


def decode_step_s(params: float, bytes_per_param: int, dev: DeviceProfile) -> float:
    """A decode step is memory-bound: every weight is read once per generated token."""
    return params * bytes_per_param / (dev.hbm_gbs * 1e9)


def exposed_comm(step_s: float, compute_s: float) -> float:
    """Communication time not hidden behind compute."""
    return max(0.0, step_s - compute_s)
