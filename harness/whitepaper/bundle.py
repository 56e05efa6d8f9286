"""A whitepaper run's results as an artifact: the bundle, and the docs page drawn from it.

`metrolab run whitepaper --out BUNDLE` measures each claim into BUNDLE/<claim>/ and writes beside
them claims.json (each claim's verdict, its measured points with intervals, the model beside them)
and bundle.json (the commit, when, --quick or not, each run's seed, the machine's facts). A figure in
docs/whitepaper.md comes from such a bundle through `metrolab report BUNDLE --docs PAGE [--store DIR]`,
never typed: the page names the bundle it was drawn from, `--store` keeps the bundle's record (rows,
metadata, claims; not the reports, logs or tables drawn from them) in the repository, and a test
draws the page again from the stored bundle and compares (tests/harness/whitepaper/test_bundle.py).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from metrolab.harness import capabilities

# what a run directory records (the rest is drawn from it: reports, tables, logs)
RECORD = ("meta.json", "scenario.json", "results.jsonl", "warmups.jsonl", "events.jsonl", "flows.jsonl",
          "rows.jsonl", "summary.json", "tasks.json", "runs.jsonl", "soak.jsonl", "soak.json")
BUNDLE_FILES = ("bundle.json", "claims.json", "whitepaper.md")


def git_rev(cwd: Path | None = None) -> tuple[str | None, bool]:
    """(commit, dirty) of the checkout metrolab runs from (None where it is not a git checkout)."""
    where = cwd or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=where).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, timeout=5, cwd=where).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, False
    return rev, dirty


def machine_facts() -> dict:
    """What the figures were measured on: processor, cores, memory, kernel, Python, and what the
    lab's backends have here (metrolab doctor's probe)."""
    cpu = None
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), None)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    caps = capabilities.probe().to_dict()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2 ** 30, 1), "kernel": platform.release(),
            "python": platform.python_version(),
            "capabilities": {k: v.get("present") for k, v in (caps.get("capabilities") or {}).items()}}


def start(out: Path, quick: bool, claims: list[str]) -> dict:
    """bundle.json at the start of a run (kept by a resumed one)."""
    path = out / "bundle.json"
    if path.exists():
        return json.loads(path.read_text())
    rev, dirty = git_rev()
    meta = {"name": out.name, "commit": rev, "dirty": dirty, "quick": quick, "claims": claims,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_facts()}
    path.write_text(json.dumps(meta, indent=1))
    return meta


def finish(out: Path, rows: list[dict]) -> dict:
    """bundle.json at the end: each claim's run and its seed, when it ended."""
    path = out / "bundle.json"
    meta = json.loads(path.read_text())
    runs = {}
    for r in rows:
        d = Path(r["run_dir"]) if r.get("run_dir") else None
        m = json.loads((d / "meta.json").read_text()) if d is not None and (d / "meta.json").exists() else {}
        runs[r["id"]] = {"dir": d.name if d else None, "seed": m.get("seed"), "scenario_hash": m.get("scenario_hash"),
                         "design": (m.get("design") or {}).get("describe") if isinstance(m.get("design"), dict)
                         else None, "guest": (m.get("guest") or {}).get("scheduling"),
                         "blocks": m.get("budget")}
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if meta.get("finished"):  # a resumed bundle: its claims judged again from their records
        meta["judged"] = {"commit": git_rev()[0], "at": now}
    meta |= {"finished": meta.get("finished") or now, "runs": runs}
    path.write_text(json.dumps(meta, indent=1, default=str))
    return meta


def store(bundle: Path, dest_root: Path) -> Path:
    """Copy the bundle's record (no reports, logs or tables) to dest_root/<bundle name>."""
    dest = dest_root / bundle.name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in BUNDLE_FILES:
        if (bundle / f).exists():
            shutil.copy2(bundle / f, dest / f)
    for sub in sorted(p for p in bundle.iterdir() if p.is_dir()):
        kept = [f for f in RECORD if (sub / f).exists()]
        if kept:
            (dest / sub.name).mkdir()
            for f in kept:
                shutil.copy2(sub / f, dest / sub.name / f)
    # the stored claims point at the stored runs
    claims = json.loads((dest / "claims.json").read_text())
    for c in claims["claims"]:
        if c.get("run_dir"):
            c["run_dir"] = str(Path(c["run_dir"]).name)
    (dest / "claims.json").write_text(json.dumps(claims, indent=1, default=str))
    return dest


INTRO = """\
`metrolab run whitepaper [--quick] [--claims ID,...] [--out BUNDLE] [--resume BUNDLE] [--json]` runs
each quantitative claim of the white paper on the scenario that tests it, each into its own
directory of a results bundle, and writes beside them `claims.json`, `bundle.json` (commit, seeds,
machine facts) and `whitepaper.md`. This page is drawn from one such bundle by
`metrolab report BUNDLE --docs docs/whitepaper.md --store docs/results`; every figure on it comes from
the bundle named below, none is typed.

A claim is judged on measurements only, at the points it is about: it **holds** when every result
of its criteria passes there, **does not hold** when one fails after Holm's correction over all of
them, and is **inconclusive** otherwise (a point the data cannot decide, or a value the claim names
left unmeasured: "< 5 % at 100-500 km" needs 100, 250 and 500 km, which a `--quick` sweep leaves
out). A run with failed points never makes a claim hold; a resumed bundle's claims are judged again
from their records.
Where metrolab has a model at full scale (Go-Back-N, convergence) it stands beside the measurement as
"model: ...", never as the verdict. Exit code: 0 when every claim holds, 1 when one does not or its
scenario could not run, 5 when none fails but one is undecided.
"""


