"""What an unverified peer sends: the wrong protocols told apart from the
first bytes alone, and a peer's text quoted safely for a log line."""

from __future__ import annotations

import pytest

from blueprint_net._core import untrusted
from blueprint_net._core.untrusted import Opening, http_400, looks_like_frame, opening

#: The first bytes of a real TLS 1.3 ClientHello record (type 22, legacy
#: version 3.1, length, handshake type 1).
CLIENT_HELLO = bytes.fromhex("160301020001")


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (CLIENT_HELLO, Opening.TLS),
        (bytes.fromhex("160304000001"), Opening.TLS),  # the highest 3.x taken
        (bytes.fromhex("160305000001"), Opening.BLUEPRINT),  # not a TLS version
        (bytes.fromhex("160201000001"), Opening.BLUEPRINT),  # SSL 2 is not TLS
        (bytes.fromhex("150301000001"), Opening.BLUEPRINT),  # an alert record
        (bytes.fromhex("160301000002"), Opening.BLUEPRINT),  # not a ClientHello
        (b"\x16", Opening.UNDECIDED),
        (bytes.fromhex("1603010200"), Opening.UNDECIDED),  # five bytes: wait
        (b"GET / HTTP/1.1\r\n", Opening.HTTP),
        (b"PRI * HTTP/2.0\r\n", Opening.HTTP),
        (b"CONNECT example:443", Opening.HTTP),
        (b"GE", Opening.UNDECIDED),
        (b"", Opening.UNDECIDED),
        (b"GET/", Opening.BLUEPRINT),
        (b"\x00\x00\x00\x4a\x01", Opening.BLUEPRINT),  # a Hello's frame header
        (b"\x17\x03\x03\x00\x10\x00", Opening.BLUEPRINT),
    ],
)
def test_the_opening_bytes_are_classified(first: bytes, expected: Opening) -> None:
    assert opening(first) is expected


def test_every_http_method_is_recognised_whole_and_waited_for_in_part() -> None:
    for method in untrusted._HTTP_METHODS:
        assert opening(method + b"/ HTTP/1.1") is Opening.HTTP
        assert opening(method[:-1]) is Opening.UNDECIDED, method


def test_http_400_is_a_whole_response_with_the_length_of_its_body() -> None:
    body = b"wrong port: this is a blueprint-net peer port\n"
    answer = http_400(body)
    head, separator, rest = answer.partition(b"\r\n\r\n")
    assert separator and rest == body
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.0 400 Bad Request"
    assert b"Content-Length: %d" % len(body) in lines
    assert b"Connection: close" in lines
    assert b"Content-Type: text/plain; charset=utf-8" in lines


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b"\x00\x00\x00", False),  # too short to tell
        (b"\x00\x00\x00\x00", False),  # an empty frame is never valid
        (b"\x00\x00\x00\x01", True),
        (b"\x00\x00\x00\x02\x01", True),
        (b"\x00\x00\x10\x00", True),  # exactly 4 KiB
        (b"\x00\x00\x10\x00\x01", True),  # only the first 4 bytes are the length
        (b"\x00\x00\x10\x01", False),
        (b"\x01\x00\x00\x01", False),  # big-endian: 16 MiB + 1
        (b"\x01\x00\x00\x00\x00", False),  # little-endian would read 1
    ],
)
def test_a_plain_frame_header_is_told_by_its_length(
    first: bytes, expected: bool
) -> None:
    assert looks_like_frame(first) is expected


def test_quote_escapes_control_format_and_separator_characters() -> None:
    text = "a\r\nb\x1b[2Jc\u200bd\u2028e\u2029f\\g"
    assert untrusted.quote(text) == (
        "a\\x0d\\x0ab\\x1b[2Jc\\u200bd\\u2028e\\u2029f\\\\g"
    )
    assert untrusted.quote("\x7f\x00") == "\\x7f\\x00"
    assert untrusted.quote("plain text, é") == "plain text, é"


def test_quote_cuts_at_the_limit_and_says_how_much_more() -> None:
    assert untrusted.quote("x" * 200) == "x" * 200
    assert untrusted.quote("x" * 201) == "x" * 200 + "...(+1 more)"
    assert untrusted.quote("abcdef", limit=3) == "abc...(+3 more)"
    # An escape is never cut in half: it counts as its escaped length.
    assert untrusted.quote("ab\n", limit=4) == "ab...(+1 more)"
    assert untrusted.quote("ab\n", limit=6) == "ab\\x0a"
    assert untrusted.QUOTE_LIMIT == 200


# -- the Sniffer: one object for the plain port and the TLS port ---------------

PLAIN_PORT = {"http": b"http hint", "tls": b"tls hint"}
TLS_PORT = {"http": b"http hint", "plain": b"plain hint"}
FRAME = bytes.fromhex("0000002a") + b"\x01" * 8  # a 42-byte frame's start


@pytest.mark.parametrize(
    ("answers", "reads", "verdict"),
    [
        # Whatever the port, a read at a time until the kind is known.
        (
            PLAIN_PORT,
            [b"G", b"E", b"T / HTTP/1.1"],
            untrusted.WrongOpening("http", b"http hint"),
        ),
        (TLS_PORT, [b"GE", b"T / "], untrusted.WrongOpening("http", b"http hint")),
        (
            PLAIN_PORT,
            [CLIENT_HELLO[:3], CLIENT_HELLO[3:]],
            untrusted.WrongOpening("tls", b"tls hint"),
        ),
        (TLS_PORT, [CLIENT_HELLO[:5], CLIENT_HELLO[5:]], CLIENT_HELLO),
        # A blueprint frame: this port's protocol at once, or wrong at a TLS
        # port once its 4-byte length is in.
        (PLAIN_PORT, [FRAME[:1]], FRAME[:1]),
        (
            TLS_PORT,
            [FRAME[:3], FRAME[3:5]],
            untrusted.WrongOpening("plain", b"plain hint"),
        ),
        # Garbage goes on, for the protocol to judge.
        (TLS_PORT, [b"\xff\xff\xff\xff"], b"\xff\xff\xff\xff"),
        # Still undecided at SNIFF_BYTES: goes on, whole.
        (PLAIN_PORT, [b"PRI * H", b"T"], b"PRI * HT"),
        (TLS_PORT, [b"PRI * HT"], b"PRI * HT"),
    ],
)
def test_the_sniffer_holds_the_first_reads_until_it_can_tell(
    answers: dict[str, bytes],
    reads: list[bytes],
    verdict: object,
) -> None:
    sniffer = untrusted.Sniffer(answers)
    for data in reads[:-1]:
        assert sniffer.feed(data) is None
    assert sniffer.feed(reads[-1]) == verdict
