"""A recorded training job, read for replay: PyTorch Execution Traces (ExecutionTraceObserver, the
format MLCommons Chakra standardizes) with the Kineto trace torch.profiler wrote beside them, one
pair per rank, in one folder:

    et_0.json  kineto_0.json  et_1.json  kineto_1.json ...

(record both with `torch.profiler.profile(execution_trace_observer=..., schedule=...,
on_trace_ready=...)` and `prof.step()` each step: docs/examples/train_ddp.py --trace DIR does).
An ET the Chakra linker (`chakra_trace_link`) already merged with its Kineto trace carries each
node's `ts` and `inclusive_dur` itself and needs no kineto file.

Each rank's profiled steps (`ProfilerStep#N`) become a list of actions on its main thread:

- `("issue", j)`: collective j starts (c10d's op: all_reduce, all_gather, reduce_scatter,
  broadcast, all_to_all, barrier; its size the larger of its input and output buffers, nccl-tests'
  `size`), asynchronously, as DDP and FSDP issue them;
- `("wait", j)`: the main thread needs j's result: at the first later operation that touches j's
  buffer (its storage id in the ET), or at the step's end;
- `("compute", s)`: the main thread's time between those, less the time it was blocked waiting:
  the idle gap before a wait, up to the collective's own end where the trace has it (gloo's
  `gloo:*` / `nccl:*` events on their own threads), the whole gap where it does not.

What the trace says the network cost is not in `compute`, so the replay pays it again at each
distance. The ET's process groups must be the world group alone: a trace with sub-groups is
refused (which ranks each collective spans is not in a gloo ET). Standard library only: the
controller validates a scenario with it and every rank process reads its own rank's files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metrolab.harness.errors import SpecError

# c10d's dispatcher ops -> the collective replayed; the barrier moves no payload
C10D_OPS = {"allreduce_": "all_reduce", "allreduce_coalesced_": "all_reduce", "broadcast_": "broadcast",
            "allgather_": "all_gather", "_allgather_base_": "all_gather", "allgather_into_tensor_coalesced_": "all_gather",
            "reduce_scatter_": "reduce_scatter", "_reduce_scatter_base_": "reduce_scatter",
            "reduce_scatter_tensor_coalesced_": "reduce_scatter", "alltoall_": "all_to_all",
            "alltoall_base_": "all_to_all", "barrier": "barrier"}
DTYPES = {"float": "float32", "double": "float64", "c10::Half": "float16", "c10::BFloat16": "bfloat16",
          "long int": "int64", "int": "int32", "unsigned char": "uint8", "signed char": "int8", "bool": "bool"}
EXEC_PREFIXES = ("gloo:", "nccl:")  # a collective's execution, on the backend's own thread
STEP = re.compile(r"ProfilerStep#(\d+)$")
TENSOR_FIELDS = 6  # an ET tensor value: [tensor id, storage id, offset, elements, element size, device]


@dataclass(frozen=True)
class Coll:
    op: str       # metrolab.workloads.colls' name
    nbytes: int   # nccl-tests' size: the larger of the rank's input and output buffers
    dtype: str    # torch's name: float32, bfloat16, ...


@dataclass(frozen=True)
class Step:
    recorded_s: float                 # the step's wall time in the trace
    actions: tuple[tuple, ...]        # ("compute", s) | ("issue", j) | ("wait", j), in order
    colls: tuple[Coll, ...]           # j -> the collective

    @property
    def compute_s(self) -> float:
        return sum(a[1] for a in self.actions if a[0] == "compute")

    @property
    def comm_bytes(self) -> int:
        return sum(c.nbytes for c in self.colls)


@dataclass(frozen=True)
class RankTrace:
    rank: int
    world: int
    steps: tuple[Step, ...]
    source: str


@dataclass(frozen=True)
class _Ev:
    name: str
    ts: float   # µs
    dur: float  # µs
    tid: Any

    @property
    def end(self) -> float:
        return self.ts + self.dur


def _load(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise SpecError(str(path), "", str(path), f"cannot read the {what}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(str(path), f"line {exc.lineno}", exc.msg, f"the {what} is not JSON") from None


def _attrs(node: dict) -> dict[str, Any]:
    return {a.get("name"): a.get("value") for a in node.get("attrs") or []}


def _tensors(value: Any) -> list[list]:
    """The ET tensor values in an argument (a tensor, or nested lists of them)."""
    if (isinstance(value, list) and len(value) == TENSOR_FIELDS and isinstance(value[5], str)
            and all(isinstance(x, int) for x in value[:5])):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _tensors(v)]
    return []


def _coll_of(node: dict, file: str) -> tuple[Coll, set[int]] | None:
    """The collective a c10d node runs and the storages it touches (None: not a collective)."""
    name = node.get("name", "")
    if not name.startswith("c10d::"):
        return None
    op = C10D_OPS.get(name.removeprefix("c10d::"))
    if op is None:
        if name.removeprefix("c10d::") in ("send", "recv_", "recv_any_source_"):
            raise SpecError(file, f"nodes[id={node.get('id')}]", name, "point-to-point operations (pipeline "
                            "traces) are not replayed yet: only collectives")
        return None
    ins, outs = node.get("inputs") or {}, node.get("outputs") or {}
    args = (ins.get("values") or [])[:2] + (outs.get("values") or [])[:1]
    tensors = [_tensors(a) for a in args]
    sizes = [sum(t[3] * t[4] for t in ts) for ts in tensors]
    types = [t for t in ins.get("types") or [] if "Tensor(" in t]
    elem = re.search(r"Tensor\(([^)]*)\)", types[0]).group(1) if types else "float"  # type: ignore[union-attr]
    storages = {t[1] for ts in tensors for t in ts}
    return Coll(op, 0 if op == "barrier" else max(sizes, default=0), DTYPES.get(elem, "float32")), storages


def _groups(nodes: list[dict], file: str) -> int:
    """The world size the ET's process groups say; sub-groups are refused (see the module doc)."""
    world = 0
    for n in nodes:
        if n.get("name") != "## process_group:init ##":
            continue
        try:
            pgs = json.loads((n["inputs"]["values"] or ["[]"])[0])
        except (KeyError, TypeError, json.JSONDecodeError):
            continue
        sizes = {int(pg.get("group_size") or len(pg.get("ranks") or [])) for pg in pgs}
        if len(pgs) > 1:
            raise SpecError(file, "## process_group:init ##", [pg.get("pg_desc") for pg in pgs],
                            f"the trace has {len(pgs)} process groups: replaying sub-group collectives is not "
                            "supported (a gloo ET does not say which group each collective used)")
        world = max(sizes | {world})
    return world


