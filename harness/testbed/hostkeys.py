"""The machines' ssh host keys, pinned: `testbed provision` scans each machine's key once and
writes it to the testbed's known_hosts file (beside the testbed file unless it names one); every
later ssh — ansible's, `testbed check`'s, `testbed clean`'s — checks the key against that file
and refuses a machine whose key changed (a reinstalled machine, or another one at its address).
A machine reinstalled on purpose: remove its line (`ssh-keygen -R HOST -f FILE`) and provision."""

from __future__ import annotations

import shlex
from pathlib import Path

from metrolab.harness.errors import LabError
from metrolab.harness.kernel import sh
from metrolab.harness.testbed.resolve import Testbed
from metrolab.harness.testbed.spec import Machine

KEY_TYPES = "ed25519,ecdsa,rsa"


def host_name(m: Machine) -> str:
    return m.mgmt if m.ssh.port == 22 else f"[{m.mgmt}]:{m.ssh.port}"


def fingerprint(line: str) -> str:
    res = sh.run(["ssh-keygen", "-l", "-f", "-"], input=line + "\n", check=False)
    return res.stdout.split()[1] if res.rc == 0 and res.stdout.split() else "?"


def scan(m: Machine, timeout: int = 5) -> list[str]:
    """The machine's host keys as known_hosts lines, read from its sshd (ssh-keyscan)."""
    res = sh.run(["ssh-keyscan", "-T", str(timeout), "-p", str(m.ssh.port), "-t", KEY_TYPES, m.mgmt],
                 check=False, timeout=timeout * 3 + 5)
    lines = sorted(ln for ln in res.stdout.splitlines() if ln and not ln.startswith("#"))
    if not lines:
        raise LabError(f"machine {m.name}: no ssh host key read from {m.mgmt}:{m.ssh.port} "
                       f"({res.stderr.strip() or 'no answer'})")
    # ssh-keyscan names port-22 hosts bare and others [host]:port, as ssh looks them up
    return lines


def pinned(tb: Testbed) -> dict[str, list[str]]:
    """host -> its pinned known_hosts lines."""
    out: dict[str, list[str]] = {}
    path = tb.known_hosts
    if not path.exists():
        return out
    for ln in path.read_text().splitlines():
        if ln.strip() and not ln.startswith("#"):
            out.setdefault(ln.split()[0], []).append(ln.strip())
    return out


def _key(line: str) -> tuple[str, str]:
    parts = line.split()
    return parts[1], parts[2]


def compare(m: Machine, scanned: list[str], known: dict[str, list[str]]) -> str:
    """`new` (nothing pinned for it), `same` (a scanned key is pinned) or `changed`."""
    mine = known.get(host_name(m))
    if not mine:
        return "new"
    return "same" if {_key(x) for x in scanned} & {_key(x) for x in mine} else "changed"


def pin(tb: Testbed, *, write: bool = True) -> list[dict]:
    """Scan every machine; pin the keys of those not pinned yet (write=False: say what would be
    pinned). A machine whose key changed stops it before anything is written, naming each."""
    known = pinned(tb)
    found = []
    for m in tb.spec.machines:
        lines = scan(m)
        found.append((m, lines, compare(m, lines, known)))
    changed = [m for m, lines, state in found if state == "changed"]
    if changed:
        raise LabError(f"testbed {tb.name}: the ssh host key of "
                       + ", ".join(f"{m.name} ({host_name(m)})" for m in changed)
                       + f" differs from the one pinned in {tb.known_hosts}: another machine answers at that "
                       "address, or it was reinstalled (then remove its line: ssh-keygen -R HOST -f FILE)")
    out = []
    new = [(m, lines) for m, lines, state in found if state == "new"]
    if write and new:
        tb.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(tb.known_hosts, "a") as f:
            for _, lines in new:
                f.write("\n".join(lines) + "\n")
    for m, lines, state in found:
        out.append({"machine": m.name, "host": host_name(m), "state": "pinned" if state == "new" and write else
                    "would pin" if state == "new" else "pinned before",
                    "fingerprints": [fingerprint(ln) for ln in lines], "lines": lines})
    return out


def verify(tb: Testbed) -> dict[str, tuple[str, str]]:
    """machine -> (ok | fail, why): its key read now against the one pinned."""
    known = pinned(tb)
    out = {}
    for m in tb.spec.machines:
        try:
            state = compare(m, scan(m), known)
        except LabError as exc:
            out[m.name] = ("fail", str(exc))
            continue
        out[m.name] = {"same": ("ok", f"host key pinned in {tb.known_hosts.name}"),
                       "new": ("fail", f"no host key pinned for {host_name(m)} in {tb.known_hosts}: run "
                                       "`metrolab testbed provision` (it pins the key it reads)"),
                       "changed": ("fail", f"the host key of {host_name(m)} differs from the one pinned in "
                                           f"{tb.known_hosts}: another machine answers there, or it was reinstalled "
                                           "(then ssh-keygen -R HOST -f FILE and provision)")}[state]
    return out


def ssh_args(known_hosts: Path) -> str:
    """What every ssh to the machines adds: the pinned keys, strictly."""
    return f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={shlex.quote(str(known_hosts))}"


def ssh_argv(m: Machine, known_hosts: Path) -> list[str]:
    """ssh to `m` as every metrolab ssh does: batch, its host key pinned, its key file."""
    argv = ["ssh", "-p", str(m.ssh.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
            *shlex.split(ssh_args(known_hosts))]
    if m.ssh.key:
        argv += ["-i", m.ssh.key]
    return [*argv, f"{m.ssh.user}@{m.mgmt}"]
