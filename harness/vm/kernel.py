"""A stock Debian kernel for the guest: fetched with a private apt configuration (the host's
apt sources and installed kernel are never touched), unpacked into a cache, its modules
indexed, and a minimal busybox initramfs built beside it.

The newest kernel of trixie-backports (then sid) whose rdma_rxe has per-namespace sockets
is chosen: older rxe opens its UDP socket only in the initial namespace, so RDMA between
lab namespaces would fail.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import re
import shutil
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from metrolab.harness import settings
from metrolab.harness.errors import CapabilityError
from metrolab.harness.kernel import sh

SUITES = ("trixie-backports", "sid")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
INITRAMFS_MODULES = ("netfs", "9pnet", "9pnet_virtio", "9p")  # in load order; virtio_pci is built in
RXE_NETNS_SYMBOL = b"rxe_ns_pernet_sk4"


def cache_root() -> Path:
    return Path(settings.get("METROLAB_CACHE"))


@dataclass
class GuestKernel:
    release: str           # e.g. 7.3.4+deb13-amd64
    suite: str
    vmlinuz: str
    initrd: str
    modules_dir: str       # bind-mounted over /usr/lib/modules in the guest
    rxe_netns: bool

    @property
    def dir(self) -> Path:
        return Path(self.vmlinuz).parent

    def save(self) -> None:
        (self.dir / "kernel.json").write_text(json.dumps(asdict(self), indent=1))


def _mirror() -> str:
    """The Debian mirror the host already uses (so no new host is contacted)."""
    if settings.get("METROLAB_DEBIAN_MIRROR"):
        return settings.get("METROLAB_DEBIAN_MIRROR")
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = f.read_text()
        except OSError:
            continue
        m = re.search(r"(?:URIs:|deb(?:\s+\[[^\]]*\])?)\s+(https?://\S+/debian)\s", text + "\n")
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


class _PrivateApt:
    """apt-get/apt-cache with their own sources, lists and archives under `base`."""

    def __init__(self, base: Path, suite: str):
        self.base = base
        (base / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (base / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self.sources = base / "sources.list"
        self.sources.write_text(f"deb [signed-by={KEYRING}] {_mirror()} {suite} main\n")
        self.opts = [f"-oDir::Etc::sourcelist={self.sources}", "-oDir::Etc::sourceparts=-",
                     f"-oDir::State::Lists={base / 'lists'}", f"-oDir::Cache={base}",
                     f"-oDir::Cache::archives={base / 'archives'}", "-oAPT::Sandbox::User=root",
                     "-oDebug::NoLocking=1", "-qq"]

    def update(self) -> None:
        res = sh.run(["apt-get", *self.opts, "update"], timeout=300)
        if not any((self.base / "lists").glob("*_Packages*")):  # apt reports fetch failures as warnings
            raise CapabilityError((res.stderr or res.stdout).strip().splitlines()[-1] if (res.stderr or res.stdout)
                                  else "no package list was fetched")

    def depends(self, pkg: str) -> list[str]:
        out = sh.run(["apt-cache", *self.opts, "depends", pkg], check=False).stdout
        return re.findall(r"Depends:\s+(\S+)", out)

    def download(self, pkgs: list[str], dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        sh.run(["apt-get", *self.opts, "download", *pkgs], cwd=dest, timeout=600)


def _has_rxe_netns(modules: Path) -> bool:
    ko = next(modules.rglob("rdma_rxe.ko*"), None)
    if ko is None:
        return False
    data = ko.read_bytes()
    if ko.suffix == ".xz":
        data = lzma.decompress(data)
    return RXE_NETNS_SYMBOL in data


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data) entries; directories have empty data."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], start=1):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08X}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out.write(hdr.encode() + nb)
        out.write(b"\0" * ((4 - (110 + len(nb)) % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - len(data) % 4) % 4))
    return out.getvalue()


INITRAMFS_INIT = """#!/bin/busybox sh
# metrolab guest initramfs: mount the host's root read-only over 9p and hand over to metrolab's init.
B=/bin/busybox
$B mkdir -p /proc /dev /newroot
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
for m in {modules}; do $B insmod /modules/$m.ko || echo "metrolab-guest: insmod $m failed"; done
if ! $B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro rootfs /newroot; then
  echo "metrolab-guest: cannot mount the host filesystem"; echo o > /proc/sysrq-trigger
