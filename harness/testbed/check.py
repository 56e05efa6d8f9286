"""`metrolab testbed check`: is every machine of a testbed fit for a run? Facts come from ansible
(check.yml: system, kernel, netem, RDMA devices and RoCEv2 GIDs, the data interfaces' MTU, driver
and lossless state — PFC, ETS, DCQCN's ECN —, metrolab's versions) and from the Ray cluster (a node per machine, each machine's clock against the
controller's); `judge` turns them into findings. Pure apart from `run_check`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from metrolab.harness.errors import LabError
from metrolab.harness.lab import remote
from metrolab.harness.testbed import ops
from metrolab.harness.testbed.agent import ssh_agent
from metrolab.harness.testbed.cluster import TestbedRay
from metrolab.harness.testbed.hostkeys import verify
from metrolab.harness.testbed.resolve import Testbed
from metrolab.harness.testbed.sonic_mgmt import SonicSwitch
from metrolab.harness.testbed.versions import collect, differences

# a clock further off than this spoils one-way delays measured across machines (500 km is 2.5 ms)
CLOCK_WARN_S = 0.001
MIN_PYTHON = (3, 11)  # pyproject's requires-python: the agent's bundle is the same code
# what metrolab runs on (docs/testbed.md, "Supported systems"): the releases its install and roles
# are written for, and the RoCE NIC drivers whose lossless state `dcb` and sysfs read
SYSTEMS = {("debian", "12"), ("debian", "13"), ("ubuntu", "22.04"), ("ubuntu", "24.04")}
NIC_DRIVERS = {"mlx5_core": "NVIDIA ConnectX-5 and later", "bnxt_en": "Broadcom NetXtreme-E",
               "ice": "Intel E810 (irdma)"}


@dataclass
class Finding:
    machine: str
    check: str
    level: str      # ok | warn | fail
    detail: str


@dataclass
class CheckReport:
    testbed: str
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)   # machine -> its facts
    findings: list[Finding] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        levels = {f.level for f in self.findings}
        return "fail" if "fail" in levels else "warn" if "warn" in levels else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"testbed": self.testbed, "verdict": self.verdict, "machines": self.machines,
                "findings": [asdict(f) for f in self.findings]}


def _rdma_name(iface: dict) -> str:
    return f"rxe_{iface['name']}" if iface.get("rdma") == "soft-roce" else iface["rdma"]


def judge(tb: Testbed, facts: dict[str, dict | None], unreachable: dict[str, str], controller: dict,
          ray_nodes: dict[str, Any] | None, clocks: dict[str, dict], needs_netem: bool) -> list[Finding]:
    """Findings per machine. `facts`: machine -> machine_facts.py's output (None: not read);
    `unreachable`: machine -> why; `ray_nodes`: machine -> node (None: no cluster reached);
    `clocks`: machine -> TestbedRay.clock(); `needs_netem`: the runs need delay on the emulators."""
    out: list[Finding] = []
    for m in tb.spec.machines:
        f = facts.get(m.name)
        if m.name in unreachable or f is None:
            out.append(Finding(m.name, "reachable", "fail", unreachable.get(m.name, "no facts read")))
            continue
        out.append(Finding(m.name, "reachable", "ok", f"ssh as {m.ssh.user}@{m.mgmt}; kernel {f['kernel']}"))
        osr = f.get("os") or {}
        system = (osr.get("id", "?"), osr.get("version_id", "?"))
        out.append(Finding(m.name, "system", "ok" if system in SYSTEMS else "warn",
                           f"{osr.get('pretty_name') or ' '.join(system)}, Python {f.get('python')}"
                           + ("" if system in SYSTEMS else " (not one metrolab is validated on: "
                              + ", ".join(f"{a} {b}" for a, b in sorted(SYSTEMS)) + ")")))
        if "wan-emulator" in m.roles:
            if f["netem"]:
                out.append(Finding(m.name, "netem", "ok", "sch_netem available"))
            else:
                out.append(Finding(m.name, "netem", "fail" if needs_netem else "warn",
                                   "no sch_netem: distance, jitter and netem loss cannot be emulated here"
                                   + ("" if needs_netem else " (rate and loss points still run)")))
            out.append(_gro(m.name, {p: (f["interfaces"].get(p) or {}).get("gro") for p in m.wan_ports or ()}))
        for iface in m.interfaces:
            got = f["interfaces"].get(iface.name, {})
            if not got.get("exists"):
                out.append(Finding(m.name, f"interface {iface.name}", "fail", "no such interface"))
                continue
            if iface.rdma:
                dev = _rdma_name(iface.model_dump())
                found = [d for d in f["rdma"] if d["device"] == dev or d.get("netdev") == iface.name]
                if not found:
                    out.append(Finding(m.name, f"rdma {iface.name}", "fail",
                                       f"no RDMA device {dev} on {iface.name} (provision makes Soft-RoCE ones)"))
                elif not any(d["rocev2_gids"] for d in found):
                    out.append(Finding(m.name, f"rdma {iface.name}", "fail",
                                       f"{found[0]['device']} has no RoCE v2 GID (no IP address on {iface.name}?)"))
                else:
                    d = found[0]
                    out.append(Finding(m.name, f"rdma {iface.name}", "ok",
                                       f"{d['device']} port {d['port']} {d['state']}, RoCEv2 GID index "
                                       f"{d['rocev2_gids'][0]['index']}"))
                out.append(_lossless(m.name, iface.name, iface.rdma, got))
        if m.name in {x.name for x in tb.ray_machines()}:
            v = f.get("versions")
            if v is None:
                out.append(Finding(m.name, "versions", "fail", "no metrolab venv (run `metrolab testbed provision`)"))
            else:
                diff = differences(controller, v)
                out.append(Finding(m.name, "versions", "fail" if diff else "ok",
                                   "; ".join(f"{k} {b} (controller {a})" for k, (a, b) in diff.items())
                                   or f"metrolab {v.get('metrolab')}, torch {v.get('torch')}, ray {v.get('ray')}, "
                                      f"pyverbs {v.get('pyverbs')}"))
            if ray_nodes is not None:
                node = ray_nodes.get(m.name)
                out.append(Finding(m.name, "ray", "ok" if node else "fail",
                                   f"node {node['NodeManagerAddress']}" if node
                                   else "no Ray node offers host:" + m.name))
            c = clocks.get(m.name)
            if c is not None:
                off, unc = c["offset_s"], c["uncertainty_s"]
                level = "warn" if abs(off) - unc > CLOCK_WARN_S else "ok"
                out.append(Finding(m.name, "clock", level, f"offset {off * 1e3:+.2f} ms ± {unc * 1e3:.2f} ms"))
    out += _paths(tb, facts)
    return out


def _lossless(machine: str, ifname: str, rdma: str | None, got: dict) -> Finding:
    """What a lossless RoCE run needs of the NIC: PFC on a priority, DCQCN's ECN on it (where the
    driver shows it), ETS; Soft-RoCE has none of them and leaves it to the switches' policies."""
    what = f"lossless {ifname}"
    if rdma == "soft-roce":
        return Finding(machine, what, "ok", "Soft-RoCE: no PFC or DCQCN in the NIC; a lossless path is the "
                                            "switches' policies' job (flow control: pause / backpressure / deep buffer)")
    drv, pfc, ecn, ets = got.get("driver"), got.get("pfc"), got.get("ecn"), got.get("ets")
    known = NIC_DRIVERS.get(drv or "")
    notes, level = [f"driver {drv or 'unknown'}" + (f" ({known})" if known else "")], "ok"
    if known is None:
        level = "warn"
        notes.append("not a driver metrolab is validated with (" + ", ".join(NIC_DRIVERS) + ")")
    if pfc is None:
        level = "warn"
        notes.append("PFC not readable through the kernel's DCB interface: check it with the vendor's tool")
    elif not pfc.get("on"):
        level = "warn"
        notes.append("PFC off on every priority: RoCE is not lossless here, a drop costs a Go-Back-N "
                     "(spoils a lossless run)")
    else:
        notes.append("PFC on priority " + ",".join(map(str, pfc["on"])))
        if ecn is None:
            notes.append("DCQCN's ECN state not in sysfs")
        else:
            off = {p: [pt for pt in ("roce_np", "roce_rp") if p not in ecn.get(pt, [])] for p in pfc["on"]}
            off = {p: v for p, v in off.items() if v}
            if off:
                level = "warn"
                notes.append("ECN off for " + "; ".join(f"priority {p}: {', '.join(v)}" for p, v in off.items())
                             + " (DCQCN: congestion left to PFC alone)")
            else:
                notes.append("ECN (DCQCN) on")
    if ets is not None and ets.get("tsa"):
        tsa = ets["tsa"].values() if isinstance(ets["tsa"], dict) else ets["tsa"]
        notes.append("ETS " + ("on" if "ets" in {str(t).lower() for t in tsa} else "off (strict priority only)"))
    return Finding(machine, what, level, "; ".join(notes))


