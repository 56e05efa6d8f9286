"""The `METROLAB_*` environment variables: every one metrolab reads, with its type, default and
meaning, in one table (docs/settings.md is drawn from it and a test keeps the two equal). Values are
read when asked, not at import: a test or a parent process may set them later."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metrolab.harness.errors import SpecError


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type
    default: Any
    meaning: str
    internal: bool = False  # set by metrolab for its own child processes, not by a user

    def read(self) -> Any:
        raw = os.environ.get(self.name)
        if raw is None or raw == "":
            return self.default
        if self.kind is bool:
            return raw not in ("0", "false", "no")
        try:
            return self.kind(raw)
        except ValueError:
            raise SpecError("environment", self.name, raw, f"not a {self.kind.__name__}") from None


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("METROLAB_STATE_DIR", str, "/run/metrolab", "where lab journals are kept (what `lab clean` reads)"),
    Setting("METROLAB_CACHE", str, "/var/cache/metrolab", "guest kernel, initramfs and netem calibration cache"),
    Setting("METROLAB_DEBIAN_MIRROR", str, None, "Debian mirror the guest kernel is fetched from"),
    Setting("METROLAB_QEMU", str, None, "the qemu-system-x86_64 binary (default: from PATH)"),
    Setting("METROLAB_VM_ACCEL", str, None, "force the guest's accelerator: kvm or tcg (default: probed)"),
    Setting("METROLAB_VM_MEMORY", str, "4G", "guest memory"),
    Setting("METROLAB_VM_CPUS", int, 2, "guest CPUs"),
    Setting("METROLAB_VM_CPU", str, "max,-avx2", "the guest's CPU model under TCG (qemu's -cpu; KVM uses the "
                                                 "host's): AVX2 off, since qemu 7.2's AVX2 gathers load "
                                                 "wrong elements (numpy's argsort sorted wrongly)"),
    Setting("METROLAB_VM_BOOT_TIMEOUT", float, 240.0, "seconds the guest may take to boot"),
    Setting("METROLAB_VM_REALTIME", bool, True, "run the guest's qemu in the real-time class (I/O threads above "
                                                "vCPUs) so other processes on the host cannot delay it"),
    Setting("METROLAB_TBF_BURST_MS", float, None, "TBF bucket depth in ms (default: 1 on a host kernel, 5 in the "
                                                  "TCG guest)"),
    Setting("METROLAB_NETEM_OFFSET_US", float, None, "netem's per-qdisc delivery offset in us, instead of "
                                                     "calibrating it"),
    Setting("METROLAB_NETEM_CALIBRATION_MAX_AGE_S", float, 60.0, "how long a netem calibration is reused"),
    Setting("METROLAB_NO_ZYGOTE", bool, False, "start rank processes fresh instead of forking a warm zygote "
                                               "(guest only)"),
    Setting("METROLAB_VERBS_SLOT", int, None, "the verbs process group's buffer slot in bytes"),
    Setting("METROLAB_RDMA_DEV", str, None, "the RDMA device a rank uses (default: the one holding its address)"),
    Setting("METROLAB_RDMA_IP", str, None, "the address a rank binds its RDMA and flows to", internal=True),
    Setting("METROLAB_HOST", str, None, "the lab host a rank runs on", internal=True),
    Setting("METROLAB_METRICS", str, None, "where a `kind: command` program may append its steps (JSON lines "
            "with step_time_s; docs/workloads.md)", internal=True),
    Setting("METROLAB_PLAIN", bool, False, "plain output: no colour, no live progress (a guest's tty into a "
                                           "host's pipe)"),
    Setting("METROLAB_NO_PROGRESS", bool, False, "no live progress bar"),
    Setting("METROLAB_IN_GUEST", bool, False, "this process runs inside the guest kernel", internal=True),
    Setting("METROLAB_RESULTS", str, None, "the guest's results share", internal=True),
    Setting("METROLAB_HOST_CPU", str, None, "the file on the guest's share where the host writes its CPU counters "
                                            "(interference)", internal=True),
    Setting("METROLAB_GUEST_REPORT", str, None, "where the guest tier's pytest writes its results (tests)",
            internal=True),
    Setting("METROLAB_SONIC_INVENTORY", str, None, "ansible inventory of a real SONiC switch (enables the sonic "
                                                   "test)"),
    Setting("METROLAB_ANSIBLE_TASKS", str, None, "file metrolab's ansible callback appends each task's name to "
                                                 "(progress)", internal=True),
    Setting("METROLAB_WHEEL", str, None, "the metrolab wheel `testbed provision` installs on the machines (default: "
                                         "built from this checkout)"),
)}


def get(name: str) -> Any:
    """The value of `name` (a key of SETTINGS), typed, or its default."""
    return SETTINGS[name].read()


def state_dir() -> Path:
    """METROLAB_STATE_DIR, made when first asked for (lab journals, netem's calibration)."""
    d = Path(get("METROLAB_STATE_DIR"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def in_guest() -> bool:
    return bool(get("METROLAB_IN_GUEST"))


def markdown_table() -> str:
    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS.values():
        default = "" if s.default is None else f"`{s.default}`"
        rows.append(f"| `{s.name}` | {s.kind.__name__} | {default} | {s.meaning}"
                    f"{' (set by metrolab for its child processes)' if s.internal else ''} |")
    return "\n".join(rows) + "\n"
