"""Whether /dev/kvm can run the guest kernel: a VM with hardware virtualisation.

The kernel is asked, not guessed: /dev/kvm opened read-write, KVM_GET_API_VERSION (12),
KVM_CREATE_VM. A /dev/kvm that passes those may still be paravirtual only (PVM, the `kvm_pvm`
module: it runs specially built guests, and a stock kernel fails with "failed to set MSR 0x10a" or
hangs), so it also needs the CPU's VMX or SVM flag and no kvm_pvm. Where any of that is missing
the vm backend uses QEMU's TCG, and says why.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12


@dataclass(frozen=True)
class KvmProbe:
    usable: bool
    why: str


def probe_kvm(dev: Path = Path("/dev/kvm"), cpuinfo: Path = Path("/proc/cpuinfo"),
              modules: Path = Path("/sys/module")) -> KvmProbe:
    if not dev.exists():
        return KvmProbe(False, f"no {dev}")
    # decided before any VM is created: creating one under paravirtual KVM is not free for the host
    if (modules / "kvm_pvm").exists():
        return KvmProbe(False, f"{dev} is paravirtual KVM (kvm_pvm): it cannot run a stock kernel")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    if not any(f" {flag}" in line or line.endswith(f" {flag}") for line in flags.splitlines()
               if line.startswith("flags") for flag in ("vmx", "svm")):
        return KvmProbe(False, f"{dev}: the CPU exposes no VMX/SVM")
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        hint = " (a udev rule can open it to the kvm group: docs/github-actions.md)" if exc.errno == errno.EACCES else ""
        return KvmProbe(False, f"{dev} cannot be opened read-write: {exc.strerror}{hint}")
    try:
        try:
            version = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        except OSError as exc:
            return KvmProbe(False, f"{dev} is not a KVM device: {exc.strerror}")
        if version != KVM_API_VERSION:
            return KvmProbe(False, f"{dev} speaks KVM API {version}, not {KVM_API_VERSION}")
        try:
            vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        except OSError as exc:
            return KvmProbe(False, f"{dev} refuses to create a VM: {exc.strerror}")
        os.close(vm)
    finally:
        os.close(fd)
    return KvmProbe(True, f"{dev} creates VMs with hardware virtualisation (VMX/SVM)")
