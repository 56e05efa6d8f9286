"""The guest's own speed: a fixed pure-Python loop, timed best of three (~20 ms under TCG). Nothing in
a test's result says how fast the guest was while it ran; the guest tier prints this beside them.
`python -m tests.support.canary` prints it from a fresh interpreter (no heap of the session's)."""

from __future__ import annotations

import time


def canary_ms() -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        sum(i * i for i in range(20_000))
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


if __name__ == "__main__":
    print(f"{canary_ms():.3f}")