fi
init=$($B sed -n 's/.*metrolab.init=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
$B umount /proc
$B umount /dev
exec $B switch_root /newroot /bin/sh "$init"
"""


def build_initramfs(modules: Path, release: str, dest: Path) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        raise CapabilityError("busybox (static) is missing: apt-get install busybox-static")
    entries: list[tuple[str, int, bytes]] = [(d, stat.S_IFDIR | 0o755, b"") for d in
                                             ("bin", "dev", "proc", "newroot", "modules")]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, Path(busybox).read_bytes()))
    base = modules / release
    for m in INITRAMFS_MODULES:
        ko = next(base.rglob(f"{m}.ko*"), None)
        if ko is None:
            raise CapabilityError(f"guest kernel {release} has no module {m}")
        data = ko.read_bytes()
        data = lzma.decompress(data) if ko.suffix == ".xz" else data  # busybox insmod reads plain .ko
        entries.append((f"modules/{m}.ko", stat.S_IFREG | 0o644, data))
    entries.append(("init", stat.S_IFREG | 0o755, INITRAMFS_INIT.format(modules=" ".join(INITRAMFS_MODULES)).encode()))
    dest.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=6))


def cached_kernel() -> GuestKernel | None:
    best = None
    for f in sorted((cache_root() / "guest").glob("*/kernel.json")):
        try:
            k = GuestKernel(**json.loads(f.read_text()))
        except (ValueError, TypeError):
            continue
        if Path(k.vmlinuz).exists() and Path(k.initrd).exists() and k.rxe_netns:
            best = k
    return best


def prepare_kernel(progress=print) -> GuestKernel:
    """The cached guest kernel, or fetch the newest namespace-aware one (clear errors if none)."""
    k = cached_kernel()
    if k is not None:
        return k
    tried = []
    for suite in SUITES:
        work = cache_root() / "apt" / suite
        apt = _PrivateApt(work, suite)
        try:
            apt.update()
        except Exception as exc:  # noqa: BLE001 — any mirror failure: try the next suite
            tried.append(f"{suite}: apt update failed ({exc})")
            continue
        deps = [d for d in apt.depends("linux-image-amd64") if d.startswith("linux-image-")]
        if not deps:
            tried.append(f"{suite}: no linux-image-amd64")
            continue
        release = deps[0].removeprefix("linux-image-")
        progress(f"fetching guest kernel {release} from {suite} ...")
        pkgs = [p for p in apt.depends(deps[0]) if p.startswith(("linux-binary", "linux-modules", "linux-base-"))]
        pkgs = [p.replace("linux-binary-", "linux-binary-unsigned-") if p.startswith("linux-binary-") else p
                for p in pkgs] or [deps[0]]
        debs = work / "debs" / release
        try:
            apt.download(pkgs, debs)
        except Exception as exc:  # noqa: BLE001 — any download failure: try the next suite
            tried.append(f"{suite}: download of {' '.join(pkgs)} failed ({exc})")
            continue
        root = cache_root() / "guest" / release
        tree = root / "tree"
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        for deb in debs.glob("*.deb"):
            sh.run(["dpkg-deb", "-x", str(deb), str(tree)], timeout=300)  # into the cache, never into /
        modules = tree / "usr" / "lib" / "modules"
        if not (modules / release).exists():
            tried.append(f"{suite}: {release} has no modules directory")
            continue
        rxe_netns = _has_rxe_netns(modules / release)
        if not rxe_netns:
            tried.append(f"{suite}: {release}'s rdma_rxe is not namespace-aware (no {RXE_NETNS_SYMBOL.decode()})")
            continue
        vmlinuz = next((p for p in [modules / release / "vmlinuz.unsigned", modules / release / "vmlinuz",
                                    tree / "boot" / f"vmlinuz-{release}"] if p.exists()), None)
        if vmlinuz is None:
            tried.append(f"{suite}: {release} has no vmlinuz")
            continue
        progress(f"indexing modules and building the initramfs for {release} ...")
        sh.run(["depmod", "-b", str(tree / "usr"), release], timeout=300)
        shutil.copy(vmlinuz, root / "vmlinuz")
        build_initramfs(modules, release, root / "initrd.gz")
        k = GuestKernel(release, suite, str(root / "vmlinuz"), str(root / "initrd.gz"), str(modules), rxe_netns)
        k.save()
        shutil.rmtree(debs, ignore_errors=True)
        return k
    raise CapabilityError("no guest kernel with namespace-aware Soft-RoCE could be had: " + "; ".join(tried))
