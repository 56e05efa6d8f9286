"""GRO on the WAN emulator's ports: `python3 gro.py off|on|show PORT...` sets it (where it differs)
and prints each port's state before, as JSON ({"eth1": true}).

A NIC's GRO merges the wire packets that reach a port into one buffer before the bridge hands it to
netem, which loses a buffer at a time: a link set to lose 1 % would lose a small share of its wire
packets. The same as `ethtool -K PORT gro off`, with the standard library only (the box may have
neither ethtool nor metrolab). A port enslaved to a bridge has LRO off already (the kernel's doing).
"""

from __future__ import annotations

import array
import fcntl
import json
import socket
import struct
import sys

SIOCETHTOOL = 0x8946
ETHTOOL_GGRO, ETHTOOL_SGRO = 0x2B, 0x2C  # the legacy one-feature calls, in every kernel since 2.6.29


def _ethtool(sock: socket.socket, port: str, cmd: int, value: int = 0) -> int:
    data = array.array("I", [cmd, value])  # struct ethtool_value
    ifreq = struct.pack("16sP16x", port.encode(), data.buffer_info()[0])  # name, then ifr_data
    try:
        fcntl.ioctl(sock, SIOCETHTOOL, ifreq)
    except OSError as e:
        sys.exit(f"gro.py: {port}: {e.strerror}")
    return data[1]


def main(action: str, ports: list[str]) -> dict[str, bool]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        before = {p: bool(_ethtool(sock, p, ETHTOOL_GGRO)) for p in ports}
        if action in ("on", "off"):
            for port in (p for p, on in before.items() if on != (action == "on")):
                _ethtool(sock, port, ETHTOOL_SGRO, int(action == "on"))
    return before


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("on", "off", "show"):
        sys.exit("usage: gro.py off|on|show PORT...")
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
