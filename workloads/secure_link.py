"""Message framing over one TCP connection, plain or encrypted end to end, for the workloads that
exchange whole messages between sites outside the process group (federated learning's rounds).

- `none`: an 8-byte length, then the message as it is.
- `aes-gcm`: the message's length and record size, then the message in records of `record`
  bytes, each sealed with AES-256-GCM (`cryptography`, OpenSSL underneath): a 12-byte nonce (the link's direction and a record
  counter: never reused under a key), the ciphertext and its 16-byte tag. The key is agreed when
  the connection opens (ephemeral X25519, HKDF-SHA256): once per connection, not per round.
- `tls`: TLS 1.3 (Python's ssl, OpenSSL) with a certificate the server makes for the run
  (ECDSA P-256, `cryptography`), which the clients pin; the framing of `none` inside it.

`crypto_s` counts the time spent sealing and opening records (aes-gcm); TLS does its cipher work
inside send and receive, where it cannot be told apart from the network's time.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import socket
import ssl
import struct
import tempfile
import termios
import time
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

Encryption = Literal["none", "aes-gcm", "tls"]
LEN = struct.Struct(">Q")
SEALED = struct.Struct(">QI")  # aes-gcm: the message's length and the sender's record size
NONCE, TAG = 12, 16


def recv_exact(sock, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if not k:
            raise ConnectionError(f"peer closed the connection after {got} of {n} bytes")
        got += k
    return buf


def close_all(socks) -> None:
    """Close sockets another thread may be blocked on: shutdown first (a listener's close alone
    leaves a thread in accept() holding it, and the port stays bound for the next workload)."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass


def exchange_key(sock: socket.socket, initiator: bool) -> bytes:
    """An AES-256 key agreed over the connection itself: ephemeral X25519 (each end sends its
    32-byte public key), HKDF-SHA256 over the shared secret. A capture of the connection does not
    give the key; nothing authenticates the peer (the lab's addresses do that here)."""
    mine = X25519PrivateKey.generate()
    pub = mine.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if initiator:
        sock.sendall(pub)
        theirs = bytes(recv_exact(sock, 32))
    else:
        theirs = bytes(recv_exact(sock, 32))
        sock.sendall(pub)
    shared = mine.exchange(X25519PublicKey.from_public_bytes(theirs))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"metrolab secure link").derive(shared)


def self_signed(host: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for `host` (an IP address), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metrolab aggregator")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class SecureLink:
    """One end of a connection carrying whole messages (`send`, `recv`)."""

    def __init__(self, sock: socket.socket, encryption: Encryption, *, initiator: bool = False,
                 record: int = 1 << 20):
        """`sock` is connected (for tls: already wrapped); aes-gcm agrees its key here."""
        self.sock, self.encryption, self.record = sock, encryption, record
        self.crypto_s = 0.0
        self.sent_bytes = 0  # on the connection, framing and tags included (TLS's own records not)
        if encryption == "aes-gcm":
            self.aead = AESGCM(exchange_key(sock, initiator))
            # each direction its own nonce space: the initiator's nonces start with 0, the other's with 1
            self.tx_prefix, self.rx_prefix = (b"\0\0\0\0", b"\0\0\0\1") if initiator else (b"\0\0\0\1", b"\0\0\0\0")
            self.tx_seq = self.rx_seq = 0

    def send(self, message: bytes | bytearray | memoryview) -> None:
        view = memoryview(message)
        if self.encryption != "aes-gcm":
            self.sock.sendall(LEN.pack(len(view)))
            self.sock.sendall(view)
            self.sent_bytes += LEN.size + len(view)
            return
        records = max(1, -(-len(view) // self.record))
        self.sock.sendall(SEALED.pack(len(view), self.record))
        self.sent_bytes += SEALED.size
        for i in range(records):
            chunk = view[i * self.record:(i + 1) * self.record]
            t0 = time.perf_counter()
            nonce = self.tx_prefix + self.tx_seq.to_bytes(8, "big")
            sealed = self.aead.encrypt(nonce, bytes(chunk), None)
            self.crypto_s += time.perf_counter() - t0
            self.tx_seq += 1
            self.sock.sendall(sealed)
            self.sent_bytes += len(sealed)

    def drained(self, timeout_s: float = 60.0, poll_s: float = 0.0005) -> None:
        """Until the peer's TCP has acknowledged every byte sent: `send` returns once the kernel's
        send buffer took the last byte (megabytes ahead of the wire), not when it arrived."""
        end = time.monotonic() + timeout_s
        # TIOCOUTQ (SIOCOUTQ): bytes in the socket's send queue, not yet acknowledged
        while int.from_bytes(fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"), "little") > 0:
            if time.monotonic() > end:
                raise TimeoutError(f"{self.sock.getpeername()}: the send queue did not drain in {timeout_s} s")
            time.sleep(poll_s)

    def recv(self) -> bytearray:
        if self.encryption != "aes-gcm":
            (n,) = LEN.unpack(recv_exact(self.sock, LEN.size))
            return recv_exact(self.sock, n)
        n, record = SEALED.unpack(recv_exact(self.sock, SEALED.size))
        if record <= 0:
            raise ConnectionError(f"sealed message with a record size of {record}")
        out = bytearray()
        for i in range(max(1, -(-n // record))):  # as sent: an empty message is one empty record
            sealed = recv_exact(self.sock, min(record, n - i * record) + TAG)
            t0 = time.perf_counter()
            nonce = self.rx_prefix + self.rx_seq.to_bytes(8, "big")
            out += self.aead.decrypt(nonce, bytes(sealed), None)  # raises InvalidTag if altered
            self.crypto_s += time.perf_counter() - t0
            self.rx_seq += 1
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def tls_server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # load_cert_chain reads files only; the key lives in a private temporary file for a moment
    fd, path = tempfile.mkstemp(prefix="metrolab-tls-")
    try:
        os.write(fd, cert_pem + key_pem)
        os.close(fd)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
    return ctx


def tls_client_context(cert_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=cert_pem.decode())
    return ctx
