"""What an unverified peer sends: recognised when it is the wrong protocol,
and quoted safely when it is logged.

Layer: core (sans-IO; imports nothing from Twisted).

A curl at the peer port, a TLS client at a plain port or a plain client at a
TLS port is an operator's mistake, not an attack: scored as garbage, five of
them banned the operator's own address.  :func:`opening` tells them apart
from the first bytes alone (a blueprint frame starts with a 4-byte length of
at most 4 KiB, so none of these can be a valid frame), and :class:`Sniffer`
holds a connection's first reads until they do (one object, used by the
plain port's ``PeerProtocol`` and the TLS port's sniffing layer);
:data:`PLAIN_PORT_ANSWERS` is what a plain port answers each wrong client.
:func:`quote` makes
text a peer chose fit for a log line: short, and with no control character
that could forge a line or rewrite the terminal.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Mapping
from typing import Optional, Union

import attrs

#: Bytes :func:`opening` wants before it decides (fewer: it may wait).
SNIFF_BYTES = 8
#: Characters of a peer's text kept in a log line.
QUOTE_LIMIT = 200
#: The largest frame before ``Verified`` (``docs/protocol.md``).
_HANDSHAKE_FRAME = 4096

_HTTP_METHODS = (
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
    b"PRI * HTTP/2",
)


class Opening(enum.Enum):
    """What the first bytes of a connection look like."""

    #: Too few bytes yet to tell.
    UNDECIDED = "undecided"
    #: A blueprint frame header, or anything else: the protocol judges it.
    BLUEPRINT = "blueprint"
    #: An HTTP request line.
    HTTP = "http"
    #: A TLS ClientHello record.
    TLS = "tls"


def opening(first: bytes) -> Opening:
    """Classify the first bytes a peer sent.

    ``BLUEPRINT`` means only "not a known wrong protocol": a hostile peer's
    garbage is left to the frame decoder (and scored there).
    """
    if _is_tls_hello(first):
        return Opening.TLS
    for method in _HTTP_METHODS:
        if first.startswith(method):
            return Opening.HTTP
        if method.startswith(first):  # "GE" may yet be "GET "
            return Opening.UNDECIDED
    if first[:1] == b"\x16" and len(first) < 6:
        return Opening.UNDECIDED
    return Opening.BLUEPRINT


def http_400(body: bytes) -> bytes:
    """A whole ``400 Bad Request`` with a text body: what an HTTP client at
    a peer port is answered with, so curl or a browser shows the hint."""
    return (
        b"HTTP/1.0 400 Bad Request\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(body)
    ) + body


_HTTP_HINT_BODY = (
    b"This is a blueprint-net peer port, not HTTP. A node's status page is"
    b" served on its --status endpoint (default http://127.0.0.1:7080/);"
    b" `blueprint-net status --url URL` reads it.\n"
)
#: What an HTTP request to a peer port gets back before the close.
HTTP_HINT = http_400(_HTTP_HINT_BODY)
#: What a TLS ClientHello on a plain peer port gets back before the close.
TLS_HINT = (
    b"blueprint-net: this peer port speaks plain blueprint-net, not TLS;"
    b" dial it with tcp:, or listen with p2ptls: for TLS.\n"
)
#: The kinds of client that are wrong at a plain peer port (see
#: :class:`Sniffer`), and what each is answered with.
PLAIN_PORT_ANSWERS = {"http": HTTP_HINT, "tls": TLS_HINT}


def looks_like_frame(first: bytes) -> bool:
    """Whether ``first`` starts like a plain blueprint frame (a 4-byte
    length of at most 4 KiB): a plain client dialing a TLS port."""
    if len(first) < 4:
        return False
    length = int.from_bytes(first[:4], "big")
    return 0 < length <= _HANDSHAKE_FRAME


def _is_tls_hello(first: bytes) -> bool:
    # A handshake record (22), version 3.x, then a ClientHello (type 1).
    return (
        len(first) >= 6
        and first[0] == 0x16
        and first[1] == 0x03
        and first[2] <= 0x04
        and first[5] == 0x01
    )


@attrs.frozen
class WrongOpening:
    """A client of another protocol: ``kind`` (``"http"``, ``"tls"``, or
    ``"plain"``: a blueprint frame at a TLS port) and the ``answer`` it can
    show, written below any protocol of ours before the close."""

    kind: str
    answer: bytes


class Sniffer:
    """The first bytes of an accepted connection, held until they show
    whether the client speaks this port's protocol.

    In: each read, through :meth:`feed`.  Out: ``None`` while undecided (at
    most :data:`SNIFF_BYTES` and a read are held); then, once, either every
    byte held so far (the port's protocol, or garbage for its decoder to
    judge and score) or a :class:`WrongOpening` (an operator's client at
    the wrong port: answered, never scored).  States: undecided, then
    decided (a verdict given: the caller stops feeding).

    ``answers`` maps the kinds that are wrong at this port to their answer:
    ``http``/``tls`` at a plain port, ``http``/``plain`` at a TLS port.
    """

    __slots__ = ("_answers", "_first")

    def __init__(self, answers: Mapping[str, bytes]) -> None:
        self._answers = answers
        self._first = b""

    def feed(self, data: bytes) -> Union[bytes, WrongOpening, None]:
        first = self._first + data
        kind = self._kind(first)
        if kind is None:
            if len(first) < SNIFF_BYTES:
                self._first = first
                return None
            kind = "other"  # still undecided: the protocol judges it
        self._first = b""
        answer = self._answers.get(kind)
        return first if answer is None else WrongOpening(kind, answer)

    def _kind(self, first: bytes) -> Optional[str]:
        """``http``, ``tls``, ``plain``, ``other``, or None: undecided."""
        kind = opening(first)
        if kind is Opening.UNDECIDED:
            return None
        if kind is not Opening.BLUEPRINT:
            return str(kind.value)
        if "plain" not in self._answers:
            return "other"  # a blueprint frame is this port's protocol
        if len(first) < 4:
            return None  # its length is not in yet
        return "plain" if looks_like_frame(first) else "other"


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` fit for one log line: control, format and line-separator
    characters escaped (``\\r`` as ``\\x0d``), then cut to ``limit``
    characters with a note of how many more there were."""
    escaped: list[str] = []
    length = 0
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            code = ord(char)
            piece = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
        elif char == "\\":
            piece = "\\\\"
        else:
            piece = char
        if length + len(piece) > limit:
            return "".join(escaped) + f"...(+{len(text) - len(escaped)} more)"
        escaped.append(piece)
        length += len(piece)
    return "".join(escaped)
