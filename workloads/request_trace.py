"""Inference request traces in the layout of the public Azure LLM inference traces
(AzurePublicDataset: AzureLLMInferenceTrace_code.csv / _conv.csv): one request per row,

    TIMESTAMP,ContextTokens,GeneratedTokens
    2023-11-16 18:15:46.6805900,4808,10

TIMESTAMP is the arrival (an ISO date and time, or seconds as a number), ContextTokens the prompt's
length, GeneratedTokens the output's. A window of `count` rows from row `start` is replayed
open-loop: each request arrives at its offset from the window's first, divided by `speed`, whether
or not the ones before it are done. Read with the csv module, not pandas: the rank side reads it,
and pandas costs seconds (13 s under TCG) in every rank process.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from metrolab.harness.errors import SpecError

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass(frozen=True)
class Request:
    arrival_s: float     # from the window's first request, after `speed`
    prompt_tokens: int
    output_tokens: int


def _when(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return datetime.fromisoformat(v.strip()).timestamp()


def read_trace(path: str | Path, start: int = 0, count: int | None = None, speed: float = 1.0) -> list[Request]:
    """Rows start .. start + count - 1 of the trace (all from start without count); a missing file,
    column or a bad value is a SpecError naming the file, the row (1 = the first after the header)
    and the column."""
    p = Path(path)
    try:
        f = p.open(newline="")
    except OSError as exc:
        raise SpecError(str(p), "", str(p), f"cannot read the request trace: {exc.strerror}") from None
    with f:
        rows = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (rows.fieldnames or [])]
        if missing:
            raise SpecError(str(p), "header", rows.fieldnames, f"a request trace needs columns {', '.join(COLUMNS)} "
                            f"(missing: {', '.join(missing)})")
        raw: list[tuple[float, int, int]] = []
        for i, row in enumerate(rows, 1):
            if i <= start:
                continue
            if count is not None and len(raw) >= count:
                break
            col = COLUMNS[0]
            try:
                t = _when(row[col])
                col = COLUMNS[1]
                prompt = int(row[col])
                col = COLUMNS[2]
                out = int(row[col])
            except (ValueError, TypeError):
                raise SpecError(str(p), f"row {i}.{col}", row.get(col), "not a number" if col != COLUMNS[0]
                                else "not a time (ISO date and time, or seconds)") from None
            if prompt < 1 or out < 1:
                raise SpecError(str(p), f"row {i}", row, "token counts must be >= 1")
            raw.append((t, prompt, out))
    if count is not None and len(raw) < count:
        raise SpecError(str(p), "", start + len(raw), f"the trace has {start + len(raw)} rows; rows {start + 1} to "
                        f"{start + count} were asked for")
    if not raw:
        raise SpecError(str(p), "", start, "no requests in the trace from that row")
    t0, prev, reqs = raw[0][0], raw[0][0], []
    for i, (t, prompt, out) in enumerate(raw):
        if t < prev:
            raise SpecError(str(p), f"row {start + i + 1}.TIMESTAMP", t, "arrivals go back in time")
        prev = t
        reqs.append(Request((t - t0) / speed, prompt, out))
    return reqs


def arrival_rate(reqs: list[Request]) -> float:
    """A window's mean arrival rate (requests a second): its gaps over its span; 0 for one request
    or all at once."""
    span = reqs[-1].arrival_s - reqs[0].arrival_s if reqs else 0.0
    return (len(reqs) - 1) / span if span > 0 else 0.0


def synthetic(n: int = 64, seed: int = 7, rate: float = 2.0) -> str:
    """The trace shipped for the tests and the built-in scenario (scenarios/traces/azure-llm-synthetic.csv):
    Poisson arrivals at `rate` a second, log-normal prompt and output lengths (medians 180 and 16
    tokens) clipped so that every request fits the tiny model's 512 positions. Synthetic: the
    public traces' prompts run to thousands of tokens; use one of them for a real mix."""
    rng = random.Random(seed)
    t0, t = datetime(2023, 11, 16, 18, 0, 0), 0.0
    lines = [",".join(COLUMNS)]
    for _ in range(n):
        prompt = min(440, max(16, round(rng.lognormvariate(math.log(180), 0.7))))
        out = min(64, max(2, round(rng.lognormvariate(math.log(16), 0.6))))
        lines.append(f"{(t0 + timedelta(seconds=t)).strftime('%Y-%m-%d %H:%M:%S.%f')}0,{prompt},{out}")
        t += rng.expovariate(rate)
    return "\n".join(lines) + "\n"
