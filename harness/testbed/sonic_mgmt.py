"""A SONiC switch's management plane from the controller: `harness/policy/sonic_db.py` run on the
switch over ssh (its host key pinned, its own python3, nothing installed there), one operation per
connection. What `config load` and `show` read and write, directly: metrolab's config_db fragment
applied and the switch's own tables put back exactly, and the ASIC's counters read for a run's rows.

The switch's Redis: `sonic_redis` in the machine's vars (`unix:/path` or `HOST:PORT`), by default
SONiC's own socket (/var/run/redis/redis.sock), then 127.0.0.1:6379.
"""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path
from typing import Any

from metrolab.harness.errors import LabError
from metrolab.harness.kernel import sh
from metrolab.harness.policy import sonic_db
from metrolab.harness.testbed.hostkeys import ssh_argv
from metrolab.harness.testbed.spec import Machine

# the tables metrolab's lossless class writes (metrolab.harness.policy.sonic.render): a snapshot of these
# before a run is what puts the switch back
TABLES = ("DSCP_TO_TC_MAP", "TC_TO_QUEUE_MAP", "TC_TO_PRIORITY_GROUP_MAP", "PORT_QOS_MAP", "BUFFER_PROFILE",
          "BUFFER_PG", "WRED_PROFILE", "QUEUE", "SCHEDULER", "PFC_WD", "SWITCH_HASH")
# the script, sent as an argument (stdin carries the payload): argv[0] dropped so its main sees OP
LOADER = "import base64,sys;src=base64.b64decode(sys.argv[1]);sys.argv=sys.argv[1:];exec(compile(src,'sonic_db','exec'))"


class SonicSwitch:
    def __init__(self, machine: Machine, known_hosts: Path, timeout: float = 60):
        self.m, self.known_hosts, self.timeout = machine, known_hosts, timeout
        self.redis = machine.vars.get("sonic_redis")

    def _argv(self, op: str) -> list[str]:
        script = base64.b64encode(Path(sonic_db.__file__).read_bytes()).decode()
        remote = [self.m.python, "-c", LOADER, script, op] + (["--redis", self.redis] if self.redis else [])
        return [*ssh_argv(self.m, self.known_hosts), shlex.join(remote)]

    def call(self, op: str, payload: dict[str, Any]) -> Any:
        res = sh.run(self._argv(op), input=json.dumps(payload), check=False, timeout=self.timeout)
        try:
            doc = json.loads(res.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            raise LabError(f"SONiC switch {self.m.name} ({self.m.mgmt}): {op} failed ({res.rc}): "
                           f"{res.stderr.strip()[-500:] or res.stdout.strip()[-500:]}") from None
        if "error" in doc:
            raise LabError(f"SONiC switch {self.m.name} ({self.m.mgmt}): {op}: {doc['error']}")
        return doc["result"]

    def snapshot(self, tables=TABLES) -> dict[str, dict[str, str]]:
        """CONFIG_DB's `tables` as they are: `TABLE|key` -> fields."""
        return self.call("snapshot", {"tables": list(tables)})

    def apply(self, config: dict) -> list[str]:
        """A config_db fragment (table -> key -> fields), each key replaced, in one transaction."""
        return self.call("apply", {"config": config})

    def restore(self, saved: dict[str, dict[str, str]], tables=TABLES) -> dict[str, list[str]]:
        """`tables` back to `saved`: keys added since deleted, changed ones rewritten."""
        return self.call("restore", {"tables": list(tables), "snapshot": saved})

    def macs(self, ports: list[str]) -> dict[str, str]:
        """The ports' MAC addresses (a port the switch does not have: an error naming it)."""
        return self.call("macs", {"ports": ports})

    def counters(self, ports: list[str], queues: list[int], priorities: list[int]) -> dict:
        return self.call("counters", {"ports": ports, "queues": queues, "priorities": priorities})
