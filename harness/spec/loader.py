"""Load YAML specs, turning every parse or validation problem into located SpecErrors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from metrolab.harness.errors import SpecError, SpecErrors
from metrolab.harness.resources import topologies_dir
from metrolab.harness.spec.resolve import Topology, resolve
from metrolab.harness.spec.topology import TopologySpec

DEFAULT_TOPOLOGY = "default"


M = TypeVar("M", bound=BaseModel)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("int", "list[union[str,HostSpec]]", "str", "SwitchSpec", "HostSpec") or "[" in str(part):
            continue  # pydantic's union-branch tags are not field names
        else:
            out += f".{part}" if out else str(part)
    return out


def errors_from_pydantic(exc: ValidationError, file: str) -> SpecErrors:
    errors = []
    for e in exc.errors():
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        errors.append(SpecError(file, _loc(e["loc"]), e.get("input"), msg))
    # union failures repeat one problem per branch; keep one message per path
    unique: dict[str, SpecError] = {}
    for err in errors:
        unique.setdefault(err.path, err)
    return SpecErrors(list(unique.values()))


def read_yaml(path: str | Path) -> Any:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SpecError(str(p), "", str(p), f"cannot read file: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise SpecError(str(p), where, None, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None


def builtin_topology_path(name: str) -> Path:
    return topologies_dir() / f"{name}.yaml"


def find_file(ref: str, builtins: dict[str, Path], what: str) -> Path:
    """`ref` as a path, else the built-in of that name; an error naming the built-ins otherwise."""
    path = Path(ref)
    if path.exists():
        return path
    found = builtins.get(ref)
    if found is None:
        raise SpecError(ref, "", ref, f"no such file or built-in {what} (built-ins: {', '.join(builtins) or 'none'})")
    return found


def validate_mapping(model: type[M], data: Any, file: str, what: str) -> M:
    """`data` (a YAML document) as `model`, or located errors naming `file`; `what` says what the
    document must be when it is not even a mapping."""
    if not isinstance(data, dict):
        raise SpecError(file, "", data, what)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors_from_pydantic(exc, file) from None


def topology_from_data(data: Any, file: str) -> Topology:
    return resolve(validate_mapping(TopologySpec, data, file, "a topology is a mapping with sites and links"), file)


def load_topology(ref: str | Path | None = None) -> Topology:
    """A topology from a file path, or a built-in by name (default when None)."""
    ref = ref or DEFAULT_TOPOLOGY
    path = Path(ref)
    if not path.exists() and builtin_topology_path(str(ref)).exists():
        path = builtin_topology_path(str(ref))
    return topology_from_data(read_yaml(path), str(path))
