"""A SONiC switch's Redis as the tests read and write it (its own socket, not metrolab's ssh)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from metrolab.harness.policy import sonic_db


@contextmanager
def redis(where: str | Path, db: int) -> Iterator[sonic_db.Redis]:
    """A connection to `where` (`unix:PATH`, or a socket's path) with database `db` selected."""
    r = sonic_db.Redis(where if isinstance(where, str) else f"unix:{where}")
    try:
        r.call("SELECT", db)
        yield r
    finally:
        r.close()


def hset(r: sonic_db.Redis, key: str, fields: dict[str, str]) -> None:
    r.call("HSET", key, *[x for kv in fields.items() for x in kv])


def config_db(where: str | Path) -> dict[str, dict[str, str]]:
    """Every key of CONFIG_DB."""
    with redis(where, sonic_db.CONFIG_DB) as r:
        return r.hashes(r.keys("*"))