def sonic_findings(tb: Testbed, tables: dict[str, dict | str]) -> list[Finding]:
    """A SONiC switch's management plane: reached (`tables`: machine -> its CONFIG_DB PORT table,
    or why it was not read), and every port the testbed maps on it listed there."""
    out = []
    for m in tb.by_role("sonic-switch"):
        got = tables.get(m.name, "not read")
        if isinstance(got, str):
            out.append(Finding(m.name, "sonic", "fail", f"management plane not reached: {got}"))
            continue
        out.append(Finding(m.name, "sonic", "ok", f"CONFIG_DB reached: {len(got)} ports"))
        for lm in tb.spec.map.links:
            for port in lm.ports:
                machine, _, iface = port.partition(":")
                if machine != m.name:
                    continue
                entry = got.get(f"PORT|{iface}")
                speed = (entry or {}).get("speed", "")
                out.append(Finding(m.name, f"port {iface}", "ok" if entry else "fail",
                                   (f"link {lm.link}, " + (f"{int(speed) // 1000} Gb/s" if speed.isdigit()
                                                            else "no speed set") + f", admin {entry.get('admin_status', '?')}")
                                   if entry else f"link {lm.link}: no PORT|{iface} in CONFIG_DB"))
    return out


def agent_findings(got: dict[str, dict | str]) -> list[Finding]:
    """Each machine reached over ssh only (`got`: machine -> remote.imports' answer through the ssh
    agent, or why it failed): its Python runs metrolab's operations from the agent's bundle alone."""
    out = []
    for name, r in sorted(got.items()):
        if isinstance(r, str):
            out.append(Finding(name, "agent", "fail", f"metrolab's operations do not run there over ssh: {r}"))
            continue
        version = tuple(int(x) for x in r["python"].split(".")[:2])
        if version < MIN_PYTHON:
            out.append(Finding(name, "agent", "fail", f"Python {r['python']}: metrolab's operations need "
                                                       f"{'.'.join(map(str, MIN_PYTHON))} or newer"))
        elif r["foreign"]:
            out.append(Finding(name, "agent", "fail", f"the operations pulled in {', '.join(r['foreign'])}, "
                                                       "which the bundle does not carry"))
        else:
            out.append(Finding(name, "agent", "ok", f"operations run over ssh (Python {r['python']}, nothing "
                                                     "of metrolab or Ray installed)"))
    return out


