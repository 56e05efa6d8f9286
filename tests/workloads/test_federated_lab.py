"""Federated learning on the host kernel (netns lab, HTB slices, Ray, gloo for the group): the
parameters are unreadable on the wire once encrypted, the rounds aggregate what the participants
sent, and a strict slice for the lagging participant's DSCP hands it the model first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from metrolab.harness.kernel import sh
from metrolab.harness.rdma.capture import Capture
from metrolab.harness.runner.run import run_scenario
from metrolab.harness.scenario.spec import scenario_from_data
from tests.support.labs import fl_sites, wan_pair

pytestmark = pytest.mark.requires("netns")

MARKER = b"metrolab-plaintext-parameters-0123456789"

PEER = textwrap.dedent("""
    import socket, sys
    from metrolab.workloads.secure_link import SecureLink, self_signed, tls_client_context, tls_server_context
    role, enc, addr = sys.argv[1:4]
    if role == "server":
        srv = socket.create_server((addr, 47300))
        s, _ = srv.accept()
        if enc == "tls":
            cert, key = self_signed(addr)
            open(sys.argv[4], "wb").write(cert)
            s = tls_server_context(cert, key).wrap_socket(s, server_side=True)
        link = SecureLink(s, enc)
        link.send(link.recv())  # echo
    else:
        import time
        for _ in range(100):
            try:
                s = socket.create_connection((addr, 47300), timeout=30)
                break
            except OSError:
                time.sleep(0.1)
        if enc == "tls":
            for _ in range(100):
                try:
                    cert = open(sys.argv[4], "rb").read()
                    if cert:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            s = tls_client_context(cert).wrap_socket(s, server_hostname=addr)
        link = SecureLink(s, enc, initiator=True, record=4096)
        msg = bytes(range(256)) * 64 + sys.argv[5].encode() * 50
        link.send(msg)
        assert link.recv() == msg
        print("ok")
""")


@pytest.mark.parametrize("enc", ["none", "aes-gcm", "tls"])
def test_encryption_hides_the_parameters_on_the_wire(enc, tmp_path, lab_factory):
    lab = lab_factory(wan_pair(kind_b="edge", rate="200mbit"))
    a1 = str(lab.topology.nodes["a1"].address)
    cert = tmp_path / "cert.pem"
    cert.touch()
    args = [enc, a1, str(cert), MARKER.decode()]
    with Capture(lab.ns("b1"), lab.plan.ifaces_of("b1")[0].ifname) as cap:
        srv = sh.popen([sys.executable, "-c", PEER, "server", *args], netns=lab.ns("a1"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cli = sh.popen([sys.executable, "-c", PEER, "client", *args], netns=lab.ns("b1"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = cli.communicate(timeout=120)
        _, serr = srv.communicate(timeout=60)
    assert cli.returncode == 0 and srv.returncode == 0 and out.strip() == "ok", (err[-1500:], serr[-1500:])
    wire = b"".join(frame for _, _, frame in cap.frames)
    assert len(wire) > 2 * (256 * 64 + 50 * len(MARKER))  # the message went and came back
    # without encryption the parameters and the marker cross as they are; sealed, neither does
    assert (MARKER in wire) == (enc == "none") and (bytes(range(64, 128)) in wire) == (enc == "none")


def test_rounds_aggregate_and_a_strict_slice_hands_the_laggard_the_model_first(tmp_path):
    data = {"name": "fl", "topology": fl_sites(),
            "policies": [{"name": "lag-priority", "links": ["a1-gw-a"],
                          "slices": [{"name": "laggard", "dscp": 34, "guaranteed": "90mbit", "strict": True}]}],
            "workloads": [{"kind": "federated", "hosts": ["a1", "a2", "b1", "c1"],
                           "params": {"update_size": 2_000_000_000, "rounds": 2, "local_s": 0.3, "lagging": ["c1"],
                                      "lag_slowdown": 1.5, "lag_dscp": 34}}],
            "sweep": {"links": ["wan-ac"], "policy": ["none", "lag-priority"],
                      "params": {"encryption": ["aes-gcm", "tls"]}},
            "repetitions": 2, "warmups": 1, "scale": 1000, "acceptance": ["aggregate_wrong == 0"]}
    out = run_scenario(scenario_from_data(data, "fl.yaml", quick=True), tmp_path / "run")
    assert out.verdict.passed, [(r.label, r.message) for r in out.verdict.results if not r.passed]
    pts = {(p.fields["policy"], p.fields["encryption"]): p for p in out.verdict.points if not p.baseline}
    for (_policy, enc), p in pts.items():
        m = p.metrics
        assert m["model_bytes"] == 2_000_000
        # three models down and three updates up a round, framing and (aes-gcm) tags included
        assert m["round_bytes"] >= 6 * 2_000_000, m
        assert (m.get("crypto_s") is None) == (enc == "tls") and (enc == "tls" or m["crypto_s"] > 0), m
        assert m["last_update_s"] <= p.step_time_s and m["lag_s"] >= 0
    for enc in ("aes-gcm", "tls"):
        fair, first = pts[("none", enc)].metrics, pts[("lag-priority", enc)].metrics
        # 2 MB each to three participants through 100 Mbit/s: ~0.5 s when shared, ~0.17 s first
        assert first["lagging_download_s"] < 0.6 * fair["lagging_download_s"], (enc, first, fair)
        assert pts[("lag-priority", enc)].step_time_s < pts[("none", enc)].step_time_s, enc
        # the model knows the fair share, not the slice: it is checked where there is none
        p = pts[("none", enc)]
        assert abs(p.step_time_s / p.predicted_step_s - 1) < 0.3, (p.step_time_s, p.predicted_step_s)
