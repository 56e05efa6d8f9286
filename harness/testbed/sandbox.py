"""A testbed of network namespaces on this machine: what a real lab's testbed is, small.

Every machine of the testbed is a namespace with its own OpenSSH server on a management network
(a bridge in a namespace of its own), and the controller is one more namespace on that network:
ansible reaches the machines over SSH and Ray forms a cluster across them exactly as in a lab.
Each topology node is a machine; each emulated link (distance, delay, loss) crosses a wan-emulator
machine that bridges its two ports. The data plane's ports are veth pairs named as the testbed
file names them.

The machines share this machine's file system, so the testbed file gives each its own directory
(`metrolab_root`), points the metrolab role at the controller's own venv, installs packages in
check mode only and keeps every persistent file (udev rule, sysctl.d) inside that directory:
provisioning a sandbox changes nothing outside its namespaces and its directory.

The sandbox is a journaled lab (backend `sandbox`): `metrolab lab clean` removes what a killed
run left (its namespaces, and the sshd and Ray processes inside them).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyroute2 import netns

from metrolab.harness.capabilities import probe
from metrolab.harness.errors import CapabilityError, LabError
from metrolab.harness.kernel import sh
from metrolab.harness.kernel.nsctx import NETNS_RUN_DIR, in_netns, iproute, wire_sized, write_sysctl
from metrolab.harness.lab import remote
from metrolab.harness.lab.netns import remove_namespace
from metrolab.harness.lab.plan import build_plan
from metrolab.harness.lab.state import LabState, all_states, new_lab_id
from metrolab.harness.policy import sonic_db
from metrolab.harness.spec.resolve import Topology
from metrolab.harness.testbed.hosts import HostsLab
from metrolab.harness.testbed.resolve import load_testbed, needs_emulation

log = logging.getLogger(__name__)
MGMT = ipaddress.ip_network("10.99.0.0/24")
SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
"""


def sshd() -> str:
    exe = sh.which("sshd")
    if exe is None:
        raise CapabilityError("sshd is not installed (openssh-server; run the README's install command)")
    return exe


@dataclass
class SandboxMachine:
    name: str
    mgmt: str
    roles: list[str]
    interfaces: list[dict[str, Any]] = field(default_factory=list)
    wan_ports: list[str] | None = None


def plan_machines(topo: Topology, emulate: set[str] | None = None, sonic: AbstractSet[str] = frozenset()
                  ) -> tuple[list[SandboxMachine], list[dict[str, Any]], dict[str, str]]:
    """Machines, link map and node map for `topo`: a machine per node (its ports named as the netns
    backend names them) and a wan-emulator per emulated link (eth1 towards end a, eth2 towards b):
    every link with distance, delay or loss, and those named in `emulate` (default: the links whose
    name starts with "wan", as a lab puts every WAN span across its emulator). Switches named in
    `sonic` play SONiC switches: their management plane, a Redis server with SONiC's databases."""
    plan = build_plan(topo)
    hosts = MGMT.hosts()
    next(hosts)  # .1 is the controller
    machines: dict[str, SandboxMachine] = {}
    for name, node in topo.nodes.items():
        role = "sonic-switch" if name in sonic else "linux-switch" if node.is_switch else "compute"
        ifaces = []
        for i in plan.ifaces_of(name):
            iface: dict[str, Any] = {"name": i.ifname, "mtu": next(lk for lk in topo.links if lk.name == i.link).props.mtu}
            if not node.is_switch and node.address is not None:
                iface["address"] = f"{node.address}/32"
            ifaces.append(iface)
        machines[name] = SandboxMachine(name, str(next(hosts)), [role], ifaces)
    links = []
    for lk in topo.links:
        a, b = plan.ends(lk.name)
        entry: dict[str, Any] = {"link": lk.name, "ports": [f"{lk.a}:{a.ifname}", f"{lk.b}:{b.ifname}"]}
        wanted = emulate if emulate is not None else {x.name for x in topo.links if x.name.startswith("wan")}
        if needs_emulation(lk) or lk.name in wanted:
            em = f"em-{lk.name}"[:32]
            machines[em] = SandboxMachine(em, str(next(hosts)), ["wan-emulator"],
                                          [{"name": "eth1", "mtu": lk.props.mtu}, {"name": "eth2", "mtu": lk.props.mtu}],
                                          ["eth1", "eth2"])
            entry["emulator"] = em
        links.append(entry)
    return list(machines.values()), links, {n: n for n in topo.nodes}


