"""Access control between agent hosts (white paper §5.7): an nftables allow-list in each agent
host's namespace that accepts the named pairs and ports and drops everything else addressed to
it. Pure: renders the script; the lab loads it with `nft -f` inside the namespace (metrolab.harness.kernel.sh).

Every host an `allow` entry names is an agent host and gets the table; replies to connections it
opened itself pass (conntrack), as do loopback and IPv6 neighbour discovery (without them a host
could not even resolve its gateway).
"""

from __future__ import annotations

TABLE = "metrolab_acl"


def agent_hosts(allow) -> list[str]:
    out: list[str] = []
    for a in allow:
        for h in (a.a, a.b):
            if h not in out:
                out.append(h)
    return out


def script(me: str, allow, addresses: dict[str, list[str]]) -> str:
    """The nft script for host `me`: `allow` entries (a -> b on ports), `addresses` host -> its
    IPv4/IPv6 addresses."""
    rules = []
    for a in allow:
        if a.b != me:
            continue
        for src in addresses[a.a]:
            fam = "ip6" if ":" in src else "ip"
            if a.ports and a.proto != "any":
                ports = ", ".join(str(p) for p in a.ports)
                rules.append(f"{fam} saddr {src} {a.proto} dport {{ {ports} }} accept")
            elif a.ports:
                ports = ", ".join(str(p) for p in a.ports)
                rules.append(f"{fam} saddr {src} meta l4proto {{ tcp, udp }} th dport {{ {ports} }} accept")
            elif a.proto != "any":
                rules.append(f"{fam} saddr {src} meta l4proto {a.proto} accept")
            else:
                rules.append(f"{fam} saddr {src} accept")
    body = "\n".join(f"    {r}" for r in rules)
    return f"""table inet {TABLE} {{}}
delete table inet {TABLE}
table inet {TABLE} {{
  chain input {{
    type filter hook input priority 0; policy drop;
    iif "lo" accept
    ct state established,related accept
    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }} accept
{body}
  }}
}}
"""


def clear_script() -> str:
    return f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"
