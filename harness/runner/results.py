"""The results of a run, written as they are measured.

RUN_DIR/results.jsonl is the record: one line per measurement (a repetition of a workload at a
sweep point, or a failed point), appended and fsynced before the runner moves on, so a kill -9
loses at most the measurement in progress (a torn last line is ignored on reading).
results.parquet and results.csv are rewritten from it at most every TABLES_EVERY_S seconds while
the run goes on and once at its end (always whole; the report rebuilds them from the record). meta.json holds the run's metadata; every row carries it too.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from metrolab.harness import __version__
from metrolab.harness.errors import SpecError
from metrolab.harness.runner.record import Record
from metrolab.harness.scenario.criteria import parse_criterion
from metrolab.harness.scenario.spec import judging_fields
from metrolab.harness.scenario.verdict import Settings, Verdict, evaluate, summarize


def run_metadata(scenario, backend: str) -> dict:
    versions: dict[str, str | None] = {}
    for mod in ("torch", "ray", "pyroute2", "pandas"):  # from the installed metadata: importing torch
        try:                                               # takes 30 s in the TCG guest
            versions[mod] = version(mod)
        except PackageNotFoundError:
            versions[mod] = None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    # what is measured, not how long or how strictly it is judged (fields marked JUDGING): a resumed
    # run may take more blocks, or be judged under another limit
    scen = json.dumps(scenario.spec.model_dump(mode="json", exclude=judging_fields(type(scenario.spec))),
                      sort_keys=True)
    return {"scenario": scenario.name, "scenario_hash": hashlib.sha256(scen.encode()).hexdigest()[:16],
            "scenario_source": scenario.source, "quick": scenario.quick,
            "topology": scenario.topology.name, "topology_hash": scenario.topology.digest[:16],
            "backend": backend, "kernel": platform.release(), "scale": scenario.spec.scale,
            "git_rev": rev, "metrolab": __version__, **{f"{k}_version": v for k, v in versions.items()}}


TABLES_EVERY_S = 15.0


class ResultStore:
    """A scenario run's Record (metrolab.harness.runner.record): meta.json, results.jsonl (a row per
    measurement), blocks.jsonl (what each block ran beside), and the tables rebuilt from them."""

    def __init__(self, run_dir: str | Path):
        self._tables_at = 0.0
        self.record = Record(run_dir)
        self.dir = self.record.dir
        self.jsonl = self.record.path("results.jsonl")
        self.meta_path = self.record.path("meta.json")

    def start(self, meta: dict, resume: bool) -> dict:
        """Create the run dir (or check, when resuming, that it holds this same scenario)."""
        if resume:
            if not self.meta_path.exists():
                raise SpecError(str(self.dir), "", str(self.dir), "not a run directory (no meta.json); nothing to resume")
            old = self.record.read_json("meta.json")
            for key in ("scenario_hash", "topology_hash", "quick"):
                if old.get(key) != meta.get(key):
                    raise SpecError(str(self.dir), key, meta.get(key),
                                    f"this run directory holds a different run ({key} {old.get(key)!r}); "
                                    "resume with the same scenario and flags, or start a new run")
            meta = old | {"resumed": old.get("resumed", 0) + 1}
        elif self.has_rows():
            raise SpecError(str(self.dir), "", str(self.dir),
                            "already holds results; use --resume to continue it, or another directory")
        self.record.write_json("meta.json", meta)
        self.meta = meta
        return meta

    def update_meta(self, **fields) -> dict:
        """Add what the run learns as it goes (the headroom, the extra scale, blocks and budget)."""
        self.meta = {**self.meta, **fields}
        self.record.write_json("meta.json", self.meta)
        return self.meta

    def next_order(self) -> int:
        """The measurement-order index the next row takes (a resumed run continues the count)."""
        return 1 + max((int(r["order"]) for r in self.rows() if r.get("order") is not None), default=-1)

    def blocks(self) -> list[dict]:
        """What each block ran beside (the Engine's blocks.jsonl)."""
        return self.record.lines("blocks.jsonl")

    def has_rows(self) -> bool:
        """Whether a row was measured into the record yet (its first readable line: a line a kill cut
        short is no row)."""
        return next(self.record.each("results.jsonl"), None) is not None

    def rows(self) -> list[dict]:
        return self.record.lines("results.jsonl")

    def done(self) -> set[tuple[str, str, int]]:
        """(workload, point key, block) measured and recorded."""
        return {(r["workload"], r["point_key"], r["repetition"]) for r in self.rows() if r.get("status") == "ok"}

    def failures(self) -> dict[tuple[str, str], int]:
        """(workload, point key) -> failed repetitions recorded."""
        out: dict[tuple[str, str], int] = {}
        for r in self.rows():
            if r.get("status") != "ok":
                out[(r["workload"], r["point_key"])] = out.get((r["workload"], r["point_key"]), 0) + 1
        return out

    def judge(self, workload: str | None = None) -> Verdict:
        """The Judge: the verdict from the Record alone (meta.json, scenario.json, the rows, the
        blocks), whichever kernel measured them; `workload`: its rows only (a look mid-run)."""
        meta, scen = self.record.read_json("meta.json"), self.record.read_json("scenario.json")
        if meta is None or scen is None:
            raise SpecError(str(self.dir), "", str(self.dir), "not a metrolab run directory (meta.json, scenario.json)")
        swept = tuple((scen["spec"].get("sweep") or {}).get("params") or {})
        criteria = [parse_criterion(t, scen.get("metrics", []), swept) for t in scen["spec"].get("acceptance", [])]
        settings = Settings.from_dict(scen["spec"], meta)
        rows = [r for r in self.rows() if workload is None or r["workload"] == workload]
        return evaluate(summarize(rows, tuple(scen.get("metrics", [])), settings, self.blocks()), criteria, settings)

    def append(self, row: dict) -> None:
        self.record.append("results.jsonl", row)
        if time.monotonic() - self._tables_at >= TABLES_EVERY_S:
            self.write_tables()

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows())

    def write_tables(self) -> None:
        self._tables_at = time.monotonic()
        df = self.frame()
        for name, write in (("results.parquet", lambda p: df.to_parquet(p, index=False)),
                            ("results.csv", lambda p: df.to_csv(p, index=False))):
            tmp = self.dir / f".{name}.tmp"
            write(tmp)
            os.replace(tmp, self.dir / name)
