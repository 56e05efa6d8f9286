"""The run directory, written by one writer.

Every experiment (a scenario's sweep, a soak, task plays, the Go-Back-N sweep, the white paper's
claims) keeps what it measured here, as it measures it:
- JSON documents (meta.json, summary.json, ...) replaced whole (written aside, then renamed), so a
  reader never sees half of one;
- JSON-lines streams (results.jsonl, warmups.jsonl, events.jsonl, runs.jsonl, ...) appended a line
  at a time and fsynced before the experiment moves on, so a kill -9 loses at most the line being
  written. That line, cut short, is ignored on reading and sealed (a newline) before the next one is
  appended, so a resumed experiment's rows never merge into it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Record:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)

    def path(self, name: str) -> Path:
        return self.dir / name

    # -- documents ----------------------------------------------------------------------------------
    def write_json(self, name: str, doc: Any, *, indent: int | None = 2) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(name)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=indent, default=str))
        os.replace(tmp, path)
        return path

    def read_json(self, name: str, default: Any = None) -> Any:
        path = self.path(name)
        return json.loads(path.read_text()) if path.exists() else default

    # -- streams --------------------------------------------------------------------------------------
    def append(self, stream: str, row: dict) -> None:
        """One line, on disk before this returns."""
        self.dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, default=str) + "\n"
        with open(self.path(stream), "a+b") as f:
            if f.tell():
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")  # seal the line a kill cut short: it stays unreadable, not merged
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())

    def each(self, stream: str) -> Iterator[dict]:
        """The stream's rows, in order, read as they are asked for, without the lines kills cut short."""
        path = self.path(stream)
        if not path.exists():
            return
        with open(path) as f:
            for line in f:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue  # a kill's cut line (sealed by the next append) or a blank one

    def lines(self, stream: str) -> list[dict]:
        """The stream's rows, in order, without the lines kills cut short."""
        return list(self.each(stream))
