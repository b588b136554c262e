#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/seeds/TARGET/NAME) from the
byte vectors the unit tests use: RFC 6455 5.7's examples, the handshake
requests and replies, the Autobahn-style UTF-8 cases. Re-run after changing
it; the files are kept in the repository.

Each seed is an input as the targets read it (fuzz/src/lib.rs): byte 0 is
how many piece lengths follow, then those lengths, then the body."""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(fin, op, payload, mask=MASK):
    b0 = (0x80 if fin else 0) | op
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close(code, reason=b"", mask=MASK):
    return frame(True, 8, struct.pack(">H", code) + reason, mask)


def rsv1(f):
    """The same frame with RSV1 set: the first frame of a compressed message."""
    return bytes([f[0] | 0x40]) + f[1:]


def zlib_raw(data):
    """Raw DEFLATE ended by a sync flush, tail removed (RFC 7692 7.2.1)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


# RFC 7692 7.2.3.1, 7.2.3.4 and 7.2.3.5.
HELLO = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
HELLO_BFINAL = bytes([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00])
TWO_BLOCKS = bytes([0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xCA, 0xC9, 0xC9, 0x07, 0x00])


def seed(pieces=(), body=b""):
    return bytes([len(pieces)]) + bytes(pieces) + body


REQUEST = (b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
RESPONSE = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
AUTOBAHN_6_4 = "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited"
BAD_UTF8 = [b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"ab\x80cd", b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"]
GOOD_UTF8 = ["κόσμε and 𝄞 and 中文 and ascii".encode(), "Hello-µ@ßöäüàá-UTF-8!! 𝄞".encode(), "€uro".encode()]

# PROXY protocol headers (src/server/proxy_protocol.rs's unit tests).
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(command, family, body):
    return V2_SIG + bytes([0x20 | command, family]) + struct.pack(">H", len(body)) + body


V4_BODY = bytes([192, 0, 2, 7, 10, 0, 0, 1, 0x30, 0x39, 0, 80])
V6_BODY = bytes(15) + b"\x07" + bytes(15) + b"\x01" + bytes([0xD4, 0x31, 0x1F, 0x90])

corpora = {
    "handshake": {
        "request": seed(body=REQUEST + b"\r\n"),
        "request-in-pieces": seed([5, 17, 1], REQUEST + b"\r\n"),
        "request-with-frame": seed(body=REQUEST + b"\r\n" + frame(True, 1, b"Hello")),
        "origin-and-protocol": seed(body=REQUEST + b"Origin: https://a.example\r\nSec-WebSocket-Protocol: json, chat\r\n\r\n"),
        "wrong-origin": seed(body=REQUEST + b"Origin: https://evil.example\r\n\r\n"),
        "post": seed(body=REQUEST.replace(b"GET", b"POST") + b"\r\n"),
        "plain-http": seed(body=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        "wrong-path": seed(body=REQUEST.replace(b"/ws", b"/nope") + b"\r\n"),
        "version-8": seed(body=REQUEST.replace(b"Version: 13", b"Version: 8") + b"\r\n"),
        "no-key": seed(body=REQUEST.replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"") + b"\r\n"),
        "huge-head": seed(body=REQUEST + b"X-Pad: " + b"a" * 2000 + b"\r\n\r\n"),
        "garbage": seed(body=b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        "http-1.0": seed(body=REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n"),
    },
    "http_head": {
        # Byte 0: the line of the target's valid request the rest goes before.
        "plain": bytes([6]),
        "origin-and-auth": bytes([6]) + b"Origin: https://a.example\r\nAuthorization: Bearer t\r\n",
        "protocol-and-deflate": bytes([6]) + b"Sec-WebSocket-Protocol: x, chat\r\n"
                                b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        "leading-empty-line": bytes([0]) + b"\r\n",
        "two-hosts": bytes([2]) + b"host: other\r\n",
        "two-origins": bytes([6]) + b"Origin: https://evil.example\r\nOrigin: https://a.example\r\n",
        "content-length-0": bytes([6]) + b"Content-Length: 0\r\n",
        "content-length-5": bytes([6]) + b"Content-Length: 5\r\n",
        "chunked": bytes([1]) + b"Transfer-Encoding: chunked\r\n",
        "bare-lf": bytes([3]) + b"X-A: 1\nAuthorization: Bearer x\r\n",
        "bare-cr": bytes([3]) + b"X-A: 1\rX-B: 2\r\n",
        "obs-fold": bytes([6]) + b"X-A: 1\r\n folded\r\n",
        "nbsp-and-tabs": bytes([6]) + b"X-N: \xc2\xa0v\xc2\xa0\r\nX-T:\tv\t\r\nX-E:\r\n",
        "head-ends-early": bytes([4]) + b"\r\n",
    },
    "session": {
        # RFC 6455 5.7, as a server receives them (masked).
        "hello": seed(body=frame(True, 1, b"Hello")),
        "hello-fragmented": seed(body=frame(False, 1, b"Hel") + frame(True, 0, b"lo")),
        "ping": seed(body=frame(True, 9, b"Hello")),
        "pong": seed(body=frame(True, 10, b"Hello")),
        "binary-256": seed(body=frame(True, 2, bytes(range(256)))),
        "binary-over-limit": seed(body=frame(True, 2, b"\x00" * 5000)),
        "ping-between-fragments": seed(body=frame(False, 1, b"frag") + frame(True, 9, b"p") + frame(True, 0, b"ment")),
        "close-1000": seed(body=close(1000, b"bye")),
        "close-empty": seed(body=frame(True, 8, b"")),
        "close-bad-code": seed(body=close(1005)),
        "close-bad-utf8": seed(body=close(1000, b"\xff")),
        "autobahn-6.4.3": seed([11, 4, 6], frame(True, 1, AUTOBAHN_6_4)),
        "autobahn-6.4.4": seed([17, 1, 1, 2, 6], frame(True, 1, AUTOBAHN_6_4)),
        "text-split-code-point": seed([3, 1], frame(False, 1, "€uro".encode()[:1]) + frame(True, 0, "€uro".encode()[1:])),
        "unmasked": seed(body=frame(True, 1, b"Hello", mask=None)),
        "rsv-bits": seed(body=bytes([0xC1]) + frame(True, 1, b"Hello")[1:]),
        "reserved-opcode": seed(body=frame(True, 3, b"")),
        "length-2^63": seed(body=bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]) + MASK),
        "unexpected-continuation": seed(body=frame(True, 0, b"x")),
        "expected-continuation": seed(body=frame(False, 1, b"a") + frame(True, 1, b"b")),
        "fragmented-ping": seed(body=frame(False, 9, b"")),
    },
    "deflate": {
        # RFC 7692 7.2.3, as a server receives them (masked, RSV1 on the first frame).
        "hello": seed(body=rsv1(frame(True, 1, HELLO))),
        "hello-fragmented": seed(body=rsv1(frame(False, 1, HELLO[:3])) + frame(True, 0, HELLO[3:])),
        "hello-in-pieces": seed([3, 1, 2], rsv1(frame(True, 2, HELLO))),
        "stored-block": seed(body=rsv1(frame(True, 1, bytes([0x00, 0x05, 0x00, 0xFA, 0xFF]) + b"Hello\x00"))),
        "bfinal": seed(body=rsv1(frame(True, 1, HELLO_BFINAL)) + rsv1(frame(True, 1, HELLO))),
        "two-blocks": seed(body=rsv1(frame(True, 1, TWO_BLOCKS))),
        "empty": seed(body=rsv1(frame(True, 1, b"\x00"))),
        "bomb": seed(body=rsv1(frame(True, 2, zlib_raw(b"a" * 100000)))),
        "bad-utf8": seed(body=rsv1(frame(True, 1, zlib_raw(b"a\xffb")))),
        "garbage": seed(body=rsv1(frame(True, 2, b"\xff" * 16))),
        "rsv1-continuation": seed(body=rsv1(frame(False, 1, HELLO[:3])) + rsv1(frame(True, 0, HELLO[3:]))),
        "rsv1-ping": seed(body=rsv1(frame(True, 9, b""))),
        "plain-between": seed(body=frame(True, 1, b"plain") + rsv1(frame(True, 1, HELLO))),
    },
    "utf8": {
        **{f"good-{i}": seed(body=t) for i, t in enumerate(GOOD_UTF8)},
        **{f"good-{i}-bytewise": seed([1], t) for i, t in enumerate(GOOD_UTF8)},
        **{f"bad-{i}": seed(body=t) for i, t in enumerate(BAD_UTF8)},
        **{f"bad-{i}-bytewise": seed([1], t) for i, t in enumerate(BAD_UTF8)},
        "autobahn-6.4": seed([11, 1, 1, 1, 1], AUTOBAHN_6_4),
        "truncated": seed([2], b"ab\xe2\x82"),
    },
    "proxy_header": {
        "v1-tcp4": seed(body=b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 80\r\nGET / HTTP/1.1\r\n"),
        "v1-tcp6-bytewise": seed([1], b"PROXY TCP6 2001:db8::7 2001:db8::1 54321 8080\r\n"),
        "v1-unknown": seed(body=b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"),
        "v1-long": seed(body=b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n"),
        "v2-tcp4": seed([13, 3], proxy_v2(1, 0x11, V4_BODY)),
        "v2-tcp6": seed(body=proxy_v2(1, 0x21, V6_BODY)),
        "v2-local": seed(body=proxy_v2(0, 0x00, b"")),
        "v2-tlvs": seed(body=proxy_v2(1, 0x11, V4_BODY + b"\x01\x00\x02h2\x04\x00\x00")),
        "v2-bad-tlv": seed(body=proxy_v2(1, 0x11, V4_BODY + b"\x01\x00\x05h")),
        "http": seed(body=b"GET / HTTP/1.1\r\n"),
    },
    "client": {
        # RFC 6455 5.7, as a client receives them (unmasked), after the 101.
        "hello": seed(body=RESPONSE + frame(True, 1, b"Hello", mask=None)),
        "reply-in-pieces": seed([9, 30, 2], RESPONSE + frame(True, 1, b"Hello", mask=None)),
        "fragmented": seed(body=RESPONSE + frame(False, 1, b"Hel", None) + frame(True, 0, b"lo", None)),
        "ping": seed(body=RESPONSE + frame(True, 9, b"Hello", None)),
        "binary-64k": seed(body=RESPONSE + frame(True, 2, b"\x07" * 65536, None)),
        "close": seed(body=RESPONSE + close(1001, b"going away", None)),
        "masked-from-server": seed(body=RESPONSE + frame(True, 1, b"Hello")),
        "status-503": seed(body=b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
        "bad-accept": seed(body=RESPONSE.replace(b"s3pP", b"AAAA")),
    },
}

for target, seeds in corpora.items():
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds")
