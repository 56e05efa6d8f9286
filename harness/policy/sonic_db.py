"""SONiC's management plane as its own tools use it: the Redis databases behind `config` and `show`
(CONFIG_DB, 4: `TABLE|key` hashes; COUNTERS_DB, 2: the SAI counters under `COUNTERS:<oid>`, found
through `COUNTERS_PORT_NAME_MAP` and `COUNTERS_QUEUE_NAME_MAP`).

This file runs on the switch with the switch's own Python and the standard library only (SONiC
ships python3; nothing is installed there): `metrolab.harness.testbed.sonic_mgmt` sends it over ssh with one
operation and a JSON payload on stdin, and reads one JSON document back.

    python3 sonic_db.py OP [--redis unix:/var/run/redis/redis.sock | HOST:PORT]  < payload.json

OP: `snapshot` (the keys of some CONFIG_DB tables, as they are), `apply` (a config_db fragment:
each key's fields replaced, as `config load` does, in one MULTI/EXEC transaction), `restore` (those
tables back to a snapshot: keys added since deleted, the rest rewritten), `counters` (PFC frames per
priority, discards, and per queue packets, drops, ECN marks and watermark), `macs` (the ports'
MAC addresses, from the kernel's netdevs: what the lab's hosts address their frames to).
"""

from __future__ import annotations

import json
import socket
import sys

CONFIG_DB, COUNTERS_DB = 4, 2
DEFAULT_REDIS = ("unix:/var/run/redis/redis.sock", "127.0.0.1:6379")


class RedisError(Exception):
    pass


class Redis:
    """The RESP protocol over one connection: enough of a client for SONiC's databases."""

    def __init__(self, where: str):
        if where.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(where[5:])
        else:
            host, _, port = where.rpartition(":")
            self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RedisError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RedisError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line[:40]!r}")

    def pipeline(self, commands: list[list]) -> list:
        """Send every command, then read every reply (one round trip)."""
        out = bytearray()
        for cmd in commands:
            out += b"*%d\r\n" % len(cmd)
            for arg in cmd:
                b = str(arg).encode()
                out += b"$%d\r\n%s\r\n" % (len(b), b)
        self.sock.sendall(bytes(out))
        replies, error = [], None
        for _ in commands:
            try:
                replies.append(self._reply())
            except RedisError as exc:  # read the rest before raising: the connection stays in step
                error = error or exc
                replies.append(None)
        if error is not None:
            raise error
        return replies

    def call(self, *cmd):
        return self.pipeline([list(cmd)])[0]

    def keys(self, pattern: str) -> list[str]:
        """Every key matching `pattern` (SCAN: never blocks the switch's Redis as KEYS would)."""
        found, cursor = set(), "0"
        while True:
            cursor, batch = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            found.update(batch)
            if cursor == "0":
                return sorted(found)

    def hashes(self, keys: list[str]) -> dict[str, dict[str, str]]:
        replies = self.pipeline([["HGETALL", k] for k in keys]) if keys else []
        return {k: dict(zip(r[::2], r[1::2])) for k, r in zip(keys, replies) if r}


def _db(r: Redis, index: int) -> None:
    r.call("SELECT", index)


def snapshot(r: Redis, tables: list[str]) -> dict[str, dict[str, str]]:
    _db(r, CONFIG_DB)
    keys = [k for t in tables for k in r.keys(f"{t}|*")]
    return r.hashes(keys)


def _write(r: Redis, entries: dict[str, dict[str, str]], delete: list[str]) -> None:
    """One transaction: `delete` removed, each entry's hash replaced by its fields."""
    cmds: list[list] = [["MULTI"]]
    cmds += [["DEL", k] for k in delete]
    for key, fields in entries.items():
        cmds.append(["DEL", key])
        if fields:
            cmds.append(["HSET", key, *[x for kv in sorted(fields.items()) for x in kv]])
    cmds.append(["EXEC"])
    replies = r.pipeline(cmds)
    if replies[-1] is None:
        raise RedisError("the transaction was aborted")


def to_raw(fields: dict) -> dict[str, str]:
    """A config_db entry's fields as Redis holds them: a list is stored under `field@`, its items
    joined by commas (what SONiC's ConfigDBConnector writes and reads back as a list)."""
    return {(f"{f}@" if isinstance(v, list) else f): (",".join(map(str, v)) if isinstance(v, list) else str(v))
            for f, v in fields.items()}


def apply(r: Redis, config: dict[str, dict[str, dict]]) -> list[str]:
    """A config_db fragment (table -> key -> fields) into CONFIG_DB; the keys it wrote."""
    _db(r, CONFIG_DB)
    entries = {f"{table}|{key}": to_raw(fields) for table, keys in config.items() for key, fields in keys.items()}
    _write(r, entries, [])
    return sorted(entries)