def _timing(nodes: list[dict], kineto: dict | None, file: str) -> tuple[dict[int, _Ev], list[_Ev], Any]:
    """ET node id -> its timed event, the collectives' executions, and the main thread's id."""
    by_id: dict[int, _Ev] = {}
    execs: list[_Ev] = []
    if kineto is None:  # a Chakra-linked ET: times on the nodes; the main thread is the ET's tid 1
        for n in nodes:
            if "ts" in n and n.get("inclusive_dur") is not None:
                ev = _Ev(n["name"], float(n["ts"]), float(n["inclusive_dur"]), _attrs(n).get("tid"))
                if ev.name.startswith(EXEC_PREFIXES):
                    execs.append(_Ev(ev.name, ev.ts, ev.dur, "backend"))  # the ET files them under tid 1
                else:
                    by_id[n["id"]] = ev
        main = 1
    else:
        rf = {_attrs(n).get("rf_id"): n["id"] for n in nodes}
        main = None
        for e in kineto.get("traceEvents") or []:
            if e.get("ph") != "X" or e.get("cat") not in ("cpu_op", "user_annotation"):
                continue
            ev = _Ev(e.get("name", ""), float(e["ts"]), float(e.get("dur", 0)), e.get("tid"))
            if ev.name.startswith(EXEC_PREFIXES):
                execs.append(ev)
                continue
            if STEP.match(ev.name):
                main = ev.tid
            nid = rf.get((e.get("args") or {}).get("Record function id"))
            if nid is not None:
                by_id[nid] = ev
    if not by_id:
        raise SpecError(file, "", "no durations", "the trace has no timings: record it with torch.profiler "
                        "(Kineto) beside the ET and put kineto_RANK.json next to it, or give chakra_trace_link's output")
    execs = [e for e in execs if e.tid != main] if main is not None else execs
    return by_id, sorted(execs, key=lambda e: e.ts), main


