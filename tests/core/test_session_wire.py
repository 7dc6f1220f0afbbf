"""The session messages' codec: round trips, one encoding each, strict
errors; the digests, the signed bytes and the evidence form."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blueprint_net._core import session_wire as sw
from blueprint_net._core import wire
from blueprint_net._core.errors import ErrorCode, WireError
from tests.helpers import mutated

_index = st.integers(0, 2**16 - 1)
_round = st.integers(0, 2**32 - 1)
_payload = st.binary(max_size=120)
_signature = st.binary(min_size=64, max_size=64)

MESSAGES = st.one_of(
    st.builds(sw.Direct, _index, _round, _payload),
    st.builds(sw.Broadcast, _index, _round, _payload, _signature, st.booleans()),
    st.builds(sw.Echo, _index, _round, st.binary(min_size=32, max_size=32)),
    st.builds(sw.Relay, _index, _round, _index, _payload, _signature),
)
_signed = st.builds(sw.SignedBroadcast, _payload, _signature)


@given(MESSAGES)
def test_every_session_message_round_trips(message: sw.SessionMessage) -> None:
    data = sw.encode(message)
    assert sw.decode(data) == message
    assert data[0] == sw.kind(message)


@given(MESSAGES, st.data())
@settings(max_examples=800)
def test_mutated_session_messages_raise_only_wire_errors(
    message: sw.SessionMessage, data: st.DataObject
) -> None:
    changed = mutated(sw.encode(message), data)
    try:
        decoded = sw.decode(changed)
    except WireError as error:
        assert 100 <= error.code < 200
        return
    assert sw.encode(decoded) == changed  # one encoding per message


@given(st.integers(0, 255), st.binary(max_size=120))
@settings(max_examples=1000)
def test_random_payloads_raise_only_wire_errors(kind: int, rest: bytes) -> None:
    try:
        decoded = sw.decode(bytes((kind,)) + rest)
    except WireError as error:
        assert 100 <= error.code < 200
        return
    assert sw.encode(decoded) == bytes((kind,)) + rest


HEAD = b"\x00\x01" + b"\x00\x00\x00\x02"  # sender 1, round 2
SIG = bytes(64)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", ErrorCode.TRUNCATED),
        (b"\x00" + HEAD + bytes(4), ErrorCode.UNKNOWN_MESSAGE_TYPE),
        (b"\x06" + HEAD + bytes(32), ErrorCode.UNKNOWN_MESSAGE_TYPE),
        (b"\x01" + HEAD[:5], ErrorCode.TRUNCATED),
        (b"\x01" + HEAD + b"\x00\x00\x00\x02h", ErrorCode.TRUNCATED),
        (b"\x01" + HEAD + b"\x00\x00\x00\x01hi", ErrorCode.TRAILING_BYTES),
        (b"\x02" + HEAD + b"\x00\x00\x00\x00" + SIG[:63], ErrorCode.TRUNCATED),
        (b"\x03" + HEAD + b"\x00\x00\x00\x00" + SIG + b"!", ErrorCode.TRAILING_BYTES),
        (b"\x04" + HEAD + bytes(31), ErrorCode.TRUNCATED),
        (b"\x04" + HEAD + bytes(33), ErrorCode.TRAILING_BYTES),
        (b"\x05" + HEAD + b"\x00", ErrorCode.TRUNCATED),
        (b"\x05" + HEAD + bytes(6) + SIG[:1], ErrorCode.TRUNCATED),
        (b"\x05" + HEAD + bytes(6) + SIG + b"!", ErrorCode.TRAILING_BYTES),
    ],
    ids=[
        "empty",
        "kind-0",
        "kind-6",
        "head-short",
        "direct-short-payload",
        "direct-trailing",
        "broadcast-short-signature",
        "reliable-trailing",
        "echo-short",
        "echo-trailing",
        "relay-short-origin",
        "relay-short-signature",
        "relay-trailing",
    ],
)
def test_strict_session_decoder(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(WireError) as caught:
        sw.decode(data)
    assert caught.value.code is code


def test_the_errors_say_what_was_wrong() -> None:
    with pytest.raises(WireError) as caught:
        sw.decode(b"")
    assert caught.value.message == "empty session message"
    with pytest.raises(WireError) as caught:
        sw.decode(b"\x07")
    assert caught.value.message == "0x07 is not a session message kind"


def test_the_layout_of_each_message() -> None:
    sig = bytes(range(64))
    assert sw.encode(sw.Direct(1, 2, b"hi")) == b"\x01" + HEAD + b"\0\0\0\x02hi"
    plain = sw.encode(sw.Broadcast(1, 2, b"hi", sig))
    assert plain == b"\x02" + HEAD + b"\0\0\0\x02hi" + sig
    assert sw.encode(sw.Broadcast(1, 2, b"hi", sig, True)) == b"\x03" + plain[1:]
    assert sw.encode(sw.Echo(1, 2, b"d" * 32)) == b"\x04" + HEAD + b"d" * 32
    relay = sw.encode(sw.Relay(1, 2, 3, b"hi", sig))
    assert relay == b"\x05" + HEAD + b"\0\x03" + b"\0\0\0\x02hi" + sig


def test_the_limits_of_each_field_travel_and_one_past_them_does_not() -> None:
    edge: list[sw.SessionMessage] = [
        sw.Direct(2**16 - 1, 2**32 - 1, b""),
        sw.Direct(0, 0, b"x"),
        sw.Relay(0, 0, 2**16 - 1, b"", SIG),
    ]
    for message in edge:
        assert sw.decode(sw.encode(message)) == message
    unencodable: list[sw.SessionMessage] = [
        sw.Direct(2**16, 0, b""),
        sw.Direct(-1, 0, b""),
        sw.Direct(0, 2**32, b""),
        sw.Direct(0, -1, b""),
        sw.Broadcast(0, 0, b"", SIG[:63]),
        sw.Broadcast(0, 0, b"", SIG + b"!"),
        sw.Echo(0, 0, bytes(31)),
        sw.Echo(0, 0, bytes(33)),
        sw.Relay(0, 0, 2**16, b"", SIG),
        sw.Relay(0, 0, -1, b"", SIG),
        sw.Relay(0, 0, 0, b"", SIG[:1]),
    ]
    reasons = [
        "a party index is a u16",
        "a party index is a u16",
        "a round is a u32",
        "a round is a u32",
        "a signature is 64 bytes",
        "a signature is 64 bytes",
        "an echo digest is 32 bytes",
        "an echo digest is 32 bytes",
        "a party index is a u16",
        "a party index is a u16",
        "a signature is 64 bytes",
    ]
    assert len(reasons) == len(unencodable)
    for message, reason in zip(unencodable, reasons):
        with pytest.raises(ValueError) as caught:
            sw.encode(message)
        assert str(caught.value) == reason, message
    with pytest.raises(TypeError) as wrong:
        sw.encode(wire.Ping(1))  # type: ignore[arg-type]
    assert str(wrong.value) == "not a session message: Ping(opaque=1)"


KEYS = [bytes([3]) * 32, bytes([1]) * 32, bytes([2]) * 32]


def test_the_session_digest_is_over_the_sorted_keys_and_the_sized_id() -> None:
    digest = sw.session_digest(b"sid", KEYS)
    assert (
        digest
        == hashlib.sha256(
            b"blueprint-net/session/v1\x00\x03sid" + b"".join(sorted(KEYS))
        ).digest()
    )
    assert sw.session_digest(b"sid", list(reversed(KEYS))) == digest
    # The id's length keeps a key from moving into it.
    assert sw.session_digest(b"sid" + KEYS[1], KEYS[::2]) != sw.session_digest(
        b"sid", KEYS
    )
    assert sw.stream_name(digest) == b"bn/session/" + digest[:16]
    assert len(sw.stream_name(digest)) == 27
    assert sw.session_digest(b"x" * 255, KEYS)
    for bad in (b"", b"x" * 256):
        with pytest.raises(ValueError, match="a session id is 1 to 255 bytes"):
            sw.session_digest(bad, KEYS)


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ([KEYS[0]], "2 to 65536 parties"),
        ([], "2 to"),
        ([KEYS[0], KEYS[1][:31]], "a party key is 32 bytes"),
        ([KEYS[0], KEYS[1] + b"!"], "32 bytes"),
        ([KEYS[0], KEYS[1], KEYS[0]], "^a party is listed twice$"),
    ],
)
def test_a_key_list_no_session_can_have_is_refused(
    keys: list[bytes], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        sw.sorted_keys(keys)


def test_sorted_keys_are_in_bytewise_order() -> None:
    assert sw.sorted_keys(KEYS) == [KEYS[1], KEYS[2], KEYS[0]]
    assert sw.sorted_keys([b"\x01" + bytes(31), bytes(31) + b"\xff"]) == [
        bytes(31) + b"\xff",
        b"\x01" + bytes(31),
    ]


def test_the_signed_bytes_and_the_echo_digest() -> None:
    digest = bytes(range(32))
    signed = sw.signed_bytes(digest, 7, 2, b"hi")
    assert signed == (
        b"blueprint-net/session-broadcast/v1\x00"
        + digest
        + b"\0\0\0\x07\0\x02\0\0\0\x02hi"
    )
    echo = sw.echo_digest(digest, 7, [b"a", b"", b"bc"])
    assert (
        echo
        == hashlib.sha256(
            b"blueprint-net/session-echo/v1\x00"
            + digest
            + b"\0\0\0\x07"
            + b"\0\0\0\x01a\0\0\0\x00\0\0\0\x02bc"
        ).digest()
    )
    # Lengths keep bytes from moving between payloads.
    assert sw.echo_digest(digest, 7, [b"ab", b"", b"c"]) != echo
    assert sw.echo_digest(digest, 8, [b"a", b"", b"bc"]) != echo


@given(_round, _index, _signed, _signed)
def test_evidence_has_one_form_and_round_trips(
    round: int, origin: int, one: sw.SignedBroadcast, other: sw.SignedBroadcast
) -> None:
    if one.payload == other.payload:
        with pytest.raises(ValueError, match="equal payloads"):
            sw.evidence(round, origin, one, other)
        return
    proof = sw.evidence(round, origin, one, other)
    assert proof == sw.evidence(round, origin, other, one)
    assert proof.first.payload < proof.second.payload
    data = sw.encode_evidence(proof)
    assert sw.decode_evidence(data) == proof


def test_the_evidence_layout_and_its_strict_decoder() -> None:
    a = sw.SignedBroadcast(b"A", b"\x01" * 64)
    b = sw.SignedBroadcast(b"B", b"\x02" * 64)
    proof = sw.evidence(3, 1, b, a)
    data = sw.encode_evidence(proof)
    assert data == (
        b"blueprint-net/session-evidence/v1\x00"
        + b"\0\0\0\x03\0\x01"
        + b"\0\0\0\x01A"
        + b"\x01" * 64
        + b"\0\0\0\x01B"
        + b"\x02" * 64
    )
    swapped = sw.encode_evidence(sw.EquivocationEvidence(3, 1, b, a))
    for bad, code in [
        (b"", ErrorCode.OUT_OF_RANGE),
        (b"x" + data[1:], ErrorCode.OUT_OF_RANGE),
        (data[:5] + b"X" + data[6:], ErrorCode.OUT_OF_RANGE),
        (data[:-1], ErrorCode.TRUNCATED),
        (data + b"!", ErrorCode.TRAILING_BYTES),
        (swapped, ErrorCode.OUT_OF_RANGE),
        (
            sw.encode_evidence(sw.EquivocationEvidence(3, 1, a, a)),
            ErrorCode.OUT_OF_RANGE,
        ),
    ]:
        with pytest.raises(WireError) as caught:
            sw.decode_evidence(bad)
        assert caught.value.code is code, bad
    with pytest.raises(WireError, match="bytewise order"):
        sw.decode_evidence(swapped)
    with pytest.raises(ValueError):
        sw.encode_evidence(sw.EquivocationEvidence(3, 2**16, a, b))
    with pytest.raises(ValueError, match=r"^a signature is 64 bytes$"):
        sw.encode_evidence(
            sw.EquivocationEvidence(3, 1, a, sw.SignedBroadcast(b"B", b""))
        )


def test_the_bounds_of_a_party_list_and_a_session_id() -> None:
    many = [i.to_bytes(32, "big") for i in range(2**16)]
    assert len(sw.sorted_keys(many)) == 2**16
    with pytest.raises(ValueError) as caught:
        sw.sorted_keys([*many, b"\xff" * 32])
    assert str(caught.value) == "a session has 2 to 65536 parties"
    with pytest.raises(ValueError) as caught:
        sw.sorted_keys([KEYS[0], b"x"])
    assert str(caught.value) == "a party key is 32 bytes"
    assert sw.session_digest(b"x", KEYS) != sw.session_digest(b"y", KEYS)


def test_the_evidence_errors_say_what_is_wrong() -> None:
    a = sw.SignedBroadcast(b"A", b"\x01" * 64)
    b = sw.SignedBroadcast(b"B", b"\x02" * 64)
    with pytest.raises(ValueError) as caught:
        sw.evidence(0, 0, a, a)
    assert str(caught.value) == "equal payloads are no equivocation"
    data = sw.encode_evidence(sw.evidence(0, 0, a, b))
    for bad, message in [
        (b"", "not equivocation evidence"),
        (b"x" + data[1:], "not equivocation evidence"),
        (data[:5] + b"X" + data[6:], "not equivocation evidence"),
        (
            sw.encode_evidence(sw.EquivocationEvidence(0, 0, b, a)),
            "the payloads are not in bytewise order",
        ),
    ]:
        with pytest.raises(WireError) as refused:
            sw.decode_evidence(bad)
        assert refused.value.message == message
