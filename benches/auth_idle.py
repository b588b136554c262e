#!/usr/bin/env python3
"""Tokens and idle authenticated connections for benches/auth.sh.

  auth_idle.py sign-hs256 SECRET SUB        an HS256 token for SUB, valid 1 h
  auth_idle.py sign-es256 KEY.pem SUB       an ES256 token (signed by openssl)
  auth_idle.py hold HOST:PORT N SECRET SECS USERS
                                            N connections held SECS seconds, by
                                            USERS: none (no token), one (one
                                            user's token for all) or distinct
                                            (a user per connection)

Standard library only (ES256 signing goes through the openssl binary).
"""
import base64
import hashlib
import hmac
import json
import resource
import selectors
import socket
import subprocess
import sys
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_input(alg: str, sub: str) -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = {"sub": sub, "exp": int(time.time()) + 3600, "wsloop": {"join": ["*"], "publish": ["*"]}}
    return header + "." + b64(json.dumps(claims).encode())


def sign_hs256(secret: str, sub: str) -> str:
    msg = signing_input("HS256", sub)
    mac = hmac.new(secret.encode(), msg.encode(), hashlib.sha256).digest()
    return msg + "." + b64(mac)


def der_to_raw(der: bytes) -> bytes:
    """An ECDSA signature from DER (SEQUENCE of two INTEGERs) to JWS r||s."""
    assert der[0] == 0x30
    at = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    parts = []
    for _ in range(2):
        assert der[at] == 0x02
        n = der[at + 1]
        parts.append(int.from_bytes(der[at + 2 : at + 2 + n], "big").to_bytes(32, "big"))
        at += 2 + n
    return parts[0] + parts[1]


def sign_es256(key: str, sub: str) -> str:
    msg = signing_input("ES256", sub)
    der = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", key], input=msg.encode(), capture_output=True, check=True
    ).stdout
    return msg + "." + b64(der_to_raw(der))


def hold(addr: str, n: int, secret: str, secs: float, users: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = addr.rsplit(":", 1)
    sel = selectors.DefaultSelector()
    socks, upgraded = [], 0
    deadline = time.time() + secs
    shared = sign_hs256(secret, "bench-user")
    for i in range(n):
        s = socket.create_connection((host, int(port)))
        query = {"none": "", "one": f"?token={shared}", "distinct": f"?token={sign_hs256(secret, f'user-{i}')}"}[users]
        s.sendall(
            (
                f"GET /ws{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
        if i % 500 == 499:
            upgraded += drain(sel, 0)
    while time.time() < deadline:
        upgraded += drain(sel, 0.2)
    print(json.dumps({"opened": n, "upgraded": upgraded}))
    for s in socks:
        s.close()


def drain(sel: selectors.BaseSelector, timeout: float) -> int:
    """Reads the 101s that arrived; how many."""
    seen = 0
    for key, _ in sel.select(timeout):
        try:
            data = key.fileobj.recv(4096)
        except BlockingIOError:
            continue
        if data.startswith(b"HTTP/1.1 101"):
            seen += 1
        sel.unregister(key.fileobj)
    return seen


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "sign-hs256":
        print(sign_hs256(sys.argv[2], sys.argv[3]))
    elif cmd == "sign-es256":
        print(sign_es256(sys.argv[2], sys.argv[3]))
    elif cmd == "hold":
        hold(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]), sys.argv[6])
    else:
        sys.exit(__doc__)
