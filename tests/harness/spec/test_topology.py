"""Spec validation: every bad input names the file, the field path and the value."""

import copy
import subprocess
import sys

import pytest
import yaml

from metrolab.harness.errors import SpecError, SpecErrors
from metrolab.harness.spec.loader import load_topology, topology_from_data
from tests.support.labs import three_sites

pytestmark = pytest.mark.unit


def errors_of(data) -> list[SpecError]:
    with pytest.raises((SpecErrors, SpecError)) as exc:
        topology_from_data(data, "bad.yaml")
    e = exc.value
    return e.errors if isinstance(e, SpecErrors) else [e]


def test_default_topology_is_valid_and_has_two_parallel_wan_paths():
    topo = load_topology()
    assert {s.kind for s in topo.sites.values()} >= {"aidc", "enterprise"}
    assert sum(1 for s in topo.sites.values() if s.kind == "aidc") == 2
    for site in topo.sites:
        assert len([h for h in topo.hosts() if h.site == site]) >= 2
    ab = [lk for lk in topo.links if {lk.a, lk.b} == {"gw-a", "gw-b"}]
    assert len(ab) == 2 and all(lk.props.distance_km == 100 for lk in ab)


def mutate(fn):
    data = copy.deepcopy(three_sites())
    fn(data)
    return data


@pytest.mark.parametrize("mut,path,value,words", [
    (lambda d: d["sites"][0].update(colour="red"), "sites[0].colour", "red", "unknown field"),
    (lambda d: d["links"][0].update(rate="fast"), "links[0].rate", "fast", "not a rate"),
    (lambda d: d["links"][3].update(distance_km=-5), "links[3].distance_km", -5, "greater than or equal to 0"),
    (lambda d: d["links"][1].update(b="nowhere"), "links[1].b", "nowhere", "does not exist"),
    (lambda d: d["sites"][1].update(hosts=["a1", "b2"]), "sites[1].hosts[0]", "a1", "duplicate node name"),
    (lambda d: d["sites"][0].update(subnet="10.1.0.0/30", hosts=["a1", "a2", "a3"]), "sites[0].hosts", 3,
     "do not fit"),
    (lambda d: d["sites"][0].update(kind="datacenter"), "sites[0].kind", "datacenter", "Input should be"),
    (lambda d: d["links"][0].update(loss="150%"), "links[0].loss.p", "150%", "outside [0, 1]"),
    (lambda d: d["sites"][0].update(hosts=[{"name": "a1", "address": "10.7.0.1"}]), "sites[0].hosts[0].address",
     "10.7.0.1", "outside the site's subnet"),
    (lambda d: d["links"].append({"a": "gw-a", "b": "gw-c", "name": "wan-ab-1"}), "links[7].name", "wan-ab-1",
     "duplicate link name"),
    (lambda d: d["links"][3].update(delay="1ms", distance_km=10), "links[3].delay", 0.001, "not both"),
    (lambda d: d["sites"][0].update(subnet="10.1.0.0/33"), "sites[0].subnet", "10.1.0.0/33", "valid IPv4"),
])
def test_bad_input_is_located(mut, path, value, words):
    errs = errors_of(mutate(mut))
    match = [e for e in errs if e.path == path]
    assert match, f"no error at {path}: {[str(e) for e in errs]}"
    e = match[0]
    assert e.file == "bad.yaml"
    assert e.value == value
    assert words in str(e)
    assert str(e).startswith(f"bad.yaml: {path}: ")


def test_several_errors_are_reported_together():
    data = mutate(lambda d: (d["links"][0].update(rate="fast"), d["links"][1].update(a="ghost")))
    paths = {e.path for e in errors_of(data)}
    assert "links[0].rate" in paths


def test_cli_exits_2_naming_file_field_and_value(tmp_path):
    bad = tmp_path / "topo.yaml"
    data = three_sites()
    data["links"][2]["b"] = "gw-zz"
    bad.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "lab", "up", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{bad}: links[2].b: link refers to a node that does not exist (value: 'gw-zz')" in proc.stderr


def test_cli_rejects_unreadable_and_non_yaml(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("sites: [unclosed\n")
    proc = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "topology", str(p)], capture_output=True, text=True)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr and str(p) in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "metrolab.harness.cli", "topology", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "cannot read file" in proc.stderr
