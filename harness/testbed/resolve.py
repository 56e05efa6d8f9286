"""A testbed file resolved against its topology: every cross-field rule, each error located."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metrolab.harness.errors import SpecError, SpecErrors
from metrolab.harness.spec.loader import load_topology, read_yaml, validate_mapping
from metrolab.harness.spec.resolve import Topology
from metrolab.harness.testbed.spec import LinkMap, Machine, TestbedSpec

# the roles of the machines that carry the topology's hosts: their ranks run on a Ray node there
RAY_ROLES = frozenset({"compute", "storage"})


@dataclass
class Testbed:
    spec: TestbedSpec
    source: str
    topology: Topology

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ray_token(self) -> Path:
        """The file holding the cluster's Ray token (metrolab.harness.testbed.ops.ray_token makes it)."""
        base = Path(self.source).resolve().parent
        given = self.spec.ray.token_file
        if given:
            return Path(given) if Path(given).is_absolute() else base / given
        return base / f"{self.name}.ray_token"

    @property
    def known_hosts(self) -> Path:
        """Where the machines' ssh host keys are pinned (metrolab.harness.testbed.hostkeys)."""
        base = Path(self.source).resolve().parent
        given = self.spec.known_hosts
        if given:
            return Path(given) if Path(given).is_absolute() else base / given
        return base / f"{self.name}.known_hosts"

    def machine(self, name: str) -> Machine:
        return next(m for m in self.spec.machines if m.name == name)

    def machine_of(self, node: str) -> Machine:
        return self.machine(self.spec.map.nodes[node])

    def by_role(self, role: str) -> list[Machine]:
        return [m for m in self.spec.machines if role in m.roles]

    @property
    def ray_head(self) -> Machine:
        """The machine running Ray's head: the named one, else the first compute machine."""
        if self.spec.ray.head:
            return self.machine(self.spec.ray.head)
        return (self.by_role("compute") or self.by_role("storage") or self.spec.machines)[0]

    def ray_machines(self) -> list[Machine]:
        """Machines that run a Ray node: the compute and storage machines, which carry the
        topology's hosts and their ranks. Switches and WAN emulators are reached over ssh only
        (metrolab.harness.testbed.agent): nothing of Ray or metrolab runs there."""
        return [m for m in self.spec.machines if RAY_ROLES & set(m.roles)]


def needs_emulation(link) -> bool:
    """A topology link with distance, delay, jitter or loss: only a WAN emulator gives it."""
    p = link.props
    return bool(p.distance_km or p.delay or p.jitter or (p.loss is not None and p.loss.p)
                or p.duplicate or p.reorder)


