"""Small topologies and read-back helpers for lab tests."""

from __future__ import annotations

import subprocess
from contextlib import AbstractContextManager
from pathlib import Path

import metrolab
from metrolab.harness.lab.netns import NetnsLab
from metrolab.harness.spec.loader import topology_from_data


def two_hosts(rate: str | None = None, loss=None, **link) -> dict:
    """h1 -- sw -- h2, with the impairment on the h1-sw link."""
    props = {k: v for k, v in {"rate": rate, "loss": loss, **link}.items() if v is not None}
    return {"name": "pair", "sites": [
        {"name": "s", "kind": "aidc", "subnet": "10.9.0.0/24", "hosts": ["h1", "h2"], "switches": ["sw"]}],
        "links": [{"a": "h1", "b": "sw", **props}, {"a": "h2", "b": "sw"}]}


def site(name: str, *hosts: str, kind: str = "aidc", gw: str | None = None, rdma: bool = False, **access) -> dict:
    """A site whose hosts reach the WAN through one gateway (gw-<its name's last letter>, or `gw`);
    `access`: each host's link to it (rate, queue_packets)."""
    gw = gw or f"gw-{name[-1]}"
    return {"name": name, "kind": kind, "hosts": [{"name": h, "rdma": True} if rdma else h for h in hosts],
            "switches": [{"name": gw, "role": "gateway"}], "access": {"switch": gw, **access}}


def metro(*sites: dict, wan: dict[str, tuple[str, str]] | None = None, name: str = "metro", **props) -> dict:
    """`sites` on 10.1.0.0/24, 10.2.0.0/24, … in order, their gateways joined by WAN links of
    `props` (rate, distance_km, queue_packets): those `wan` names (link: its two gateways), else one
    between every two sites, wan-<x><y> for gw-x and gw-y."""
    gws = [s["access"]["switch"] for s in sites]
    if wan is None:
        wan = {f"wan-{a[3:]}{b[3:]}": (a, b) for i, a in enumerate(gws) for b in gws[i + 1:]}
    return {"name": name, "sites": [{**s, "subnet": f"10.{i + 1}.0.0/24"} for i, s in enumerate(sites)],
            "links": [{"name": n, "a": a, "b": b, **props} for n, (a, b) in wan.items()]}


def wan_pair(name: str = "pair", kind_b: str = "aidc", **props) -> dict:
    """a1 (aidc-a) -- gw-a == wan == gw-b -- b1 (aidc-b): the smallest lab with a WAN link (`props`)."""
    return metro(site("aidc-a", "a1"), site("aidc-b", "b1", kind=kind_b), wan={"wan": ("gw-a", "gw-b")}, name=name,
                 **props)


def fl_sites() -> dict:
    """a1 aggregates; a2 beside it, b1 and c1 at two other sites, each reached by its own 400 Mbit/s
    WAN link; the downloads share a1's 100 Mbit/s access link."""
    return metro(site("a", "a1", "a2", rate="100mbit"), site("b", "b1"), site("c", "c1"),
                 wan={"wan-ab": ("gw-a", "gw-b"), "wan-ac": ("gw-a", "gw-c")}, name="fl", rate="400mbit")


def two_paths(rate: str = "100mbit") -> dict:
    """a1 -- gw-a == two parallel WAN links (wan-1, wan-2: ECMP) == gw-b -- b1."""
    return metro(site("aidc-a", "a1"), site("aidc-b", "b1"), wan={"wan-1": ("gw-a", "gw-b"), "wan-2": ("gw-a", "gw-b")},
                 name="two-paths", rate=rate)


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


def lab_up(spec: dict | str, strict: bool = True) -> AbstractContextManager[NetnsLab]:
    """`metrolab.lab` of a topology's data or of the name of one in harness/topologies/: what the lab
    fixtures (tests/conftest.py) hand out."""
    return metrolab.lab(spec if isinstance(spec, str) else topology_from_data(spec, "<test>"), strict=strict)


def lab_namespaces(lab_id: str) -> list[str]:
    d = Path("/run/netns")
    return sorted(p.name for p in d.iterdir() if p.name.startswith(f"{lab_id}-")) if d.exists() else []


def in_ns(lab, node: str, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run a real program inside a lab node (tests use real tools to check the lab)."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{lab.ns(node)}", "--", *cmd],
                          capture_output=True, text=True, timeout=timeout)


def rdma_sites(per_site: tuple[int, ...] = (2, 1), rdma: bool = True) -> dict:
    """AIDC sites of (Soft-RoCE) hosts (a1, a2, b1, …), one gateway each, gateways joined by WAN links."""
    return metro(*(site(f"site-{x}", *(f"{x}{j + 1}" for j in range(n)), rdma=rdma) for x, n in zip("abcd", per_site)),
                 name="rdma-sites")
