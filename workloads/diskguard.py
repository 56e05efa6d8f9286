"""Proof that a workload keeps its data in memory: what the process wrote to storage during a
window, by two independent witnesses.

- `write_bytes` of /proc/self/io: bytes this process caused to be written to a block device
  (counted when pages are dirtied, so a write is seen before any flush);
- regular files the process holds open for writing that it did not hold at the start (catches
  writes to tmpfs or network filesystems, which have no block device to count).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

O_ACCMODE = 0o3


def write_bytes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def files_open_for_writing() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if not target.startswith("/") or target.startswith(("/dev/", "/proc/", "/sys/")):
                continue
            with open(f"/proc/self/fdinfo/{fd}") as f:
                flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
        except (OSError, StopIteration):
            continue  # closed meanwhile
        if flags & O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
            out.add(target)
    return out


@dataclass
class DiskWrites:
    start_bytes: int = field(default_factory=write_bytes)
    start_files: set[str] = field(default_factory=files_open_for_writing)

    def result(self) -> tuple[int, list[str]]:
        return write_bytes() - self.start_bytes, sorted(files_open_for_writing() - self.start_files)
