"""What a testbed gives other tools: an ansible inventory (one group per role and one of the
machines that run a Ray node; each machine's ssh, Python, data interfaces, the topology nodes it
carries and its own extra variables; the Ray head's address for all)."""

from __future__ import annotations

from typing import Any

from harness.testbed.resolve import Testbed

GROUPS = {"compute": "compute", "storage": "storage", "linux-switch": "linux_switch",
          "sonic-switch": "sonic_switch", "wan-emulator": "wan_emulator"}


def inventory(tb: Testbed) -> dict[str, Any]:
    """An ansible YAML inventory: hosts with their connection, groups by role, the testbed's name."""
    hosts: dict[str, dict[str, Any]] = {}
    for m in tb.spec.machines:
        h: dict[str, Any] = {"ansible_host": m.mgmt, "ansible_user": m.ssh.user, "ansible_port": m.ssh.port,
                             "ansible_python_interpreter": m.python,
                             "metrolab_interfaces": [x.model_dump(mode="json", exclude_none=True)
                                                     for x in m.interfaces]}
        if m.ssh.key:
            h["ansible_ssh_private_key_file"] = m.ssh.key
        if m.wan_ports:
            h["metrolab_wan_ports"] = list(m.wan_ports)
        nodes = sorted(n for n, mm in tb.spec.map.nodes.items() if mm == m.name)
        if nodes:
            h["metrolab_nodes"] = nodes
        h |= m.vars
        hosts[m.name] = h
    children = {group: {"hosts": {m.name: None for m in tb.by_role(role)}}
                for role, group in GROUPS.items() if tb.by_role(role)}
    children["ray_nodes"] = {"hosts": {m.name: None for m in tb.ray_machines()}}
    head = tb.ray_head
    return {"all": {"hosts": hosts, "children": children,
                    "vars": {"metrolab_testbed": tb.name, "metrolab_topology": tb.topology.name,
                             "metrolab_ray_head": head.name,
                             "metrolab_ray_address": f"{head.mgmt}:{tb.spec.ray.port}",
                             "metrolab_ray_port": tb.spec.ray.port,
                             "metrolab_ray_client_port": tb.spec.ray.client_port}}}
