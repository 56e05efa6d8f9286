"""The vm backend's accelerator: KVM only where /dev/kvm creates VMs with hardware
virtualisation, TCG otherwise, with the reason."""

from __future__ import annotations

import pytest

from metrolab.harness.vm.kernel import prepare_kernel
from metrolab.harness.vm.kvm import probe_kvm
from metrolab.harness.vm.qemu import Guest, choose_accel


@pytest.mark.requires("qemu", "guest-kernel")  # boots the guest: no namespace
def test_the_chosen_accelerator_boots_the_guest_kernel(monkeypatch, tmp_path):
    """The probe's choice checked against its consequence, not against the facts it reads: a guest
    booted with the accelerator it chose runs a command (a wrong KVM on a paravirtual /dev/kvm fails
    with 'failed to set MSR 0x10a' or hangs). No exception either way, and the reason is said."""
    monkeypatch.delenv("METROLAB_VM_ACCEL", raising=False)
    accel, why = choose_accel()
    assert accel in ("kvm", "tcg") and why == probe_kvm().why
    guest = Guest(prepare_kernel(lambda m: None), accel=accel)
    res = guest.run(["true"], on_line=None, timeout=120, results_dir=tmp_path / "g")
    assert res.exit_code == 0 and res.accel == accel and res.boot_s is not None, res.output[-5:]


@pytest.mark.unit
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


@pytest.mark.unit
def test_forced_accelerator_wins(monkeypatch):
    monkeypatch.setenv("METROLAB_VM_ACCEL", "tcg")
    assert choose_accel() == ("tcg", "METROLAB_VM_ACCEL=tcg")