def _gro(machine: str, gro: dict[str, bool | None]) -> Finding:
    """An emulator's bridged ports: GRO on hands netem merged buffers, which it loses whole."""
    on = [p for p, g in gro.items() if g]
    unread = [p for p, g in gro.items() if g is None]
    if on:
        return Finding(machine, "gro", "fail", f"GRO on at {', '.join(on)}: netem would lose merged buffers, "
                                               "not wire packets (provision turns it off; a reboot turns it on again)")
    if unread:
        return Finding(machine, "gro", "warn",
                       f"GRO unreadable at {', '.join(unread)} (the driver answers no ethtool call)")
    return Finding(machine, "gro", "ok", "off on the bridged ports: netem acts on wire packets")


def _paths(tb: Testbed, facts: dict[str, dict | None]) -> list[Finding]:
    """MTU along each mapped link: both ports (and the emulator's two) at least the topology's MTU."""
    out = []
    links = {lk.name: lk for lk in tb.topology.links}
    for lm in tb.spec.map.links:
        want = links[lm.link].props.mtu
        ports = [p.split(":", 1) for p in lm.ports]
        if lm.emulator:
            em = tb.machine(lm.emulator)
            ports += [[em.name, p] for p in (em.wan_ports or ())]
        mtus = {}
        for machine, iface in ports:
            got = ((facts.get(machine) or {}).get("interfaces") or {}).get(iface) or {}
            if got.get("mtu"):
                mtus[f"{machine}:{iface}"] = got["mtu"]
        if len(mtus) < len(ports):
            continue  # a missing port is reported with its machine
        low = {p: v for p, v in mtus.items() if v < want}
        out.append(Finding(lm.link, "mtu path", "fail" if low else "ok",
                           ", ".join(f"{p} {v}" for p, v in low.items()) + f" below the link's {want}" if low
                           else f"{min(mtus.values())} ≥ {want} at {len(mtus)} ports"))
    return out


