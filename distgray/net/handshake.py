"""The handshake on a fresh connection: HELLO, CHALLENGE, AUTH, WELCOME (see ``wire/protocol.py``).

Both sides prove the shared token with HMAC-SHA256 over the other's nonce; proofs are computed
and compared by ``wire.protocol`` (constant time). A refusal tells the peer why before raising.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from distgray.errors import AuthenticationError, PeerDisconnected, RemoteError, VersionMismatch
from distgray.net.channel import Channel
from distgray.wire import protocol as P


def client_handshake(
    channel: Channel,
    worker_id: str,
    token: bytes | None,
    capabilities: tuple[str, ...] = (P.CAPABILITY_LUMA_U8,),
    max_payload: int = P.MAX_PAYLOAD_BYTES,
) -> P.Welcome:
    """Worker side: HELLO, answer the challenge, check the master's proof. Returns its WELCOME.

    On success the channel accepts task payloads up to ``max_payload`` bytes.
    """
    channel.send(P.Hello(worker_id, capabilities))
    try:
        challenge: P.Challenge = channel.expect(P.Challenge)
    except RemoteError as exc:
        if exc.code == P.ErrorCode.VERSION:
            raise VersionMismatch(f"master refused us: {exc}", P.PROTOCOL_VERSION) from exc
        raise
    nonce = os.urandom(P.NONCE_BYTES)
    if challenge.auth_required and token is None:
        raise AuthenticationError("master requires a token: pass --token or set DISTGRAY_TOKEN")
    if token is not None and not challenge.auth_required:
        # A worker given a token works only for a master that can prove it knows the token.
        raise AuthenticationError(
            f"{channel.peer} has authentication off (--no-auth) and cannot prove the token;"
            " refusing it (run this worker without --token to work for it)"
        )
    proof = P.worker_proof(token, challenge.nonce, worker_id) if token else bytes(P.DIGEST_BYTES)
    channel.send(P.Auth(proof, nonce))
    try:
        welcome: P.Welcome = channel.expect(P.Welcome)
    except RemoteError as exc:
        if exc.code == P.ErrorCode.AUTH_FAILED:
            raise AuthenticationError(f"master refused our token ({exc})") from exc
        raise
    if challenge.auth_required:
        assert token is not None
        if not P.proofs_match(P.master_proof(token, nonce), welcome.proof):
            raise AuthenticationError(f"{channel.peer} does not know the token: refusing it")
    channel.max_payload = max_payload
    return welcome


def server_handshake(
    channel: Channel, token: bytes | None, make_welcome: Callable[[P.Hello, bytes], P.Welcome]
) -> tuple[P.Hello, P.Welcome]:
    """Master side. ``make_welcome(hello, proof)`` names the worker and sets session parameters.

    Raises AuthenticationError (after telling the worker why) or ProtocolError/VersionMismatch
    (after telling the worker, where the bytes allow it).
    """
    try:
        hello: P.Hello = channel.expect(P.Hello)
    except VersionMismatch as exc:
        _refuse(channel, P.ErrorCode.VERSION, f"master speaks distgray protocol {P.PROTOCOL_VERSION}: {exc}")
        raise
    nonce = os.urandom(P.NONCE_BYTES)
    channel.send(P.Challenge(token is not None, nonce))
    auth: P.Auth = channel.expect(P.Auth)
    proof = bytes(P.DIGEST_BYTES)
    if token is not None:
        if not P.proofs_match(P.worker_proof(token, nonce, hello.worker_id), auth.proof):
            _refuse(channel, P.ErrorCode.AUTH_FAILED, "authentication failed: wrong token")
            raise AuthenticationError(f"{channel.peer} ({hello.worker_id!r}): wrong token")
        proof = P.master_proof(token, auth.nonce)
    welcome = make_welcome(hello, proof)
    channel.send(welcome)
    # The master checks each result against its task's exact size before reading a byte of it.
    channel.max_payload = P.MAX_PAYLOAD_BYTES
    return hello, welcome


def _refuse(channel: Channel, code: P.ErrorCode, message: str) -> None:
    with contextlib.suppress(PeerDisconnected):
        channel.send(P.Error(code, message))
