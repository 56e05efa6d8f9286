"""The vm backend's accelerator: KVM only where /dev/kvm creates VMs with hardware
virtualisation, TCG otherwise, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.vm.kvm import probe_kvm
from harness.vm.qemu import choose_accel

pytestmark = pytest.mark.unit


def test_this_machine_kvm_is_refused_cleanly_with_its_reason(monkeypatch):
    """Here /dev/kvm is paravirtual only (kvm_pvm, no VMX/SVM): the probe must say so and choose
    TCG; on a machine without /dev/kvm it says that instead. Either way, no exception."""
    monkeypatch.delenv("METROLAB_VM_ACCEL", raising=False)
    kvm = probe_kvm()
    accel, why = choose_accel()
    cpu_virt = any(f in Path("/proc/cpuinfo").read_text().split() for f in ("vmx", "svm"))
    if Path("/sys/module/kvm_pvm").exists() or not cpu_virt or not Path("/dev/kvm").exists():
        assert not kvm.usable and accel == "tcg" and why == kvm.why, (kvm, accel, why)
        assert any(w in why for w in ("kvm_pvm", "VMX/SVM", "no /dev/kvm", "cannot be opened")), why
    else:  # a runner with hardware virtualisation (GitHub's x64 ubuntu-latest)
        assert kvm.usable and accel == "kvm", (kvm, accel, why)


def test_each_refusal_names_its_reason(tmp_path):
    assert probe_kvm(dev=tmp_path / "kvm").why == f"no {tmp_path / 'kvm'}"
    node = tmp_path / "kvm-file"
    node.write_text("")  # a file is no KVM device: the API ioctl fails
    no_pvm = tmp_path / "modules"
    no_pvm.mkdir()
    virt = tmp_path / "cpuinfo-vmx"
    virt.write_text("flags\t\t: fpu vmx sse2\n")
    assert probe_kvm(dev=node, modules=no_pvm, cpuinfo=virt).why.startswith(f"{node} is not a KVM device")
    no_virt = tmp_path / "cpuinfo"
    no_virt.write_text("flags\t\t: fpu sse2 hypervisor\n")
    # no kvm_pvm here, but no VMX/SVM either: refused (or refused earlier where /dev/kvm itself is unusable)
    why = probe_kvm(modules=tmp_path, cpuinfo=no_virt).why
    assert why.endswith("the CPU exposes no VMX/SVM") or why.startswith("no /dev/kvm"), why


def test_forced_accelerator_wins(monkeypatch):
    monkeypatch.setenv("METROLAB_VM_ACCEL", "tcg")
    assert choose_accel() == ("tcg", "METROLAB_VM_ACCEL=tcg")