def resolve(spec: TestbedSpec, file: str, topology: Topology) -> Testbed:
    errs: list[SpecError] = []
    machines: dict[str, Machine] = {}
    for i, m in enumerate(spec.machines):
        if m.name in machines:
            errs.append(SpecError(file, f"machines[{i}].name", m.name, "duplicate machine name"))
        machines[m.name] = m
        ifaces = [x.name for x in m.interfaces]
        for j, name in enumerate(ifaces):
            if name in ifaces[:j]:
                errs.append(SpecError(file, f"machines[{i}].interfaces[{j}].name", name, "duplicate interface"))
        if "wan-emulator" in m.roles:
            if m.wan_ports is None:
                errs.append(SpecError(file, f"machines[{i}].wan_ports", None,
                                      "a wan-emulator names the two ports it bridges"))
            elif m.wan_ports[0] == m.wan_ports[1]:
                errs.append(SpecError(file, f"machines[{i}].wan_ports", list(m.wan_ports), "two different ports"))
        elif m.wan_ports is not None:
            errs.append(SpecError(file, f"machines[{i}].wan_ports", list(m.wan_ports),
                                  "only a wan-emulator bridges ports (add the role)"))
    if spec.ray.head is not None and spec.ray.head not in machines:
        errs.append(SpecError(file, "ray.head", spec.ray.head, "no such machine"))
    elif spec.ray.head is not None and not RAY_ROLES & set(machines[spec.ray.head].roles):
        errs.append(SpecError(file, "ray.head", spec.ray.head, "only compute and storage machines run a Ray node "
                              "(switches and WAN emulators are reached over ssh)"))
    for node, mname in spec.map.nodes.items():
        if node not in topology.nodes:
            errs.append(SpecError(file, f"map.nodes.{node}", node, f"no such node in topology {topology.name}"))
        if mname not in machines:
            errs.append(SpecError(file, f"map.nodes.{node}", mname,
                                  f"no such machine (machines: {', '.join(sorted(machines))})"))
        elif node in topology.nodes and topology.nodes[node].kind == "host" and \
                not RAY_ROLES & set(machines[mname].roles):
            errs.append(SpecError(file, f"map.nodes.{node}", mname, "a host maps to a compute or storage machine"))
    for node in topology.nodes:
        if node not in spec.map.nodes:
            errs.append(SpecError(file, "map.nodes", node, f"topology node {node} is not mapped to a machine"))
    links = {lk.name: lk for lk in topology.links}
    mapped: set[str] = set()
    for k, lm in enumerate(spec.map.links):
        at = f"map.links[{k}]"
        lk = links.get(lm.link)
        if lk is None:
            errs.append(SpecError(file, f"{at}.link", lm.link, f"no such link in topology {topology.name}"))
            continue
        if lm.link in mapped:
            errs.append(SpecError(file, f"{at}.link", lm.link, "mapped twice"))
        mapped.add(lm.link)
        errs += _check_ports(lm, at, file, machines, spec, (lk.a, lk.b))
        if needs_emulation(lk) and lm.emulator is None:
            errs.append(SpecError(file, f"{at}.emulator", None, f"link {lm.link} has distance, delay or loss: "
                                  "map it across a wan-emulator machine"))
        if lm.emulator is not None:
            em = machines.get(lm.emulator)
            if em is None:
                errs.append(SpecError(file, f"{at}.emulator", lm.emulator, "no such machine"))
            elif "wan-emulator" not in em.roles:
                errs.append(SpecError(file, f"{at}.emulator", lm.emulator, "not a wan-emulator machine"))
    for name in links:
        if name not in mapped:
            errs.append(SpecError(file, "map.links", name, f"topology link {name} is not mapped to ports"))
    if errs:
        raise SpecErrors(errs) if len(errs) > 1 else errs[0]
    return Testbed(spec, file, topology)


def _check_ports(lm: LinkMap, at: str, file: str, machines: dict[str, Machine], spec: TestbedSpec,
                 ends: tuple[str, str]) -> list[SpecError]:
    errs = []
    for side, (port, node) in enumerate(zip(lm.ports, ends)):
        mname, _, iface = port.partition(":")
        m = machines.get(mname)
        if m is None:
            errs.append(SpecError(file, f"{at}.ports[{side}]", port, "no such machine"))
            continue
        if iface not in {x.name for x in m.interfaces}:
            errs.append(SpecError(file, f"{at}.ports[{side}]", port,
                                  f"machine {mname} has no interface {iface} (interfaces: "
                                  f"{', '.join(x.name for x in m.interfaces) or 'none'})"))
        if spec.map.nodes.get(node) not in (None, mname):
            errs.append(SpecError(file, f"{at}.ports[{side}]", port,
                                  f"end {node} of the link maps to machine {spec.map.nodes[node]}, not {mname}"))
    return errs


def testbed_from_data(data: Any, file: str) -> Testbed:
    spec = validate_mapping(TestbedSpec, data, file, "a testbed is a mapping with name, machines and map")
    topo_ref = spec.topology
    if not Path(topo_ref).is_absolute() and (Path(file).parent / topo_ref).exists():
        topo_ref = str(Path(file).parent / topo_ref)
    return resolve(spec, file, load_topology(topo_ref))


def load_testbed(path: str | Path) -> Testbed:
    return testbed_from_data(read_yaml(path), str(path))
