"""Small topologies and read-back helpers for lab tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from metrolab.harness.lab.netns import NetnsLab
from metrolab.harness.spec.loader import topology_from_data


def two_hosts(rate: str | None = None, loss=None, **link) -> dict:
    """h1 -- sw -- h2, with the impairment on the h1-sw link."""
    props = {k: v for k, v in {"rate": rate, "loss": loss, **link}.items() if v is not None}
    return {"name": "pair", "sites": [
        {"name": "s", "kind": "aidc", "subnet": "10.9.0.0/24", "hosts": ["h1", "h2"], "switches": ["sw"]}],
        "links": [{"a": "h1", "b": "sw", **props}, {"a": "h2", "b": "sw"}]}


def two_paths(rate: str = "100mbit") -> dict:
    """a1 -- gw-a == two parallel WAN links (wan-1, wan-2: ECMP) == gw-b -- b1."""
    return {"name": "two-paths", "sites": [
        {"name": "aidc-a", "kind": "aidc", "subnet": "10.1.0.0/24", "hosts": ["a1"],
         "switches": [{"name": "gw-a", "role": "gateway"}], "access": {"switch": "gw-a"}},
        {"name": "aidc-b", "kind": "aidc", "subnet": "10.2.0.0/24", "hosts": ["b1"],
         "switches": [{"name": "gw-b", "role": "gateway"}], "access": {"switch": "gw-b"}}],
        "links": [{"name": "wan-1", "a": "gw-a", "b": "gw-b", "rate": rate},
                  {"name": "wan-2", "a": "gw-a", "b": "gw-b", "rate": rate}]}


def three_sites(hosts: int = 2) -> dict:
    """3 sites x (hosts + leaf + gateway), gateways in a triangle plus a second A-B path: >= 12 namespaces."""
    sites = []
    for i, name in enumerate(("a", "b", "c")):
        sites.append({"name": f"site-{name}", "kind": "aidc" if name != "c" else "storage",
                      "subnet": f"10.{i + 1}.0.0/24", "hosts": [f"{name}{j + 1}" for j in range(hosts)],
                      "switches": [{"name": f"leaf-{name}", "role": "leaf"}, {"name": f"gw-{name}", "role": "gateway"}],
                      "access": {"switch": f"leaf-{name}"}})
    links = [{"a": f"leaf-{n}", "b": f"gw-{n}"} for n in "abc"]
    links += [{"name": "wan-ab-1", "a": "gw-a", "b": "gw-b"}, {"name": "wan-ab-2", "a": "gw-a", "b": "gw-b"},
              {"a": "gw-a", "b": "gw-c"}, {"a": "gw-b", "b": "gw-c"}]
    return {"name": "three", "sites": sites, "links": links}


def build_lab(spec: dict, strict: bool = True) -> NetnsLab:
    lab = NetnsLab(topology_from_data(spec, "<test>"), strict=strict)
    lab.up()
    return lab


def lab_namespaces(lab_id: str) -> list[str]:
    d = Path("/run/netns")
    return sorted(p.name for p in d.iterdir() if p.name.startswith(f"{lab_id}-")) if d.exists() else []


def in_ns(lab, node: str, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run a real program inside a lab node (tests use real tools to check the lab)."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{lab.ns(node)}", "--", *cmd],
                          capture_output=True, text=True, timeout=timeout)


def rdma_sites(per_site: tuple[int, ...] = (2, 1), rdma: bool = True) -> dict:
    """AIDC sites of (Soft-RoCE) hosts (a1, a2, b1, …), one gateway each, gateways joined by WAN links."""
    names = "abcd"
    sites = [{"name": f"site-{names[i]}", "kind": "aidc", "subnet": f"10.{i + 1}.0.0/24",
              "hosts": [{"name": f"{names[i]}{j + 1}", "rdma": rdma} for j in range(n)],
              "switches": [{"name": f"gw-{names[i]}", "role": "gateway"}], "access": {"switch": f"gw-{names[i]}"}}
             for i, n in enumerate(per_site)]
    links = [{"name": f"wan-{names[i]}{names[j]}", "a": f"gw-{names[i]}", "b": f"gw-{names[j]}"}
             for i in range(len(per_site)) for j in range(i + 1, len(per_site))]
    return {"name": "rdma-sites", "sites": sites, "links": links}
