"""The `metrolab` command: a thin layer over the library (metrolab.api and the packages under it).
One module per command group registers its parsers with `set_defaults(func=…)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import traceback

from rich.logging import RichHandler

from metrolab.harness import __version__
from metrolab.harness.errors import EXIT_INTERNAL, MetrolabError, SpecErrors
from metrolab.harness.lab.netns import Interrupted
from metrolab.harness.output import err_console

# each command's module (one per command group, with what it stands on): only the one a command line
# names is imported, so `metrolab doctor` or `rdma gbn` does not load the runner, pandas and the
# reports (17 s under TCG, where the vm backend runs the command again); --help loads them all
COMMANDS = {"main": "run", "run": "run", "measure": "run", "workload": "run", "report": "run", "scenarios": "run",
            "tasks": "tasks", "lab": "lab", "topology": "lab", "doctor": "lab", "testbed": "testbed", "vm": "vm", "rdma": "rdma",
            "collectives": "collectives", "sonic": "sonic", "bench": "bench"}
GROUPS = tuple(dict.fromkeys(COMMANDS.values()))  # the order `metrolab --help` lists them in


def command_of(argv: list[str]) -> str | None:
    """The command a command line names: its first word that is not a global option."""
    rest = iter(argv)
    for word in rest:
        if word == "--log-file":
            next(rest, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: its command's group only where it names a known command, else all."""
    ap = argparse.ArgumentParser(prog="metrolab", description="Distributed-training traffic emulator and "
                                 "RDMA test harness for metropolitan-area networks.")
    ap.add_argument("--version", action="version", version=f"metrolab {__version__}")
    ap.add_argument("-v", "--verbose", action="count", default=0,
                    help="log what metrolab does to stderr (-v: steps, -vv: every command and netlink change)")
    ap.add_argument("--log-file", metavar="PATH", help="also log everything (debug level) to this file")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    cmd = command_of(argv) if argv is not None else None
    for group in [COMMANDS[cmd]] if cmd in COMMANDS else GROUPS:
        importlib.import_module(f"metrolab.harness.cli.{group}").register(sub)
    _logging_flags_on_every_command(ap)
    return ap


def _logging_flags_on_every_command(parser: argparse.ArgumentParser) -> None:
    """-v and --log-file after the command too (`metrolab run x -v`); SUPPRESS keeps a value given
    before the command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any(isinstance(a, argparse._SubParsersAction) for a in child._actions):
                    child.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                                       help="log steps (-v) or everything (-vv) to stderr")
                    child.add_argument("--log-file", metavar="PATH", default=argparse.SUPPRESS,
                                       help="also log everything to this file")
                _logging_flags_on_every_command(child)


def setup_logging(verbose: int, log_file: str | None) -> None:
    """Warnings always; -v info, -vv debug; --log-file gets debug whatever -v says."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_metrolab", False):
            root.removeHandler(h)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handlers: list[logging.Handler] = [RichHandler(console=err_console, level=level, show_path=False,
                                                   rich_tracebacks=False, markup=False)]
    if log_file:
        fh = logging.FileHandler(log_file)
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
        handlers.append(fh)
    for h in handlers:
        h._metrolab = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(min(h.level for h in handlers))
    for noisy in ("pyroute2", "asyncio", "urllib3", "matplotlib", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    setup_logging(args.verbose, args.log_file)
    owner = os.getpid()

    def on_term(signum, _frame):  # unwind (tearing labs down) like Ctrl-C
        if os.getpid() != owner:  # a helper pyroute2 forked and now stops: die, undo nothing
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Interrupted(f"interrupted by signal {signum}")

    # restored on return: main() called in-process (tests) must not leave its handler behind
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return args.func(args)
    except SpecErrors as exc:
        for e in exc.errors:
            print(f"error: {e}", file=sys.stderr)
        return exc.exit_code
    except MetrolabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; the lab was taken down", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `metrolab … | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except BaseException as exc:
        if isinstance(exc, Interrupted):
            print(f"{exc}; the lab was taken down", file=sys.stderr)
            return 130
        if isinstance(exc, SystemExit):
            raise
        traceback.print_exc()
        print(f"metrolab: internal error ({type(exc).__name__}); exit {EXIT_INTERNAL}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["build_parser", "main"]
