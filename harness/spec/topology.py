"""Topology spec: the YAML a user writes, as validated pydantic models.

Field-level rules (types, ranges, unknown fields) live on the models; rules that relate
fields (links to existing nodes, unique names, addresses that fit) live in
`metrolab.harness.spec.resolve`, which locates each error by field path.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from metrolab.netem.units import parse_probability, parse_rate, parse_time

NAME = r"^[a-z0-9][a-z0-9-]{0,23}$"
Name = Annotated[str, Field(pattern=NAME)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostSpec(_Strict):
    name: Name
    address: ipaddress.IPv4Address | None = None
    address6: ipaddress.IPv6Address | None = None
    rdma: bool = False


class SwitchSpec(_Strict):
    name: Name
    role: Literal["leaf", "spine", "gateway"] = "leaf"


class LossSpec(_Strict):
    model: Literal["random", "gilbert-elliott"] = "random"
    p: float = Field(ge=0, le=1)
    r: float = Field(default=1.0, ge=0, le=1)
    h: float = Field(default=0.0, ge=0, le=1)
    k: float = Field(default=1.0, ge=0, le=1)
    correlation: float = Field(default=0.0, ge=0, le=1)

    @field_validator("p", "r", "h", "k", "correlation", mode="before")
    @classmethod
    def _prob(cls, v):
        return parse_probability(v)


def _rate(v):
    if v is None:
        return v
    rate = parse_rate(v)
    if rate <= 0:
        raise ValueError("rate must be > 0")
    return rate


def _time(v):
    if v is None:
        return v
    t = parse_time(v)
    if t < 0:
        raise ValueError("must be >= 0")
    return t


class LinkCommon(_Strict):
    """Properties shared by explicit links and a site's generated access links."""

    rate: float | None = Field(default=None, description="bit/s, or '10gbit', '100mbit'")
    distance_km: float | None = Field(default=None, ge=0)
    delay: float | None = Field(default=None, description="explicit one-way delay; '2.5ms'")
    hop_latency: float = Field(default=0.0, description="per-device latency added to fiber delay")
    jitter: float = 0.0
    jitter_distribution: Literal["uniform", "normal", "pareto", "paretonormal"] = "uniform"
    loss: LossSpec | None = None
    duplicate: float = 0.0
    reorder: float = 0.0
    queue_packets: int | None = Field(default=None, gt=0, description="buffer beyond the delay line")
    mtu: int = Field(default=1500, ge=576, le=9000)

    _r = field_validator("rate", mode="before")(lambda cls, v: _rate(v))
    _t = field_validator("delay", "hop_latency", "jitter", mode="before")(lambda cls, v: _time(v))

    @field_validator("loss", mode="before")
    @classmethod
    def _loss(cls, v):
        if isinstance(v, (int, float, str)):
            return {"model": "random", "p": v}
        return v

    @field_validator("duplicate", "reorder", mode="before")
    @classmethod
    def _p(cls, v):
        return parse_probability(v)


class AccessSpec(LinkCommon):
    """Connect every host of a site to one switch with identical links."""

    switch: Name


class LinkSpec(LinkCommon):
    a: Name
    b: Name
    name: Name | None = None
    cost: int = Field(default=1, ge=1, le=1000, description="routing metric; equal cost -> ECMP")


class SiteSpec(_Strict):
    name: Name
    kind: Literal["aidc", "storage", "edge", "enterprise"]
    subnet: ipaddress.IPv4Network
    subnet6: ipaddress.IPv6Network | None = None
    hosts: Annotated[int, Field(ge=1, le=4096)] | list[Name | HostSpec] = Field(default_factory=list)
    switches: list[Name | SwitchSpec] = Field(default_factory=list)
    access: AccessSpec | None = None

    @field_validator("hosts", mode="after")
    @classmethod
    def _hosts(cls, v):
        return [HostSpec(name=h) if isinstance(h, str) else h for h in v] if isinstance(v, list) else v

    @field_validator("switches", mode="after")
    @classmethod
    def _switches(cls, v):
        return [SwitchSpec(name=s) if isinstance(s, str) else s for s in v]


class TopologySpec(_Strict):
    name: Name = "lab"
    description: str = ""
    group_index: float = Field(default=1.468, ge=1.0, le=2.0)
    infra_subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("10.255.0.0/24")
    infra_subnet6: ipaddress.IPv6Network = ipaddress.IPv6Network("fd00:ff::/64")
    ipv6: bool = True
    sites: list[SiteSpec] = Field(min_length=1)
    switches: list[Name | SwitchSpec] = Field(default_factory=list, description="switches outside any site (metro core)")
    links: list[LinkSpec] = Field(default_factory=list)

    @field_validator("switches", mode="after")
    @classmethod
    def _switches(cls, v):
        return [SwitchSpec(name=s) if isinstance(s, str) else s for s in v]
