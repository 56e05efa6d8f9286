"""`metrolab sonic apply`: the rendered config_db pushed to SONiC switches through ansible
(ansible/sonic-apply.yml: `config load`, or a merged `config reload`), or only compared under
--check (ansible's dry run). Each switch's running config is read either way and diffed
against what metrolab renders."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from metrolab.harness.ansible_run import HostOutcome, run_playbook
from metrolab.harness.policy.sonic import diff

PLAYBOOK = "sonic-apply.yml"


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
        out = run_playbook(PLAYBOOK, inventory, ev, check=check, limit=limit).hosts
        for h, o in out.items():
            running = Path(tmp) / f"{h}-running.json"
            if running.exists():
                o.diff = diff(running_tables(running.read_text(), db), db)
        return list(out.values())


__all__ = ["HostOutcome", "push", "running_tables"]