def restore(r: Redis, tables: list[str], saved: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """`tables` back to `saved` (a snapshot of them): what was deleted and what rewritten."""
    now = snapshot(r, tables)
    added = sorted(set(now) - set(saved))
    changed = sorted(k for k, v in saved.items() if now.get(k) != v)
    _write(r, {k: saved[k] for k in changed}, added)
    return {"deleted": added, "rewritten": changed}


PORT_STATS = {"in_discards": "SAI_PORT_STAT_IF_IN_DISCARDS", "out_discards": "SAI_PORT_STAT_IF_OUT_DISCARDS"}
QUEUE_STATS = {"packets": "SAI_QUEUE_STAT_PACKETS", "dropped": "SAI_QUEUE_STAT_DROPPED_PACKETS",
               "ecn_marked": "SAI_QUEUE_STAT_WRED_ECN_MARKED_PACKETS",
               "watermark_bytes": "SAI_QUEUE_STAT_SHARED_WATERMARK_BYTES"}


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def counters(r: Redis, ports: list[str], queues: list[int], priorities: list[int]) -> dict:
    """Per port: PFC frames sent and received per priority (and pause microseconds where the ASIC
    counts them), discards; per port and queue: packets, drops, ECN-marked packets, the shared
    buffer watermark (the persistent one: the highest since it was last cleared). A counter the ASIC
    does not keep is None, a port or queue the switch does not have is missing."""
    _db(r, COUNTERS_DB)
    port_oids = dict(zip(*[iter(r.call("HGETALL", "COUNTERS_PORT_NAME_MAP") or [])] * 2))
    queue_oids = dict(zip(*[iter(r.call("HGETALL", "COUNTERS_QUEUE_NAME_MAP") or [])] * 2))
    want_ports = [p for p in ports if p in port_oids]
    stats = r.hashes([f"COUNTERS:{port_oids[p]}" for p in want_ports])
    out: dict = {"ports": {}, "queues": {}, "missing": sorted(set(ports) - set(port_oids))}
    for p in want_ports:
        s = stats.get(f"COUNTERS:{port_oids[p]}", {})
        row = {name: _int(s.get(field)) for name, field in PORT_STATS.items()}
        for pri in priorities:
            row[f"pfc{pri}_tx"] = _int(s.get(f"SAI_PORT_STAT_PFC_{pri}_TX_PKTS"))
            row[f"pfc{pri}_rx"] = _int(s.get(f"SAI_PORT_STAT_PFC_{pri}_RX_PKTS"))
            row[f"pfc{pri}_rx_pause_us"] = _int(s.get(f"SAI_PORT_STAT_PFC_{pri}_RX_PAUSE_DURATION_US"))
        out["ports"][p] = row
    names = [f"{p}:{q}" for p in want_ports for q in queues if f"{p}:{q}" in queue_oids]
    qstats = r.hashes([f"COUNTERS:{queue_oids[n]}" for n in names])
    marks = r.hashes([f"PERSISTENT_WATERMARKS:{queue_oids[n]}" for n in names])
    for n in names:
        s = qstats.get(f"COUNTERS:{queue_oids[n]}", {}) | marks.get(f"PERSISTENT_WATERMARKS:{queue_oids[n]}", {})
        out["queues"][n] = {name: _int(s.get(field)) for name, field in QUEUE_STATS.items()}
    return out


def macs(ports: list[str]) -> dict[str, str]:
    """Each port's MAC address (SONiC's front-panel ports are netdevs of the switch's kernel)."""
    out = {}
    for p in ports:
        try:
            with open(f"/sys/class/net/{p}/address") as f:
                out[p] = f.read().strip()
        except OSError:
            raise RedisError(f"no port {p} on this switch") from None
    return out


def connect(where: str | None) -> Redis:
    errors = []
    for w in ([where] if where else list(DEFAULT_REDIS)):
        try:
            return Redis(w)
        except OSError as exc:
            errors.append(f"{w}: {exc}")
    raise RedisError("no Redis: " + "; ".join(errors))


def main(argv: list[str]) -> int:
    op = argv[0] if argv else ""
    where = argv[argv.index("--redis") + 1] if "--redis" in argv else None
    payload = json.loads(sys.stdin.read() or "{}")
    if op == "macs":
        try:
            print(json.dumps({"result": macs(payload.get("ports", []))}))
        except RedisError as exc:
            print(json.dumps({"error": str(exc)}))
            return 1
        return 0
    try:
        r = connect(where)
        out: object
        try:
            if op == "snapshot":
                out = snapshot(r, payload["tables"])
            elif op == "apply":
                out = apply(r, payload["config"])
            elif op == "restore":
                out = restore(r, payload["tables"], payload["snapshot"])
            elif op == "counters":
                out = counters(r, payload.get("ports", []), payload.get("queues", []), payload.get("priorities", []))
            else:
                raise RedisError(f"no operation {op!r} (snapshot, apply, restore, counters, macs)")
        finally:
            r.close()
    except (RedisError, OSError, KeyError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"result": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
