import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metrolab.harness.cli import build_parser

pytestmark = pytest.mark.unit


def _subparsers(parser):
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")


def test_every_subcommand_has_a_one_line_help():
    top = _subparsers(build_parser())
    helps = {a.dest: a.help for a in top._choices_actions}
    assert set(helps) == set(top.choices)
    for name, text in helps.items():
        assert text and "\n" not in text, name
    for name, sub in top.choices.items():
        inner = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        for action in inner:
            assert {a.dest for a in action._choices_actions} == set(action.choices), name


def test_every_commands_help_renders():
    """argparse %-formats help strings: a bare "95 % intervals" broke `metrolab bench --help`."""
    def walk(parser, path):
        assert parser.format_help(), path
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
    walk(build_parser(["--help"]), "metrolab")


def test_console_script_is_installed_and_lists_commands():
    exe = shutil.which("metrolab") or str(Path(sys.executable).parent / "metrolab")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("main", "run", "report", "scenarios", "collectives", "lab", "topology", "doctor", "bench"):
        assert f"    {cmd}" in out.stdout
    lab = subprocess.run([exe, "lab", "--help"], capture_output=True, text=True).stdout
    for cmd in ("up", "status", "down", "clean", "probe", "list"):
        assert f"    {cmd}" in lab


def test_every_result_command_takes_json():
    top = _subparsers(build_parser())
    for path in (["doctor"], ["topology"], ["main"], ["lab", "status"], ["lab", "probe"], ["lab", "list"],
                 ["lab", "clean"], ["lab", "up"], ["bench", "lab"], ["run"], ["report"], ["scenarios"],
                 ["collectives"], ["bench", "collectives"], ["bench", "harness"], ["bench", "rdma"], ["rdma", "bw"],
                 ["bench", "vm"], ["bench", "noise"],
                 ["workload"]):
        p = top.choices[path[0]]
        if len(path) == 2:
            p = _subparsers(p).choices[path[1]]
        assert any("--json" in a.option_strings for a in p._actions), path


@pytest.mark.parametrize("argv,where", [
    (["training-step", "-p", "layers=0"], "workloads[0].params.layers"),
    (["disaggregated-training", "--hosts", "a1,s1", "-p", "transport=tcp", "-p", "prefetch=0"],
     "workloads[0].params.prefetch"),
    (["pd-inference", "--hosts", "a1"], "workloads[0].hosts"),
    (["training-step", "--distance-km", "100,far"], "--distance-km"),
    (["no-such-kind"], "workloads[0].kind"),
])
def test_workload_alone_rejects_bad_input_before_building_anything(argv, where, tmp_path):
    out = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "workload", *argv, "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and where in out.stderr, out.stderr
    assert not (tmp_path / "r").exists()




def test_a_command_line_loads_only_its_commands_module():
    """COMMANDS names each group's commands exactly; `metrolab doctor` builds the lab group's parser
    and imports nothing of the runner, the reports or pandas (17 s under TCG with them)."""
    import argparse
    import importlib

    from metrolab.harness.cli import COMMANDS, GROUPS
    for group in GROUPS:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"metrolab.harness.cli.{group}").register(sub)
        assert set(sub.choices) == {c for c, g in COMMANDS.items() if g == group}, group
    code = ("import sys; from metrolab.harness.cli import build_parser; "
            "build_parser(['-v', '--log-file', 'x.log', 'doctor', '--json']); "
            "print(sorted(m for m in ('pandas', 'metrolab.harness.runner.run', 'metrolab.reports.build', "
            "'metrolab.harness.cli.run') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]", res.stdout
