"""Federated learning without a lab: the message links (plain, AES-GCM, TLS) over a socket pair,
a tampered record refused, the round model and the fair share it rests on."""

from __future__ import annotations

import socket
import threading

import pytest

from metrolab.harness.errors import SpecError
from metrolab.harness.scenario.spec import scenario_from_data
from metrolab.workloads import models as wm
from metrolab.workloads.federated import FederatedParams
from metrolab.workloads.secure_link import SecureLink, self_signed, tls_client_context, tls_server_context

pytestmark = pytest.mark.unit


def pair(enc: str, record: int = 1000):
    a, b = socket.socketpair()
    out: dict = {}
    if enc == "tls":
        cert, key = self_signed("127.0.0.1")
        t = threading.Thread(target=lambda: out.setdefault(
            "b", tls_server_context(cert, key).wrap_socket(b, server_side=True)))
        t.start()
        a = tls_client_context(cert).wrap_socket(a, server_hostname="127.0.0.1")
        t.join()
        b = out["b"]
    # aes-gcm agrees its key in the constructors: both ends at once
    t = threading.Thread(target=lambda: out.__setitem__("lb", SecureLink(b, enc, record=4096)))
    t.start()
    la = SecureLink(a, enc, initiator=True, record=record)
    t.join()
    return la, out["lb"]


@pytest.mark.parametrize("enc", ["none", "aes-gcm", "tls"])
def test_messages_arrive_whole_either_way(enc):
    la, lb = pair(enc)
    for msg in (b"", b"x", bytes(range(256)) * 40):  # empty, one byte, several records
        la.send(msg)
        assert lb.recv() == msg
        lb.send(msg[::-1])  # the other direction, another record size
        assert la.recv() == msg[::-1]
    if enc == "aes-gcm":
        assert la.crypto_s > 0 and lb.crypto_s > 0
        # the payload; per record, the 16-byte tag; per message, its length and record size
        assert la.sent_bytes == 1 + 256 * 40 + 16 * (1 + 1 + 11) + 3 * 12
    else:
        assert la.sent_bytes == 3 * 8 + 1 + 256 * 40 and la.crypto_s == 0
    la.close()
    lb.close()


def test_a_tampered_record_is_refused():
    from cryptography.exceptions import InvalidTag
    a, b = socket.socketpair()
    out: dict = {}
    t = threading.Thread(target=lambda: out.__setitem__("lb", SecureLink(b, "aes-gcm")))
    t.start()
    la = SecureLink(a, "aes-gcm", initiator=True)
    t.join()
    sealed = la.aead.encrypt(b"\0" * 4 + (0).to_bytes(8, "big"), b"parameters", None)
    bad = bytes([sealed[0] ^ 1]) + sealed[1:]
    a.sendall(b"\0" * 7 + b"\x0a" + (1 << 20).to_bytes(4, "big") + bad)
    with pytest.raises(InvalidTag):
        out["lb"].recv()


def test_participants_sharing_a_link_share_its_rate():
    access, wan1, wan2 = wm.Path(100e6), wm.Path(400e6, 0.0005), wm.Path(400e6, 0.0025)
    near, far = wm.fair_share_paths([[access, wan1], [access, wan2]])
    assert near.rate_bps == far.rate_bps == 50e6
    assert far.one_way_s == pytest.approx(0.0025)
    (alone,) = wm.fair_share_paths([[access, wan2]])
    assert alone.rate_bps == 100e6


def test_a_round_waits_for_the_slowest_participant():
    paths = [wm.Path(50e6, 0.0005), wm.Path(50e6, 0.0025)]
    r = wm.federated_round_s(2e6, paths, [0.3, 0.45])
    assert r == pytest.approx(2 * wm.transfer_s(2e6, paths[1], idle_restart=True) + 0.45)
    # longer or slower never faster
    assert wm.federated_round_s(2e6, [paths[0], wm.Path(50e6, 0.005)], [0.3, 0.45]) > r
    assert wm.federated_round_s(2e6, [wm.Path(25e6, 0.0005), paths[1]], [0.3, 0.45]) >= r
    with pytest.raises(ValueError):
        wm.federated_round_s(1, paths, [0.1])


def test_params_and_their_errors():
    assert FederatedParams(model="gpt2-small").model_bytes(1000) == int(124e6 * 4 / 1000) // 4 * 4
    assert FederatedParams(update_size="2g").model_bytes(1000) == (2 << 30) // 1000 // 4 * 4
    data = {"name": "fl", "topology": "default", "sweep": {"distance_km": [100]},
            "workloads": [{"kind": "federated", "hosts": ["a1", "b1", "s1"], "params": {"lagging": ["a1"]}}]}
    with pytest.raises(SpecError) as err:
        scenario_from_data(data, "fl.yaml")
    assert "params.lagging[0]" in str(err.value) and "a1 aggregates" in str(err.value)
    data["workloads"][0]["params"] = {"encryption": "rot13"}
    with pytest.raises(SpecError, match="encryption"):
        scenario_from_data(data, "fl.yaml")
