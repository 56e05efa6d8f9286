"""The testbed file: machines and how a topology maps onto them (validated pydantic models).

Like sonic-mgmt's testbed files, devices and links are tables: `machines` (management address, ssh,
Python, roles, data interfaces with addresses and RDMA device) and `map` (each topology node to a
machine, each link to the ports it uses, each emulated WAN link to a wan-emulator's port pair).
Field rules live on the models; rules across them (a mapped machine exists, a port is one of its
interfaces, a WAN link has an emulator) in `metrolab.harness.testbed.resolve`, located by field path.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME = r"^[a-z0-9][a-z0-9-]{0,31}$"
Name = Annotated[str, Field(pattern=NAME)]
IFNAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$"  # IFNAMSIZ - 1
Role = Literal["compute", "storage", "linux-switch", "sonic-switch", "wan-emulator"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ssh(_Strict):
    user: str = "root"
    key: str | None = Field(default=None, description="private key file (default: the ssh agent's)")
    port: int = Field(default=22, ge=1, le=65535)


class Interface(_Strict):
    name: Annotated[str, Field(pattern=IFNAME)]
    address: ipaddress.IPv4Interface | None = None
    address6: ipaddress.IPv6Interface | None = None
    mtu: int = Field(default=1500, ge=1280, le=9216)
    # a NIC's RDMA device (mlx5_0), or soft-roce: an rxe device made on this interface
    rdma: str | None = None

    @field_validator("rdma")
    @classmethod
    def _rdma(cls, v):
        if v is not None and v != "soft-roce" and not v.replace("_", "").replace("-", "").isalnum():
            raise ValueError("an RDMA device name (mlx5_0) or soft-roce")
        return v


class Machine(_Strict):
    name: Name
    mgmt: str = Field(description="management address or DNS name ssh and Ray use")
    ssh: Ssh = Ssh()
    python: str = "/usr/bin/python3"
    roles: list[Role] = Field(min_length=1)
    interfaces: list[Interface] = Field(default_factory=list)
    wan_ports: tuple[str, str] | None = Field(default=None, description="wan-emulator: the two bridged ports")
    # extra ansible host variables (ansible_become, a role's setting such as metrolab_root)
    vars: dict[str, Any] = Field(default_factory=dict)


class LinkMap(_Strict):
    link: str = Field(description="a link of the topology")
    ports: tuple[str, str] = Field(description="MACHINE:IFACE at each end, in the topology link's a, b order")
    emulator: Name | None = Field(default=None, description="the wan-emulator machine this link crosses")

    @field_validator("ports")
    @classmethod
    def _ports(cls, v):
        for p in v:
            machine, sep, iface = p.partition(":")
            if not sep or not machine or not iface:
                raise ValueError(f"{p!r}: write MACHINE:IFACE")
        return v


class Mapping(_Strict):
    nodes: dict[str, Name] = Field(default_factory=dict, description="topology node -> machine")
    links: list[LinkMap] = Field(default_factory=list)


class RaySpec(_Strict):
    head: Name | None = Field(default=None, description="the machine that runs Ray's head (default: the first "
                              "compute machine)")
    port: int = Field(default=6379, ge=1, le=65535, description="the head's GCS port")
    client_port: int = Field(default=10001, ge=1, le=65535, description="Ray Client's port (the controller's way in)")
    token_file: str | None = Field(default=None, description="the cluster's token (Ray's token authentication: every "
                                   "node and the controller present it); default NAME.ray_token beside the testbed "
                                   "file, made by `testbed provision` if missing")


class TestbedSpec(_Strict):
    name: Name
    description: str = ""
    topology: str = Field(default="default", description="the topology (built-in name or path) it maps")
    machines: list[Machine] = Field(min_length=1)
    map: Mapping = Mapping()
    ray: RaySpec = RaySpec()
    known_hosts: str | None = Field(default=None, description="the file the machines' ssh host keys are pinned in "
                                    "(default: NAME.known_hosts beside the testbed file); `testbed provision` "
                                    "adds each machine not in it yet, every ssh checks against it")
