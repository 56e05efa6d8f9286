"""Printing results: rich tables for people, JSON for machines (every result command has --json)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from metrolab.harness import settings

# a pipe or CI log is not 80 columns: keep tables on one line per row there
_plain = bool(settings.get("METROLAB_PLAIN"))  # set when a guest's tty output ends up in a host pipe or file
console = Console(stderr=False, width=None if sys.stdout.isatty() else 180,
                  force_terminal=False if _plain else None)
err_console = Console(stderr=True, force_terminal=False if _plain else None)


def show_progress(json_mode: bool) -> bool:
    """Live progress only for a person at a real terminal (not --json, not a serial console)."""
    return (not json_mode and err_console.is_terminal and not err_console.is_dumb_terminal
            and not settings.get("METROLAB_NO_PROGRESS"))


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    t = Table(title=title, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:  # values are text, not markup: an interval "[inf, inf]" would read as a style tag
        t.add_row(*("" if v is None else escape(str(v)) for v in r))
    return t


def fmt(value: float | None, spec: str = ".3g", unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}{unit}"
