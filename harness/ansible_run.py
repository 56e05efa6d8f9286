"""metrolab's playbooks run and read back: one outcome per host (the tasks that changed, or would
under --check, the first failure, unreachable), and each task's per-host result for callers that
read what a task printed (`metrolab testbed check`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from metrolab.harness.errors import LabError
from metrolab.harness.kernel import sh
from metrolab.harness.resources import playbook


@dataclass
class HostOutcome:
    host: str
    ok: bool
    changed: list[str] = field(default_factory=list)     # tasks that changed (or would, under --check)
    skipped: list[str] = field(default_factory=list)
    failed: str | None = None
    unreachable: bool = False
    diff: list[tuple] | None = None                       # sonic: None where the running config was not read

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "ok": self.ok, "changed": self.changed, "failed": self.failed,
                "unreachable": self.unreachable}


@dataclass
class PlaybookRun:
    doc: dict
    hosts: dict[str, HostOutcome]
    host_keys: list[dict] = field(default_factory=list)  # what provisioning pinned (metrolab.harness.testbed.hostkeys)

    def results(self, task: str) -> dict[str, dict]:
        """host -> its result of the task named `task` (the last one of that name)."""
        out: dict[str, dict] = {}
        for play in self.doc.get("plays", []):
            for t in play.get("tasks", []):
                if t["task"]["name"] == task:
                    out.update(t.get("hosts", {}))
        return out


def outcomes(doc: dict) -> dict[str, HostOutcome]:
    out: dict[str, HostOutcome] = {h: HostOutcome(h, ok=not (s.get("failures") or s.get("unreachable")),
                                                  unreachable=bool(s.get("unreachable")))
                                   for h, s in doc.get("stats", {}).items()}
    for play in doc.get("plays", []):
        for task in play.get("tasks", []):
            name = task["task"]["name"]
            for h, r in task.get("hosts", {}).items():
                o = out.setdefault(h, HostOutcome(h, ok=False))
                if r.get("failed") or r.get("unreachable"):
                    o.ok = False
                    o.unreachable = o.unreachable or bool(r.get("unreachable"))
                    o.failed = o.failed or f"{name}: {(r.get('msg') or r.get('stderr') or 'failed').strip()}"
                elif r.get("skipped") and "would have run" in (r.get("msg") or ""):
                    o.changed.append(name)  # a command under --check: it would run (and change)
                elif r.get("skipped"):
                    o.skipped.append(name)
                elif r.get("changed"):
                    o.changed.append(name)
    return out


def run_playbook(name: str, inventory: str, extra_vars: dict, *, check: bool = False, limit: str | None = None,
                 progress=None, timeout: float = 3600) -> PlaybookRun:
    """Run ansible/`name` and read its JSON back; a playbook that printed no JSON (a syntax error,
    a bad inventory) is a LabError with what ansible said."""
    res = sh.ansible_playbook(playbook(name), inventory, extra_vars, check=check, limit=limit, progress=progress,
                              timeout=timeout)
    try:
        doc = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise LabError(f"ansible-playbook {name} failed ({res.rc}): "
                       f"{(res.stderr or res.stdout).strip()[-2000:]}") from None
    return PlaybookRun(doc, outcomes(doc))
