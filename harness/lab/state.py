"""The lab's journal: what a lab created, written *before* each creation, so that
`metrolab lab clean` can remove the leftovers of a run that was killed at any point."""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from metrolab.harness import settings

PREFIX_HEAD = "ml"


def new_lab_id() -> str:
    return f"{PREFIX_HEAD}{secrets.token_hex(3)}"


@dataclass
class LabState:
    lab_id: str
    backend: str
    topology: str
    topology_digest: str
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)
    status: str = "building"  # building | up | down
    namespaces: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return settings.state_dir() / f"{self.lab_id}.json"

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, self.path)

    def record_namespace(self, name: str) -> None:
        self.namespaces.append(name)
        self.save()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> LabState:
        return cls(**json.loads(path.read_text()))


def all_states() -> list[LabState]:
    out = []
    for p in sorted(settings.state_dir().glob("*.json")):
        try:
            out.append(LabState.load(p))
        except (ValueError, TypeError, OSError):
            continue
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