CHAPTER_V = """\
The paper gives numbers for few of these; each built-in scenario's criteria are its MAN-wide promise
(< 5 % efficiency loss at 100–500 km) and the checks that keep the workload honest, and
`metrolab run NAME` measures it into a run directory whose report shows every point with its
interval and the model beside it: `failover` (§4.4 self-healing: cuts during training and PD
inference, the steps they overlap, re-planned paths), `a2a` (§5.7: a chain of agents over three WAN
hops, p50/p99 task latency, an intruder the allow-list stops), `cloud-edge` (§5.4: GPipe stages
across sites, bubble against GPipe's ideal), `inference-delivery` (§5.5: a model to every inference
site, unicast or relayed, with requests served meanwhile), `federated` (federated learning: rounds
under AES-GCM or TLS, the laggard's slice), `high-convergence` (the 32:1/64:1 ablation behind §4.3.3),
and `metrolab tasks task-scheduling` (§4.2.1-4.2.2: committed windows and elastic bandwidth). Their
figures belong on this page only through a bundle.
"""


def _fmt(x, spec: str = ".3g") -> str:
    return "—" if x is None else format(x, spec)


def docs_page(bundle: Path, shown_as: str | None = None) -> str:
    """docs/whitepaper.md from a bundle: the intro, where and on what it was measured, the claims."""
    meta = json.loads((bundle / "bundle.json").read_text())
    claims = json.loads((bundle / "claims.json").read_text())["claims"]
    mach = meta.get("machine") or {}
    caps = mach.get("capabilities") or {}
    lines = ["<!-- drawn by `metrolab report BUNDLE --docs` from the bundle named below: do not edit -->",
             "# The white paper's claims, measured (`metrolab run whitepaper`)", "", INTRO,
             f"## Bundle `{shown_as or bundle}`", "",
             f"- commit `{meta.get('commit')}`{' (with uncommitted changes)' if meta.get('dirty') else ''}; "
             f"{'`--quick`' if meta.get('quick') else 'full sweeps'}; {meta.get('started')} to {meta.get('finished')}"
             + (f"; judged again from its records at commit `{meta['judged']['commit']}` ({meta['judged']['at']})"
                if meta.get("judged") else ""),
             f"- machine: {mach.get('cpu')}, {mach.get('cores')} cores, {mach.get('memory_gib')} GiB, kernel "
             f"{mach.get('kernel')}, Python {mach.get('python')}; netem here: {caps.get('netem')}, rxe here: "
             f"{caps.get('rxe')} (what the host lacks runs in the guest kernel)", ""]
    runs = meta.get("runs") or {}
    lines += ["| claim | scenario | run | seed | design | guest |", "|---|---|---|---|---|---|"]
    for c in claims:
        r = runs.get(c["id"]) or {}
        lines.append(f"| `{c['id']}` | `{c['scenario']}` | `{r.get('dir')}` | {r.get('seed')} | "
                     f"{r.get('design') or '—'} | {r.get('guest') or '—'} |")
    lines += ["", "## Claims", "",
              "| § | claim | paper | measured (95 % interval) at the deciding point | full scale (model, not "
              "evidence) | verdict |", "|---|---|---|---|---|---|"]
    for c in claims:
        m = [x for x in c["measured"] if x["verdict"] != "context"]
        rank = {"fail": 0, "inconclusive": 1, "decides": 1, "pass": 2}
        worst = min(m, key=lambda x: rank.get(x["verdict"], 1)) if m else None
        meas = (f"{_fmt(worst['value'])} [{_fmt(worst['low'])}, {_fmt(worst['high'])}] at {worst['label']}"
                if worst else ("error: " + c["error"]) if c.get("error") else "—")
        lines.append(f"| {c['section']} | {c['claim']} | {c['paper']} | {meas} | "
                     f"{('model: ' + c['full_scale']) if c.get('full_scale') else '—'} | **{c['verdict']}** |")
    lines.append("")
    for c in claims:
        lines += [f"### {c['section']}: {c['claim']}", "",
                  f"Scenario `{c['scenario']}` ({c['tier']} tier): **{c['verdict']}** — {c['why']}.", ""]
        if c["measured"]:
            lines += ["| point | metric | measured | 95 % interval | lab model | verdict | why |",
                      "|---|---|---|---|---|---|---|"]
            for x in c["measured"]:
                why = str(x.get("why") or "").replace("|", "\\|")
                lines.append(f"| {x['label']} | {x['metric']} | {_fmt(x['value'])} | [{_fmt(x['low'])}, "
                             f"{_fmt(x['high'])}] | {_fmt(x.get('model'))} | {x['verdict']} | {why} |")
            lines.append("")
        if c.get("error"):
            lines += [f"Its scenario did not run: `{c['error']}`", ""]
        lines += [f"- the scale model preserves: {c['preserves']}", f"- it does not: {c['not_preserved']}", ""]
    lines += ["## Chapter V's other scenarios", "", CHAPTER_V]
    return "\n".join(lines)
