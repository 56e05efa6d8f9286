"""Stdout callback for metrolab's playbooks: one JSON document when the playbook ends, with every
task's per-host outcome (and each loop item's) and the run's stats (ansible-core ships no JSON
callback); each task's name is appended to $METROLAB_ANSIBLE_TASKS as it starts (progress)."""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: metrolab_json
type: stdout
short_description: one JSON document per playbook run (for metrolab)
description: [Per task and host the outcome (changed, failed, skipped, unreachable, msg, stderr), then the stats.]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "metrolab_json"

    def __init__(self):
        super().__init__()
        self.plays: list[dict] = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.plays[-1]["tasks"].append({"task": {"name": task.get_name()}, "hosts": {}})
        progress = os.environ.get("METROLAB_ANSIBLE_TASKS")  # metrolab shows the running task
        if progress:
            with open(progress, "a") as f:
                f.write(task.get_name().replace("\n", " ") + "\n")

    def _record(self, result, **flags):
        r = result._result
        entry = {"changed": bool(r.get("changed")), "failed": False, "skipped": False, "unreachable": False,
                 "msg": r.get("msg"), "stderr": r.get("stderr"), "rc": r.get("rc"),
                 "stdout": (r.get("stdout") or "")[-65536:] or None}
        if "results" in r:  # a loop: each item's outcome
            entry["items"] = [{"item": x.get("item"), "changed": bool(x.get("changed")), "rc": x.get("rc"),
                               "skipped": bool(x.get("skipped")), "stdout": (x.get("stdout") or "")[-65536:] or None}
                              for x in r["results"] if isinstance(x, dict)]
        entry.update(flags)
        self.plays[-1]["tasks"][-1]["hosts"][result._host.get_name()] = entry

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=not ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed.keys())
        self._display.display(json.dumps({"plays": self.plays,
                                          "stats": {h: stats.summarize(h) for h in hosts}}))
