"""`metrolab sonic apply`: the rendered config_db pushed to SONiC switches through ansible
(ansible/sonic-apply.yml: `config load`, or a merged `config reload`), or only compared under
--check (ansible's dry run). Each switch's running config is read either way and diffed
against what metrolab renders."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness import sh
from harness.policy.sonic import diff
from harness.resources import playbook

PLAYBOOK = playbook("sonic-apply.yml")


@dataclass
class HostOutcome:
    host: str
    ok: bool
    changed: list[str] = field(default_factory=list)     # tasks that changed (or would, under --check)
    skipped: list[str] = field(default_factory=list)
    failed: str | None = None
    diff: list[tuple] | None = None                       # None: the running config could not be read


def running_tables(text: str, tables) -> dict:
    """The tables metrolab renders, out of a running config_db (`show runningconfiguration all`)."""
    db = json.loads(text)
    return {t: db.get(t, {}) for t in tables}


def push(db: dict, inventory: str, *, check: bool, reload: bool = False, limit: str | None = None,
         dest: str | None = None, extra: dict | None = None) -> list[HostOutcome]:
    with tempfile.TemporaryDirectory(prefix="metrolab-sonic-") as tmp:
        cfg = Path(tmp) / "config_db.json"
        cfg.write_text(json.dumps(db, indent=2, sort_keys=True))
        ev = {"config_file": str(cfg), "out_dir": tmp, "reload": reload, **(extra or {})}
        if dest:
            ev["dest"] = dest
        res = sh.ansible_playbook(PLAYBOOK, inventory, ev, check=check, limit=limit)
        try:
            doc = json.loads(res.stdout)
        except json.JSONDecodeError:
            from harness.errors import LabError
            raise LabError(f"ansible-playbook failed ({res.rc}): {(res.stderr or res.stdout).strip()[-2000:]}") from None
        out: dict[str, HostOutcome] = {h: HostOutcome(h, ok=not (s.get("failures") or s.get("unreachable")))
                                       for h, s in doc.get("stats", {}).items()}
        for play in doc.get("plays", []):
            for task in play.get("tasks", []):
                name = task["task"]["name"]
                for h, r in task.get("hosts", {}).items():
                    o = out.setdefault(h, HostOutcome(h, ok=False))
                    if r.get("failed") or r.get("unreachable"):
                        o.failed = o.failed or f"{name}: {r.get('msg') or r.get('stderr') or 'failed'}"
                    elif r.get("skipped"):
                        o.skipped.append(name)
                    elif r.get("changed"):
                        o.changed.append(name)
        for h, o in out.items():
            running = Path(tmp) / f"{h}-running.json"
            if running.exists():
                o.diff = diff(running_tables(running.read_text(), db), db)
        return list(out.values())