def facts_json(stdout: str) -> dict:
    """The facts script's JSON: its last line that is one. The script module runs it under a tty,
    so what the machine's login shell printed comes first (a sandbox run read pyenv's `cannot
    rehash: /root/.pyenv/shims isn't writable` from ~/.bashrc, the machines rehashing at once)."""
    for line in reversed(stdout.splitlines()):
        if line.strip().startswith("{"):
            return json.loads(line)
    raise json.JSONDecodeError("no JSON line", stdout, 0)


def run_check(tb: Testbed, *, needs_netem: bool = False, progress=None) -> CheckReport:
    """Read the facts (ansible, then Ray) and judge them."""
    run = ops.facts(tb, progress=progress)
    results = run.results("Read the machine's facts")
    facts: dict[str, dict | None] = {}
    unreachable: dict[str, str] = {}
    for name, o in run.hosts.items():
        if not o.ok:
            unreachable[name] = o.failed or ("unreachable" if o.unreachable else "failed")
    for name, r in results.items():
        try:
            facts[name] = facts_json(r.get("stdout") or "")
        except json.JSONDecodeError:
            facts[name] = None
            said = " ".join(((r.get("stdout") or "") + " " + (r.get("stderr") or "")).split())
            unreachable[name] = f"its facts script printed no JSON (rc {r.get('rc')}): {said[-600:] or 'nothing'}"
    ray_nodes: dict[str, Any] | None = None
    clocks: dict[str, dict] = {}
    findings: list[Finding] = []
    try:
        if progress:
            progress("connecting to the testbed's Ray cluster")
        with TestbedRay(tb) as cluster:
            ray_nodes = cluster.machines()
            for m in tb.ray_machines():
                if m.name in ray_nodes:
                    if progress:
                        progress(f"clock of {m.name}")
                    clocks[m.name] = cluster.clock(m.name)
    except LabError as exc:
        findings.append(Finding(tb.ray_head.name, "ray", "fail", str(exc)))
    if progress:
        progress("the machines' ssh host keys against the pinned ones")
    findings += [Finding(m, "host key", level, why) for m, (level, why) in verify(tb).items()]
    findings += judge(tb, facts, unreachable, collect(), ray_nodes, clocks, needs_netem)
    tables: dict[str, dict | str] = {}
    for m in tb.by_role("sonic-switch"):
        if progress:
            progress(f"the management plane of {m.name}")
        try:
            tables[m.name] = SonicSwitch(m, tb.known_hosts).snapshot(("PORT",))
        except LabError as exc:
            tables[m.name] = str(exc)
    findings += sonic_findings(tb, tables)
    agent, answers = ssh_agent(tb), {}
    try:
        for name in agent.machines:
            if name in unreachable:
                continue  # said already
            if progress:
                progress(f"metrolab's operations on {name} over ssh")
            try:
                answers[name] = agent.on(name, remote.imports)
            except Exception as exc:  # noqa: BLE001 — what the machine's Python said, as the finding
                answers[name] = f"{type(exc).__name__}: {exc}"
    finally:
        agent.close()
    findings += agent_findings(answers)
    return CheckReport(tb.name, {k: v for k, v in facts.items() if v is not None}, findings)
