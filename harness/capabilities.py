"""What this machine offers: network namespaces, qdiscs, nftables, Soft-RoCE, KVM, pyverbs, torch, Ray, GPUs.

Kernel features are probed for real inside a throwaway namespace (never on the machine's
own interfaces): a qdisc counts as present only if the kernel accepted it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import socket
import sys
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from socket import AF_INET

from pyroute2 import netns
from pyroute2.netlink.exceptions import NetlinkError

from metrolab.harness import settings
from metrolab.harness.kernel import sh
from metrolab.harness.kernel.nsctx import iproute
from metrolab.harness.vm.kernel import cached_kernel
from metrolab.harness.vm.kvm import probe_kvm
from metrolab.netem.shaper import nft_loss_script

QDISCS = ("netem", "tbf", "htb", "fq", "fq_codel", "red", "prio")
NETLINK_RDMA = 20


@dataclass
class Capability:
    name: str
    present: bool
    detail: str = ""


@dataclass
class Capabilities:
    kernel: str
    items: dict[str, Capability] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        c = self.items.get(name)
        return bool(c and c.present)

    def to_dict(self) -> dict:
        return {"kernel": self.kernel, "python": sys.version.split()[0],
                "capabilities": {k: asdict(v) for k, v in self.items.items()}}


# What the probe asks the kernel to accept, in tc's words: pyroute2 has no encoder for some
# of these (red), and a gap in an encoder must not read as a gap in the kernel.
QDISC_ARGS = {"netem": ["delay", "1ms"], "tbf": ["rate", "1mbit", "burst", "16384", "latency", "50ms"],
              "htb": ["default", "1"], "fq": [], "fq_codel": [], "prio": [],
              "red": ["limit", "400000", "min", "30000", "max", "90000", "avpkt", "1000", "bandwidth", "1mbit",
                      "ecn"]}


def _probe_qdiscs() -> dict[str, Capability]:
    """What a throwaway namespace's kernel accepts; `netns` says whether one could be made (root)."""
    name = f"mlprobe{os.getpid()}"
    out: dict[str, Capability] = {}
    try:
        netns.create(name)
    except (OSError, NetlinkError) as exc:  # every lab is namespaces: without them nothing below can be asked
        why = f"cannot create a network namespace ({getattr(exc, 'strerror', None) or exc}): labs need root"
        return {"netns": Capability("netns", False, why), "nft": Capability("nft", False, why),
                "srv6": Capability("srv6", False, why)} | {k: Capability(f"qdisc:{k}", False, why) for k in QDISCS}
    out["netns"] = Capability("netns", True, "network namespaces (root)")
    try:
        with iproute(name) as ns:
            ns.link("add", ifname="d0", kind="veth", peer={"ifname": "d1"})  # dummy may be absent
            ns.link("set", index=ns.link_lookup(ifname="d0")[0], state="up")
        for kind in QDISCS:
            res = sh.tc(["qdisc", "add", "dev", "d0", "root", "handle", "1:", kind, *QDISC_ARGS[kind]],
                        netns=name, check=False)
            if res.rc == 0:
                out[kind] = Capability(f"qdisc:{kind}", True, "accepted by the kernel")
                sh.tc(["qdisc", "del", "dev", "d0", "root"], netns=name)
            else:
                err = (res.stderr or res.stdout).strip()
                absent = "unknown" in err.lower()
                out[kind] = Capability(f"qdisc:{kind}", False, "kernel lacks sch_" + kind if absent
                                       else f"rejected: {err}")
        try:
            sh.nft(nft_loss_script("d1", 0.01), netns=name)
            out["nft"] = Capability("nft", True, "numgen random drop accepted")
        except Exception as exc:  # noqa: BLE001 — any failure means: no usable nft
            out["nft"] = Capability("nft", False, str(exc))
        out["srv6"] = _probe_srv6(name)
    finally:
        netns.remove(name)
    return out


def _probe_srv6(ns: str) -> Capability:
    """SRv6 encapsulation (the seg6 lightweight tunnel, what planned paths with encap: srv6 install):
    an encap route on the probe's veth, asked of the kernel (some kernels build IPv6 without it)."""
    try:
        with iproute(ns) as h:
            h.route("add", dst="198.51.100.0/24", family=AF_INET, oif=h.link_lookup(ifname="d0")[0],
                    encap={"type": "seg6", "mode": "encap", "segs": "fc00::1"})
        return Capability("srv6", True, "seg6 encapsulation accepted")
    except NetlinkError as exc:
        return Capability("srv6", False, f"kernel lacks the seg6 lightweight tunnel ({exc})")


def _probe_rxe() -> Capability:
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_RDMA)
        s.close()
    except OSError as exc:
        return Capability("rxe", False, f"no RDMA netlink ({exc.strerror}); rdma_rxe unavailable on this kernel")
    mod = Path("/sys/module/rdma_rxe")
    if mod.exists():
        return Capability("rxe", True, "rdma_rxe loaded")
    rel = platform.release()
    found = list(Path(f"/lib/modules/{rel}").rglob("rdma_rxe.ko*")) if Path(f"/lib/modules/{rel}").exists() else []
    return Capability("rxe", bool(found), "rdma_rxe module available" if found else "RDMA netlink, but no rdma_rxe module")


def _probe_kvm() -> Capability:
    kvm = probe_kvm()
    return Capability("kvm", kvm.usable, kvm.why)


def _guest_kernel() -> Capability:
    k = cached_kernel()
    if k is None:
        return Capability("guest-kernel", False, "not prepared: `metrolab vm prepare` (the install script does it)")
    return Capability("guest-kernel", True, f"{k.release} from {k.suite}; namespace-aware rxe: {k.rxe_netns}; "
                      "gives the vm backend netem and Soft-RoCE")


def _vm_accel(kvm: Capability) -> Capability:
    forced = settings.get("METROLAB_VM_ACCEL")
    if forced:
        return Capability("vm-accel", True, f"{forced} (METROLAB_VM_ACCEL)")
    if kvm.present:
        return Capability("vm-accel", True, f"kvm: {kvm.detail}")
    return Capability("vm-accel", True, f"tcg (software emulation, ~20x slower Python): {kvm.detail}")


def _module(name: str, import_name: str | None = None) -> Capability:
    spec = importlib.util.find_spec(import_name or name)
    if spec is None:
        return Capability(name, False, "not importable")
    try:
        return Capability(name, True, version(name))
    except Exception:  # noqa: BLE001 — metadata of a vendored module may be missing
        return Capability(name, True, spec.origin or "")


def _gpus() -> Capability:
    devs = sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))
    return Capability("gpus", bool(devs), f"{len(devs)} NVIDIA device(s)" if devs else "none")


@functools.lru_cache(maxsize=1)
def probe() -> Capabilities:
    caps = Capabilities(kernel=platform.release())
    for kind, cap in _probe_qdiscs().items():
        caps.items[kind] = cap
    caps.items["rxe"] = _probe_rxe()
    caps.items["kvm"] = _probe_kvm()
    caps.items["qemu"] = Capability("qemu", sh.which("qemu-system-x86_64") is not None,
                                    sh.which("qemu-system-x86_64") or "qemu-system-x86_64 not installed")
    caps.items["guest-kernel"] = _guest_kernel()
    caps.items["vm-accel"] = _vm_accel(caps.items["kvm"])
    caps.items["pyverbs"] = _module("pyverbs")
    caps.items["torch"] = _module("torch")
    caps.items["ray"] = _module("ray")
    caps.items["scapy"] = _module("scapy")
    caps.items["gpus"] = _gpus()
    return caps
