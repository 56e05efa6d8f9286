"""Parsing of the rate, size, time and probability strings that specs use.

Pure functions: "10gbit" -> 10e9 bit/s, "1.5ms" -> 0.0015 s, "0.1%" -> 0.001.
"""

from __future__ import annotations

import re

_RATE_UNITS = {
    "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
    "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9,  # tc's convention: bps = bytes/s
}
_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def _split(text: str, units: dict[str, float], what: str) -> float:
    m = re.fullmatch(_NUM + r"\s*([a-zA-Zµ]*)", text.strip())
    if not m:
        raise ValueError(f"not a {what}: {text!r}")
    num, unit = float(m.group(1)), m.group(2).lower()
    if unit not in units:
        raise ValueError(f"unknown {what} unit {m.group(2)!r} in {text!r} (use one of {', '.join(units)})")
    return num * units[unit]


def parse_rate(value: str | float | int) -> float:
    """Bits per second from '10gbit', '100mbit', '1.5gbit' or a bare number (bit/s)."""
    if isinstance(value, (int, float)):
        return float(value)
    return _split(value, _RATE_UNITS, "rate")


def parse_size(value: str | int) -> int:
    """Bytes from '64k', '1MiB', '1500' (binary k/m/g like tc)."""
    if isinstance(value, int):
        return value
    return int(_split(value, {**_SIZE_UNITS, "": 1.0}, "size"))


def parse_time(value: str | float | int) -> float:
    """Seconds from '2.5ms', '100us', '1s'; a bare number is milliseconds."""
    if isinstance(value, (int, float)):
        return float(value) / 1e3
    return _split(value, _TIME_UNITS | {"": 1e-3}, "time")


def parse_probability(value: str | float | int) -> float:
    """A probability from 0.001 or '0.1%'."""
    if isinstance(value, str):
        text = value.strip()
        p = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    else:
        p = float(value)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability {value!r} is outside [0, 1]")
    return p


def format_rate(bps: float) -> str:
    """Human form of a rate, e.g. 1.00 Gbit/s."""
    for unit, scale in (("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} bit/s"