def _busy(events: list[_Ev]) -> list[tuple[float, float]]:
    """When the main thread was running an operator: the union of its innermost operators'
    intervals (an enclosing one, a module's forward, also spans the time it sat blocked inside)."""
    events = sorted(events, key=lambda e: e.ts)
    leaves = [e for e, nxt in zip(events, [*events[1:], None]) if nxt is None or nxt.ts >= e.end]
    out: list[list[float]] = []
    for e in leaves:
        if out and e.ts <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e.end)
        else:
            out.append([e.ts, e.end])
    return [(a, b) for a, b in out]


def _idle_before(busy: list[tuple[float, float]], t: float, since: float) -> float:
    """Where the main thread's idle gap that ends at `t` began (no earlier than `since`)."""
    start = since
    for a, b in busy:
        if b <= t and a < t:
            start = max(start, b)
    return min(start, t)


def _gaps(busy: list[tuple[float, float]], step: _Ev) -> list[tuple[float, float]]:
    """The main thread's idle gaps within the step."""
    edges = [step.ts, *(x for ab in busy for x in ab), step.end]
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b > a]


def _wait(issue: _Ev, storages: set[int], execution: _Ev | None, users: list[tuple[float, set[int]]],
          busy: list[tuple[float, float]], step: _Ev) -> tuple[float, float]:
    """(where the main thread waited for a collective, when it went on). The wait is no later than
    the first use of the collective's result after its call (else the step's end). With the
    collective's execution on the backend's thread known: the last idle gap before that use that
    overlaps the execution (the thread sat there until the result came; the execution's recorded
    end only bounds that, as the backend's thread may close its record after the waiter woke),
    over at the gap's end or the execution's, whichever came first; none (the thread was busy
    throughout): no block, the wait at the first use. Without: the idle gap before the first use."""
    use = next((t for t, used in users if t >= issue.end and used & storages), step.end)
    if execution is not None:
        # the call's own leaves end before it returns: a gap may start inside it
        over = [(max(g0, issue.end), g1) for g0, g1 in _gaps(busy, step)
                if issue.ts <= g0 < execution.end and g1 > max(execution.ts, issue.end) and g1 <= use]
        if not over:
            return use, use
        g0, g1 = over[-1]
        return g0, min(g1, execution.end)
    return _idle_before(busy, use, issue.end), use


def _step_actions(step: _Ev, colls: list[tuple[_Ev, Coll, set[int], _Ev | None]],
                  users: list[tuple[float, set[int]]], busy: list[tuple[float, float]]) -> Step:
    """One step's actions from its collectives (the call, what, the storages, its execution), the
    main thread's operations (start, storages they touch) and its busy intervals."""
    marks: list[tuple[float, int, int, float]] = []  # (time, 0 issue | 1 wait, j, when it went on)
    for j, (issue, _c, storages, execution) in enumerate(colls):
        marks.append((issue.ts, 0, j, issue.ts))
        at, resume = _wait(issue, storages, execution, users, busy, step)
        marks.append((at, 1, j, resume))
    marks.sort()
    actions: list[tuple] = []
    cursor = step.ts
    for t, kind, j, resume in marks:
        if t > cursor:
            actions.append(("compute", (t - cursor) / 1e6))
        cursor = max(cursor, t)
        actions.append(("issue" if kind == 0 else "wait", j))
        # blocked until the collective ended; what follows (the backend's wake-up, unprofiled work
        # such as DDP's reducer) is the step's own time
        cursor = max(cursor, resume)
    if step.end > cursor:
        actions.append(("compute", (step.end - cursor) / 1e6))
    return Step(step.dur / 1e6, tuple(actions), tuple(c for _i, c, _s, _x in colls))