class Sandbox:
    """`with Sandbox(topology) as sb:` builds it; sb.testbed_file is the testbed to hand to
    `metrolab testbed …` run inside the controller namespace (sb.controller_argv)."""

    def __init__(self, topology: Topology, *, netem: bool | None = None, emulate: set[str] | None = None,
                 sonic: AbstractSet[str] = frozenset()):
        self.topology = topology
        self.lab_id = new_lab_id()
        # short: Ray's AF_UNIX socket paths under it must stay within 107 bytes
        self.dir = Path(tempfile.gettempdir()) / f"mlsb-{self.lab_id}"
        self.dir.mkdir(mode=0o700)
        unknown = sorted(set(sonic) - {n.name for n in topology.switches()})
        if unknown:
            raise LabError(f"sandbox: {', '.join(unknown)} is not a switch of {topology.name}")
        self.machines, self.links, self.nodes = plan_machines(topology, emulate, set(sonic))
        self.state = LabState(self.lab_id, "sandbox", topology.name, "")
        self.procs: dict[str, subprocess.Popen] = {}
        self._made_privsep = False
        if netem is None:
            netem = probe().has("netem")
        self.netem = netem

    # -- names ---------------------------------------------------------------------------
    def ns(self, machine: str) -> str:
        return f"{self.lab_id}-{machine}"

    @property
    def controller_ns(self) -> str:
        return self.ns("ctl")

    @property
    def testbed_file(self) -> Path:
        return self.dir / "testbed.yaml"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    def redis_socket(self, machine: str) -> Path:
        """A SONiC switch's Redis (its management plane): a Unix socket in its directory."""
        return self.dir / machine / "redis.sock"

    def controller_argv(self, argv: list[str]) -> list[str]:
        """`argv` run on the controller (its namespace, with /sys of that namespace)."""
        ip = sh.which("ip") or "ip"
        return [ip, "netns", "exec", self.controller_ns, *argv]

    # -- the testbed file ----------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        machines: list[dict[str, Any]] = []
        for m in self.machines:
            root = self.dir / m.name
            entry: dict[str, Any] = {
                "name": m.name, "mgmt": m.mgmt, "roles": m.roles, "interfaces": m.interfaces,
                "ssh": {"user": "root", "key": str(self.key)}, "python": "/usr/bin/python3",
                "vars": {"metrolab_root": str(root), "metrolab_venv": sys.prefix,
                         "roce_host_packages_check_only": True, "linux_switch_packages_check_only": True,
                         "metrolab_packages_check_only": True,
                         "roce_host_udev_rules": str(root / "90-metrolab-rxe.rules"),
                         "roce_host_sysctl_file": str(root / "90-metrolab-roce.conf"),
                         "linux_switch_sysctl_file": str(root / "90-metrolab-switch.conf"),
                         "wan_emulator_require_netem": self.netem,
                         # one CPU each: Ray counts this machine's CPUs on every namespace
                         "ray_node_num_cpus": 1, "ray_node_dir": str(self.dir / f"r{len(machines)}")}}
            if "sonic-switch" in m.roles:
                entry["vars"]["sonic_redis"] = f"unix:{self.redis_socket(m.name)}"
            if m.wan_ports:
                entry["wan_ports"] = m.wan_ports
            machines.append(entry)
        return {"name": f"sandbox-{self.lab_id}", "description": "namespaces on one machine (metrolab sandbox)",
                "topology": "topology.yaml", "machines": machines,
                "map": {"nodes": self.nodes, "links": self.links}}

    # -- build ---------------------------------------------------------------------------
    def up(self) -> None:
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> None:
        exe = sshd()
        self.state.status = "building"
        self.state.extra["dir"] = str(self.dir)
        self.state.save()
        sh.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        (self.dir / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        if not Path("/run/sshd").exists():  # sshd's privilege-separation directory
            Path("/run/sshd").mkdir(mode=0o755)
            self._made_privsep = True
            self.state.extra["made_run_sshd"] = True
        mgmt_ns = self.ns("mgmt")
        for name in [mgmt_ns, self.controller_ns, *(self.ns(m.name) for m in self.machines)]:
            self.state.record_namespace(name)
            netns.create(name)
        hm = iproute(mgmt_ns)
        try:
            hm.link("add", ifname="br0", kind="bridge")
            br = hm.link_lookup(ifname="br0")[0]
            hm.link("set", index=br, state="up")
            hm.link("set", index=hm.link_lookup(ifname="lo")[0], state="up")
            for i, (name, address) in enumerate([("ctl", str(MGMT[1])), *((m.name, m.mgmt) for m in self.machines)]):
                self._mgmt_port(hm, br, f"m{i}", self.ns(name), address)
        finally:
            hm.close()
        for lm in self.links:
            self._data_link(lm)
        for m in self.machines:
            self._start_sshd(exe, m)
            if "sonic-switch" in m.roles:
                self._start_redis(m)
        # the topology beside the testbed file (a scenario's inline topology has no file of its own)
        (self.dir / "topology.yaml").write_text(yaml.safe_dump(self.topology.spec.model_dump(mode="json",
                                                                                              exclude_none=True),
                                                               sort_keys=False))
        self.testbed_file.write_text(yaml.safe_dump(self.spec(), sort_keys=False))
        for m in self.machines:
            self._wait_ssh(m)
        self._own_sonic_config()
        self.state.status = "up"
        self.state.save()

    def _mgmt_port(self, hm, br: int, side: str, ns: str, address: str) -> None:
        hm.link("add", ifname=side, kind="veth", peer={"ifname": "mgmt0", "net_ns_fd": ns})
        idx = hm.link_lookup(ifname=side)[0]
        hm.link("set", index=idx, master=br, state="up")
        h = iproute(ns)
        try:
            m0 = h.link_lookup(ifname="mgmt0")[0]
            h.addr("add", index=m0, address=address, prefixlen=MGMT.prefixlen)
            h.link("set", index=m0, state="up")
            h.link("set", index=h.link_lookup(ifname="lo")[0], state="up")
        finally:
            h.close()

    def _data_link(self, lm: dict[str, Any]) -> None:
        """A mapped link's wire: one veth pair, or two through its emulator's eth1/eth2."""
        (ma, ia), (mb, ib) = (p.split(":") for p in lm["ports"])
        pairs = [((ma, ia), (mb, ib))]
        if lm.get("emulator"):
            em = lm["emulator"]
            pairs = [((ma, ia), (em, "eth1")), ((em, "eth2"), (mb, ib))]
        mtu = next(lk for lk in self.topology.links if lk.name == lm["link"]).props.mtu
        for (m1, i1), (m2, i2) in pairs:
            h = iproute(self.ns(m1))
            try:
                h.link("add", ifname=i1, kind="veth", mtu=mtu, peer={"ifname": i2, "net_ns_fd": self.ns(m2), "mtu": mtu})
            finally:
                h.close()
            for m, i in ((m1, i1), (m2, i2)):
                node = self.topology.nodes.get(m)
                if node is not None and not node.is_switch:
                    # a server's NIC segments TCP on the wire (TSO) and a veth does not: one segment a
                    # buffer, so an emulator's loss acts on wire packets (docs/lab.md, wire-sized packets)
                    hm = iproute(self.ns(m))
                    try:
                        wire_sized(hm, i)
                    finally:
                        hm.close()

    def _start_sshd(self, exe: str, m: SandboxMachine) -> None:
        d = self.dir / m.name
        d.mkdir()
        sh.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "ssh_host_ed25519_key")])
        cfg = d / "sshd_config"
        cfg.write_text(SSHD_CONFIG.format(address=m.mgmt, dir=d, authorized=self.dir / "authorized_keys"))
        # `ip netns exec` also mounts the namespace's own /sys: the sessions see their interfaces there
        self.procs[m.name] = sh.popen(["ip", "netns", "exec", self.ns(m.name), exe, "-D", "-f", str(cfg),
                                       "-E", str(d / "sshd.log")], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _start_redis(self, m: SandboxMachine) -> None:
        """SONiC's databases on a Unix socket only (no TCP port: nothing listens outside the
        sandbox), nothing saved to disk; stopped with the machine's namespace."""
        exe = sh.which("redis-server")
        if exe is None:
            raise CapabilityError("redis-server is not installed (a sandbox SONiC switch's management plane; "
                                  "run the README's install command)")
        d, sock = self.dir / m.name, self.redis_socket(m.name)
        self.procs[f"{m.name}-redis"] = sh.popen(
            ["ip", "netns", "exec", self.ns(m.name), exe, "--port", "0", "--unixsocket", str(sock),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", str(d),
             "--logfile", str(d / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline:
                raise LabError(f"sandbox machine {m.name}: redis-server did not open {sock}")
            time.sleep(0.05)

    def _own_sonic_config(self) -> None:
        """What a SONiC switch's owner configured before metrolab comes (a run builds nothing on
        such a switch): its ports listed in CONFIG_DB's PORT table as SONiC lists them, the lab
        plan's addresses and routes on them, forwarding on. The sandbox plays that owner; it goes
        with the switch's namespace."""
        sonic = [m for m in self.machines if "sonic-switch" in m.roles]
        if not sonic:
            return
        lab = HostsLab(load_testbed(self.testbed_file))
        for m in sonic:
            node = next(n for n, machine in self.nodes.items() if machine == m.name)
            ports, routes = lab.node_config(node)
            write_sysctl(self.ns(m.name), "net.ipv4.ip_forward", 1)
            with in_netns(self.ns(m.name)):
                remote.configure(ports, routes, [])
            r = sonic_db.Redis(f"unix:{self.redis_socket(m.name)}")
            try:
                r.call("SELECT", sonic_db.CONFIG_DB)
                for p in ports:
                    r.call("HSET", f"PORT|{p['ifname']}", "admin_status", "up", "mtu", str(p["mtu"]),
                           "speed", "100000")
            finally:
                r.close()

    def _wait_ssh(self, m: SandboxMachine, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            res = subprocess.run(self.controller_argv(
                ["ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                 "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR", f"root@{m.mgmt}", "true"]),
                capture_output=True, text=True, check=False)
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                log_tail = (self.dir / m.name / "sshd.log").read_text()[-500:] if (self.dir / m.name / "sshd.log").exists() else ""
                raise LabError(f"sandbox machine {m.name}: no ssh at {m.mgmt} within {timeout:g} s: "
                               f"{res.stderr.strip()} {log_tail}".strip())
            time.sleep(0.3)

    # -- tear down -----------------------------------------------------------------------
    def down(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        for name in reversed(self.state.namespaces):  # and every Ray process left inside them
            remove_namespace(name)
        if self._made_privsep:
            shutil.rmtree("/run/sshd", ignore_errors=True)
            self._made_privsep = False
        drop_journals(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.state.remove()

    def __enter__(self) -> Sandbox:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()


def remove(state: LabState) -> list[str]:
    """Take a sandbox down from its journal (another process built it): its namespaces with every
    process inside them (sshd, Ray nodes), its directory."""
    out = []
    for name in reversed(state.namespaces):
        if (NETNS_RUN_DIR / name).exists():
            remove_namespace(name)
            out.append(name)
    out += cleanup_leftovers(state)
    state.remove()
    return out


def cleanup_leftovers(state: LabState) -> list[str]:
    """What `metrolab lab clean` removes of a killed sandbox beyond its namespaces."""
    out = []
    d = state.extra.get("dir")
    if d and Path(d).name.startswith("mlsb-"):
        out += drop_journals(Path(d))
        if Path(d).exists():
            shutil.rmtree(d, ignore_errors=True)
            out.append(d)
    if state.extra.get("made_run_sshd") and Path("/run/sshd").exists() and not _sshd_running():
        shutil.rmtree("/run/sshd", ignore_errors=True)
        out.append("/run/sshd")
    return out


def drop_journals(sandbox_dir: Path) -> list[str]:
    """The journals of labs built on this sandbox's machines (a run killed, or a test that failed
    before its `testbed clean`): with the machines gone there is nothing left to undo, and a journal
    kept would read as a lab still up to whoever lists this machine's labs."""
    testbed = str((sandbox_dir / "testbed.yaml").resolve())
    out = []
    for st in all_states():
        if st.backend == "hosts" and st.extra.get("testbed") == testbed:
            st.remove()
            out.append(f"journal of lab {st.lab_id}")
    return out


def _sshd_running() -> bool:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "sshd" and int(proc.name) != os.getpid():
                    return True
            except OSError:
                continue
    return False
