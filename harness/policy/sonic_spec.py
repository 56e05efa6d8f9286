"""The file `metrolab sonic` reads: a switch's ports (speed, cable distance) and the lossless
RoCE class to give them; checked with located errors, then rendered by metrolab.harness.policy.sonic.

    switch: gw-a                       # a name for the report
    ports:
      - {name: Ethernet0, speed: 100g, distance_km: 100}   # a WAN port: headroom for 100 km
      - {name: Ethernet8, speed: 400g}                     # a local port: SONiC's 300 m
    lossless_priorities: [3, 4]
    dscp_to_tc: {3: 3, 4: 4, 26: 3, 46: 5, 48: 6}
    ecn: {min: 1m, max: 2m, drop_probability: 5}
    pfc_watchdog: {detection_ms: 200, restoration_ms: 200, action: drop}
    hash_fields: [SRC_IP, DST_IP, IP_PROTOCOL, L4_SRC_PORT, L4_DST_PORT]

Or the ports of a switch of a metrolab topology, one per link, with the links' distances (the lab
runs scaled rates, so the real port speed is given):

    switch: gw-a
    topology: default            # built-in name or file
    speed: 100g
    port_names: {wan-ab-1: Ethernet0, wan-ab-2: Ethernet4}   # optional; default Ethernet0, 4, 8, ...
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from metrolab.harness.errors import MetrolabError, SpecError, SpecErrors
from metrolab.harness.policy.sonic import LosslessPolicy, PortSpec, render, validate
from metrolab.harness.spec.loader import load_topology, read_yaml
from metrolab.netem.units import parse_size

HASH_FIELDS = ("SRC_IP", "DST_IP", "IP_PROTOCOL", "L4_SRC_PORT", "L4_DST_PORT", "IN_PORT", "ETHERTYPE",
               "SRC_MAC", "DST_MAC", "INNER_SRC_IP", "INNER_DST_IP")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Port(_Strict):
    name: str = Field(pattern=r"^Ethernet\d+$")
    speed: float = Field(description="Gb/s: 100, '100g', '400G'")
    distance_km: float = Field(default=0.3, ge=0, le=2000)

    @field_validator("speed", mode="before")
    @classmethod
    def _speed(cls, v):
        if isinstance(v, str):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[gG](?:bps|b/s)?\s*", v)
            if not m:
                raise ValueError("a port speed in Gb/s: 100, 100g, 400G")
            v = float(m.group(1))
        if float(v) not in (1, 10, 25, 40, 50, 100, 200, 400, 800):
            raise ValueError(f"{v} Gb/s is not an Ethernet port speed (1 ... 800)")
        return float(v)


class Ecn(_Strict):
    min: int = 1 << 20
    max: int = 2 << 20
    drop_probability: int = Field(default=5, ge=0, le=100)

    @field_validator("min", "max", mode="before")
    @classmethod
    def _bytes(cls, v):
        return parse_size(v) if isinstance(v, str) else int(v)


class Watchdog(_Strict):
    detection_ms: int = Field(default=200, ge=100, le=5000)
    restoration_ms: int = Field(default=200, ge=100, le=60000)
    action: Literal["drop", "forward", "alert"] = "drop"


class SonicSpec(_Strict):
    switch: str = "switch"
    ports: list[Port] = Field(min_length=1)
    topology: str | None = Field(default=None, description="the ports came from this topology's links")
    lossless_priorities: list[int] = Field(default_factory=lambda: [3, 4], min_length=1)
    dscp_to_tc: dict[int, int] = Field(default_factory=lambda: {3: 3, 4: 4, 26: 3, 46: 5, 48: 6})
    ecn: Ecn = Field(default_factory=Ecn)
    pfc_watchdog: Watchdog = Field(default_factory=Watchdog)
    hash_fields: list[str] = Field(default_factory=lambda: ["SRC_IP", "DST_IP", "IP_PROTOCOL", "L4_SRC_PORT",
                                                            "L4_DST_PORT"])
    mtu: int = Field(default=9100, ge=1500, le=9216)

    @field_validator("lossless_priorities")
    @classmethod
    def _pri(cls, v):
        bad = [p for p in v if not 0 <= p <= 7]
        if bad:
            raise ValueError(f"priority {bad[0]} is not 0..7")
        return v

    @field_validator("dscp_to_tc")
    @classmethod
    def _dscp(cls, v):
        for d, tc in v.items():
            if not 0 <= d <= 63:
                raise ValueError(f"DSCP {d} is not 0..63")
            if not 0 <= tc <= 7:
                raise ValueError(f"traffic class {tc} (DSCP {d}) is not 0..7")
        return v

    @field_validator("hash_fields")
    @classmethod
    def _hash(cls, v):
        bad = [f for f in v if f not in HASH_FIELDS]
        if bad:
            raise ValueError(f"{bad[0]} is not a SONiC ECMP hash field ({', '.join(HASH_FIELDS)})")
        return v

    def policy(self) -> LosslessPolicy:
        return LosslessPolicy(
            ports=[PortSpec(p.name, p.speed, p.distance_km) for p in self.ports],
            lossless_priorities=tuple(self.lossless_priorities), dscp_to_tc=dict(self.dscp_to_tc),
            ecn_min_bytes=self.ecn.min, ecn_max_bytes=self.ecn.max, ecn_drop_probability=self.ecn.drop_probability,
            pfcwd_detection_ms=self.pfc_watchdog.detection_ms, pfcwd_restoration_ms=self.pfc_watchdog.restoration_ms,
            pfcwd_action=self.pfc_watchdog.action,
            scheduler_weights={q: 100 // len(self.lossless_priorities) for q in self.lossless_priorities},
            hash_fields=tuple(self.hash_fields), mtu=self.mtu)


def load(path: str | Path) -> tuple[SonicSpec, dict]:
    """The spec and its rendered, validated config_db; SpecErrors naming file and field otherwise."""
    file = str(path)
    if not Path(path).is_file():
        raise SpecError(file, "", file, "no such file")
    data = read_yaml(path)
    if isinstance(data, dict) and "topology" in data:
        data = ports_from_topology(data, file)
    try:
        spec = SonicSpec.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise SpecErrors([SpecError(file, ".".join(str(x) for x in e["loc"]), e.get("input"),
                                    "unknown field" if e["type"] == "extra_forbidden"
                                    else e["msg"].removeprefix("Value error, ")) for e in exc.errors()]) from None
    names = [p.name for p in spec.ports]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise SpecError(file, f"ports[{i}].name", n, "a port appears twice")
    db = render(spec.policy())
    problems = validate(db)
    if problems:  # the spec rendered into an inconsistent config: say which table and field
        raise SpecErrors([SpecError(file, "rendered config_db", None, p) for p in problems])
    return spec, db


def ports_from_topology(data: dict, file: str) -> dict:
    """`ports` for the spec: one per link of `switch` in `topology`, its distance from the link."""
    data = dict(data)
    if "ports" in data:
        raise SpecError(file, "ports", None, "give either ports or topology (ports come from its links)")
    try:
        topo = load_topology(data["topology"])
    except MetrolabError as exc:
        raise SpecError(file, "topology", data["topology"], str(exc)) from None
    switch = data.get("switch")
    switches = sorted(n.name for n in topo.switches())
    if switch not in switches:
        raise SpecError(file, "switch", switch, f"not a switch of {topo.name} (switches: {', '.join(switches)})")
    if "speed" not in data:
        raise SpecError(file, "speed", None, "the ports' real speed (the lab's link rates are scaled): 100g, 400g")
    links = [lk for lk in topo.links if switch in (lk.a, lk.b)]
    names = data.pop("port_names", None) or {}
    unknown = sorted(set(names) - {lk.name for lk in links})
    if unknown:
        raise SpecError(file, f"port_names.{unknown[0]}", unknown[0], f"not a link of {switch} "
                        f"(links: {', '.join(lk.name for lk in links)})")
    speed = data.pop("speed")
    free = (f"Ethernet{4 * i}" for i in range(10_000) if f"Ethernet{4 * i}" not in names.values())
    data["ports"] = [{"name": names.get(lk.name) or next(free), "speed": speed,
                      "distance_km": lk.props.distance_km if lk.props.distance_km is not None else 0.3}
                     for lk in links]
    data["topology"] = str(data["topology"])
    return data
