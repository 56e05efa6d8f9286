"""What a testbed gives other tools: an ansible inventory (one group per role and one of the
machines that run a Ray node; each machine's ssh, Python, data interfaces, the topology nodes it
carries and its own extra variables; the Ray head's address for all)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from metrolab.harness.errors import SpecError
from metrolab.harness.testbed.hostkeys import ssh_args
from metrolab.harness.testbed.resolve import Testbed

DEFAULT_ROOT = "/opt/metrolab"

GROUPS = {"compute": "compute", "storage": "storage", "linux-switch": "linux_switch",
          "sonic-switch": "sonic_switch", "wan-emulator": "wan_emulator"}


def inventory(tb: Testbed, known_hosts: Path | None = None) -> dict[str, Any]:
    """An ansible YAML inventory: hosts with their connection (host keys checked against
    `known_hosts`, default the testbed's pinned ones), groups by role, the testbed's name."""
    hosts: dict[str, dict[str, Any]] = {}
    for m in tb.spec.machines:
        h: dict[str, Any] = {"ansible_host": m.mgmt, "ansible_user": m.ssh.user, "ansible_port": m.ssh.port,
                             "ansible_python_interpreter": m.python,
                             "metrolab_interfaces": [x.model_dump(mode="json", exclude_none=True)
                                                     for x in m.interfaces]}
        if m.ssh.key:
            h["ansible_ssh_private_key_file"] = m.ssh.key
        h["ansible_ssh_common_args"] = ssh_args(known_hosts or tb.known_hosts)  # the pinned host keys, strictly
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


def ray_cluster_config(tb: Testbed) -> dict[str, Any]:
    """A Ray cluster launcher config (provider local) for the testbed's machines, as the ray_node
    role starts them: the head's client port, `host:<machine>` on every node (a worker reads its
    name from `<metrolab_root>/machine`, which the metrolab role writes: the launcher gives every
    worker the same commands), the testbed's auth mode, and no `ray stop` (the launcher's default
    start commands begin with one, which stops every Ray process on the machine by name). Ray's
    own `ray down` runs `ray stop` too: stop a testbed's nodes with `metrolab testbed clean`."""
    head = tb.ray_head
    workers = [m for m in tb.ray_machines() if m.name != head.name]
    roots = {m.vars.get("metrolab_root", DEFAULT_ROOT) for m in workers}
    venvs = {m.vars.get("metrolab_venv", f"{m.vars.get('metrolab_root', DEFAULT_ROOT)}/venv") for m in tb.ray_machines()}
    if len(roots) > 1 or len(venvs) > 1:
        raise SpecError(tb.source, "machines[].vars", sorted(roots | venvs),
                        "Ray's launcher gives every worker the same commands: give the Ray machines one "
                        "metrolab_root and metrolab_venv (or use `metrolab testbed provision`, whose ray_node role "
                        "starts each node itself)")
    root, ray = (roots.pop() if roots else DEFAULT_ROOT), f"{venvs.pop()}/bin/ray"
    # token authentication as provisioning's nodes have it: the launcher copies the cluster's token
    # (`metrolab testbed provision` makes it; ops.ray_token) to every machine first
    token = "~/.metrolab/ray_token"
    env = f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token} RAY_USAGE_STATS_ENABLED=0"
    head_res = shlex.quote(json.dumps({f"host:{head.name}": 1}))
    worker_res = '"{\\"host:$(cat ' + root + '/machine)\\": 1}"'
    auth: dict[str, Any] = {"ssh_user": head.ssh.user}
    if head.ssh.key:
        auth["ssh_private_key"] = head.ssh.key
    return {
        "cluster_name": tb.name,
        "provider": {"type": "local", "head_ip": head.mgmt, "worker_ips": [m.mgmt for m in workers]},
        "auth": auth,
        "max_workers": len(workers),
        "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
        "docker": {}, "file_mounts": {token: str(tb.ray_token)}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
        # `metrolab testbed provision` installs metrolab and its pinned dependencies
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [
            f"{env} {ray} start --head --port={tb.spec.ray.port} --ray-client-server-port={tb.spec.ray.client_port} "
            f"--node-ip-address={head.mgmt} --resources={head_res} --autoscaling-config=~/ray_bootstrap_config.yaml"],
        "worker_start_ray_commands": [
            f"{env} {ray} start --address=$RAY_HEAD_IP:{tb.spec.ray.port} --resources={worker_res}"],
    }
