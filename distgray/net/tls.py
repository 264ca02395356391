"""TLS for worker connections: the master's certificate, the worker's pin, and who needs TLS.

Rules this module keeps:

* TLS 1.3 only, Python's ``ssl`` (OpenSSL). The token's HMAC proof still runs *inside* TLS, so a
  worker proves the token and the master proves both the token and (by its certificate) its key.
* With no certificate given, the master makes a self-signed one at start (``cryptography``) and
  its SHA-256 fingerprint goes into the worker command it prints; the worker *pins* it (accepts
  exactly that certificate, no CA, no host name). With ``--tls-cert/--tls-key`` an organisation's
  own certificate is used, and workers verify it with ``--tls-ca`` (CA and host name).
* Loopback needs no TLS: a peer at 127.0.0.0/8 or ::1 is on the master's own machine, where
  anyone who can read the traffic could read the master's memory anyway. Every other peer must
  start with a TLS ClientHello (its first byte is 0x16) unless the master runs with ``--no-tls``.
* One thread reads while another writes (the channel's reader and writer), which an OpenSSL
  connection must never see at once: a shared ``ssl.SSLSocket`` used that way broke under load
  here ("EOF occurred in violation of protocol" mid-job). So :class:`TlsSocket` runs TLS over
  memory BIOs: every call on the TLS object holds one short lock, socket I/O happens outside it,
  and ciphertext goes onto the wire in the order it was produced. No session tickets either
  (``num_tickets = 0``): after the handshake only application data flows.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from distgray.errors import AuthenticationError

#: The first byte of every TLS record that starts a handshake (ContentType handshake = 22).
TLS_HANDSHAKE_BYTE = 0x16


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) names this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as 64 lowercase hex digits (what ``--tls-fingerprint`` takes)."""
    return hashlib.sha256(der).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:...`` or ``abcd...`` (openssl's and our spelling) as 64 lowercase hex digits."""
    hexed = text.replace(":", "").strip().lower()
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise ValueError(f"a SHA-256 fingerprint is 64 hex digits, got {text[:80]!r}")
    return hexed


@dataclass(frozen=True)
class ServerTLS:
    """The master's side: its TLS context and the fingerprint workers pin."""

    context: ssl.SSLContext
    fingerprint: str
    self_signed: bool
    cert_pem: bytes = b""  # the certificate only (public): what --tls-save-cert writes for workers


def server_context(
    cert: Path | None = None, key: Path | None = None, client_ca: Path | None = None, names: tuple[str, ...] = ()
) -> ServerTLS:
    """The master's TLS context: ``cert``/``key`` (PEM) if given, else a fresh self-signed pair
    whose certificate names ``names`` (so a worker may also verify it as a CA, by host name).

    ``client_ca``: also require every TLS worker to present a certificate signed by this CA
    (mutual TLS, for an organisation's own PKI)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.num_tickets = 0
    if cert is None:
        if key is not None:
            raise ValueError("--tls-key needs --tls-cert")
        cert_pem, key_pem = self_signed_pair(names=names)
        with tempfile.TemporaryDirectory(prefix="distgray-tls-") as tmp:  # ssl loads only from files
            cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key_pem)
            cert_file.write_bytes(cert_pem)
            ctx.load_cert_chain(cert_file, key_file)
        der = ssl.PEM_cert_to_DER_cert(cert_pem.decode())
        self_signed = True
    else:
        ctx.load_cert_chain(cert, key)
        cert_pem = _first_pem(cert.read_text()).encode()
        der = ssl.PEM_cert_to_DER_cert(cert_pem.decode())
        self_signed = False
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ServerTLS(ctx, fingerprint(der), self_signed, cert_pem)


def self_signed_pair(common_name: str = "distgray master", names: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """A new P-256 key and a self-signed certificate for it, valid from an hour ago for 90 days
    (PEM), naming ``names`` (host names or addresses) and this machine's loopback."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for n in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _first_pem(text: str) -> str:
    end = "-----END CERTIFICATE-----"
    if end not in text:
        raise ValueError("no PEM certificate in the --tls-cert file")
    return text[: text.index(end) + len(end)] + "\n"


@dataclass(frozen=True)
class ClientTLS:
    """How a worker checks the master: a pinned fingerprint, or a CA (with host name), or both."""

    pin: str | None = None
    ca: Path | None = None
    cert: Path | None = None  # the worker's own certificate, for a master that asks (--tls-ca there)
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if self.ca is not None:
            ctx.load_verify_locations(self.ca)
        else:  # pinned: the fingerprint, checked after the handshake, is the whole check
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert is not None:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def wrap(self, sock: socket.socket, host: str) -> TlsSocket:
        """TLS over ``sock`` to the master at ``host``; raises AuthenticationError if it is not the
        master we pinned (or the CA does not vouch for it), ssl.SSLError / OSError on failure."""
        if self.pin is None and self.ca is None:
            raise ValueError("a worker needs the master's --tls-fingerprint or a --tls-ca to use TLS")
        try:
            tls = TlsSocket(sock, self.context(), server_side=False, server_hostname=host if self.ca else None)
        except ssl.SSLCertVerificationError as exc:
            raise AuthenticationError(f"master {host}: its certificate is not trusted: {exc.verify_message}") from exc
        der = tls.getpeercert(binary_form=True)
        if self.pin is not None and (der is None or fingerprint(der) != self.pin):
            tls.close()
            got = fingerprint(der)[:16] + "..." if der else "none"
            raise AuthenticationError(
                f"master {host}: certificate fingerprint {got} is not the one pinned (--tls-fingerprint);"
                " a different master, or someone in between"
            )
        return tls


#: Bytes of ciphertext read from the socket at a time.
_RAW_READ_BYTES = 1 << 18


class TlsSocket:
    """TLS 1.3 over a connected TCP socket, safe for one reading and one writing thread at once.

    Offers what :class:`~distgray.net.channel.Channel` uses of a socket: ``recv_into``, ``send``,
    ``settimeout``/``gettimeout``, ``setsockopt``, ``family``, ``shutdown``, ``close``. The TLS
    handshake runs in the constructor (under the socket's timeout). Timeouts and errors surface as
    the socket's own (``TimeoutError``, ``OSError``, ``ssl.SSLError``).
    """

    def __init__(
        self, sock: socket.socket, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self.sock = sock
        self.family = sock.family
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._lock = threading.Lock()  # every call on the TLS object and its BIOs
        self._wire = threading.Lock()  # taking ciphertext out of the BIO and sending it: one order
        self._handshake()

    # ------------------------------------------------------------------ the socket's face
    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self.sock.gettimeout()

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.sock.setsockopt(level, option, value)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        cert = self._tls.getpeercert(binary_form=True)
        return cert if binary_form else None

    # ------------------------------------------------------------------ TLS
    def _handshake(self) -> None:
        while True:
            failed = done = False
            with self._lock:
                try:
                    self._tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    failed = True
            if failed:  # tell the peer why (the alert is in the outgoing BIO), then fail
                with contextlib.suppress(OSError):
                    self._flush()
                with self._lock:
                    self._tls.do_handshake()  # raises the same error again, now for the caller
            self._flush()
            if done:
                return
            self._feed("during the TLS handshake")

    def _feed(self, when: str = "") -> bool:
        """Read ciphertext from the socket into the TLS object; False at end of stream."""
        data = self.sock.recv(_RAW_READ_BYTES)
        if not data:
            if when:
                raise ConnectionResetError(f"connection closed {when}")
            return False
        with self._lock:
            self._incoming.write(data)
        return True

    def _flush(self) -> None:
        """Send whatever ciphertext the TLS object has produced, in order."""
        with self._wire:
            with self._lock:
                data = self._outgoing.read()
            if data:
                self.sock.sendall(data)

    def recv_into(self, view: memoryview, nbytes: int = 0) -> int:
        """Decrypted bytes into ``view`` (at most ``nbytes`` if given); 0 at end of stream."""
        want = nbytes or len(view)
        while True:
            with self._lock:
                try:
                    got: int | None = int(self._tls.read(want, view))  # an int when given a buffer
                except ssl.SSLWantReadError:
                    got = None
                except ssl.SSLZeroReturnError:  # the peer's close_notify
                    return 0
                answer = self._outgoing.pending
            if answer:  # a post-handshake message or an alert to answer (rare)
                self._flush()
            if got is not None:
                return got
            if not self._feed():
                return 0

    def send(self, data: memoryview | bytes) -> int:
        """Encrypt and send all of ``data`` (returns its length)."""
        with self._wire:
            with self._lock:
                n = self._tls.write(data)
                out = self._outgoing.read()
            self.sock.sendall(out)
        return n
