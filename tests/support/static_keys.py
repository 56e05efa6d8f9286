"""Whether kernel static keys are on, read from the running kernel's own code: the first site that
tests a key (its entry in __jump_table, read through /proc/kcore) holds a jump or a nop, and the
entry's branch bit says which of the two means on. x86-64, root, a kernel with /proc/kcore."""

from __future__ import annotations

import struct
from pathlib import Path

JUMP_ENTRY = struct.Struct("<iiq")  # code, target and key, each relative to its own field
MASK = (1 << 64) - 1
NFPROTO = {"ipv4": 2, "netdev": 5, "ipv6": 10}
NF_HOOK = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
NF_MAX_HOOKS, STATIC_KEY_SIZE = 5, 16  # nf_hooks_needed[NFPROTO_NUMPROTO][NF_MAX_HOOKS]


def kallsyms(names: set[str]) -> dict[str, int]:
    out = {}
    for line in Path("/proc/kallsyms").read_text().splitlines():
        addr, _, name = line.split()[:3]
        if name in names:
            out[name] = int(addr, 16)
    if missing := names - out.keys():
        raise LookupError(f"not in /proc/kallsyms: {sorted(missing)}")
    if not any(out.values()):
        raise PermissionError("/proc/kallsyms shows no addresses (kptr_restrict, or not root)")
    return out


class Kcore:
    """The kernel's memory as /proc/kcore's ELF program headers map it."""

    def __init__(self) -> None:
        self.f = open("/proc/kcore", "rb")  # noqa: SIM115 — closed by close()
        head = self.f.read(64)
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        self.f.seek(phoff)
        table = self.f.read(phentsize * phnum)
        self.loads = []
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
            if p_type == 1:  # PT_LOAD
                self.loads.append((p_vaddr, p_offset, p_filesz))

    def read(self, addr: int, n: int) -> bytes:
        for vaddr, offset, size in self.loads:
            if vaddr <= addr and addr + n <= vaddr + size:
                self.f.seek(offset + addr - vaddr)
                return self.f.read(n)
        raise LookupError(f"{addr:#x} is in no segment of /proc/kcore")

    def close(self) -> None:
        self.f.close()


def nf_hook_key(base: int, family: str, hook: str) -> int:
    return base + (NFPROTO[family] * NF_MAX_HOOKS + NF_HOOK[hook]) * STATIC_KEY_SIZE


def keys_on(keys: dict[str, int | None] | list[str]) -> dict[str, bool]:
    """{name: on} for static keys named by symbol, or (name -> address) for keys inside an array."""
    named = dict.fromkeys(keys) if isinstance(keys, list) else dict(keys)
    syms = kallsyms({"__start___jump_table", "__stop___jump_table", *(n for n, a in named.items() if a is None)})
    want = {(a if a is not None else syms[n]): n for n, a in named.items()}
    core = Kcore()
    try:
        start = syms["__start___jump_table"]
        table = core.read(start, syms["__stop___jump_table"] - start)
        out: dict[str, bool] = {}
        for off in range(0, len(table), JUMP_ENTRY.size):
            code, _, key = JUMP_ENTRY.unpack_from(table, off)
            entry = start + off
            name = want.get(((entry + 8 + key) & MASK) & ~3)
            if name is None or name in out:
                continue
            site = core.read((entry + code) & MASK, 5)
            if site[0] in (0xE9, 0xEB):
                jumps = True
            elif site.startswith((b"\x0f\x1f\x44\x00", b"\x66\x90")):
                jumps = False
            else:
                raise ValueError(f"{name}: site at {(entry + code) & MASK:#x} holds {site.hex()} (mid-patch?)")
            out[name] = jumps ^ bool(key & 1)  # the branch bit: a likely branch's nop means on
        if missing := set(named) - out.keys():
            raise LookupError(f"no site tests {sorted(missing)}")
        return out
    finally:
        core.close()