def read_rank(et_path: Path, kineto_path: Path | None, rank: int) -> RankTrace:
    file = str(et_path)
    doc = _load(et_path, "execution trace")
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list):
        raise SpecError(file, "nodes", type(doc).__name__, "not a PyTorch Execution Trace (no nodes list)")
    world = _groups(nodes, file)
    kineto = _load(kineto_path, "Kineto trace") if kineto_path is not None else None
    by_id, execs, main = _timing(nodes, kineto, file)
    steps = sorted((ev for nid, ev in by_id.items() if STEP.match(ev.name)), key=lambda e: e.ts)
    if not steps:
        raise SpecError(file, "", "no ProfilerStep#", "the trace marks no steps: call prof.step() after each "
                        "training step while recording")
    main_tid = main if main is not None else steps[0].tid
    timed = [(nid, ev) for nid, ev in by_id.items() if ev.tid == main_tid and not STEP.match(ev.name)]
    nodes_by_id = {n["id"]: n for n in nodes}
    out: list[Step] = []
    exec_iter = iter(execs)
    for st in steps:
        inside = sorted(((nid, ev) for nid, ev in timed if st.ts <= ev.ts < st.end), key=lambda x: x[1].ts)
        colls: list[tuple[_Ev, Coll, set[int], _Ev | None]] = []
        users: list[tuple[float, set[int]]] = []
        for nid, ev in inside:
            node = nodes_by_id[nid]
            found = _coll_of(node, file)
            if found is not None:
                # a backend runs a group's collectives in issue order: the next execution is this one's
                x = next((e for e in exec_iter if e.ts >= ev.ts - 1), None) if execs else None
                colls.append((ev, found[0], found[1], x))
                continue
            args = ((node.get("inputs") or {}).get("values") or []) + ((node.get("outputs") or {}).get("values") or [])
            users.append((ev.ts, {t[1] for t in _tensors(args)}))
        busy = _busy([ev for _nid, ev in inside])
        out.append(_step_actions(st, colls, users, busy))
    return RankTrace(rank, world, tuple(out), file)


def rank_files(folder: Path, rank: int) -> tuple[Path, Path | None]:
    et, kin = folder / f"et_{rank}.json", folder / f"kineto_{rank}.json"
    if not et.exists():
        raise SpecError(str(folder), "", et.name, f"no execution trace for rank {rank} (expected {et})")
    return et, kin if kin.exists() else None


def trace_world(folder: str | Path) -> int:
    """How many ranks recorded the trace in `folder` (et_0.json, et_1.json, ...)."""
    p = Path(folder)
    if not p.is_dir():
        raise SpecError(str(p), "", str(p), "not a folder of per-rank execution traces (et_RANK.json)")
    ranks = sorted(int(m.group(1)) for f in p.iterdir() if (m := re.fullmatch(r"et_(\d+)\.json", f.name)))
    if not ranks:
        raise SpecError(str(p), "", "no et_RANK.json", "no execution traces in the folder")
    if ranks != list(range(len(ranks))):
        raise SpecError(str(p), "", ranks, "the ranks' traces are not numbered 0..N-1")
    return len(ranks)


def read_trace(folder: str | Path, rank: int) -> RankTrace:
    return read_rank(*rank_files(Path(folder), rank), rank)
