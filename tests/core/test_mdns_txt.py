"""A signed peer record in an mDNS TXT record (``_core/mdns_txt.py``):
packed in strings of at most 255 bytes, read back exactly, and anything
else refused before any signature work."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blueprint_net._core import mdns_txt
from blueprint_net._core.identity import Identity
from blueprint_net._core.records import PeerRecord, sign_record

ALICE = Identity(bytes(range(32)))


def _strings(rdata: bytes) -> list[bytes]:
    strings, position = [], 0
    while position < len(rdata):
        size = rdata[position]
        strings.append(rdata[position + 1 : position + 1 + size])
        position += 1 + size
    return strings


def _rdata(*strings: bytes) -> bytes:
    return b"".join(bytes((len(s),)) + s for s in strings)


def _long_name(n: int) -> str:
    """A host name of some 200 bytes (labels of at most 63)."""
    return ".".join(["h" * 60] * 3) + f".n{n}.example:7010"


def test_a_short_record_is_one_string_after_the_version() -> None:
    record = sign_record(ALICE, 7, ["192.168.1.5:7010"])
    rdata = mdns_txt.pack(record)
    assert _strings(rdata) == [b"v=1", b"r0=" + record.encode()]
    assert mdns_txt.unpack(rdata) == record
    assert mdns_txt.unpack(rdata).verifies()


def test_a_long_record_is_cut_into_strings_of_at_most_255_bytes() -> None:
    addresses = [f"192.168.{n}.{n}:{7000 + n}" for n in range(8)]
    addresses[0] = _long_name(0)  # names travel (and are not dialed)
    record = sign_record(ALICE, 2**64 - 1, addresses)
    rdata = mdns_txt.pack(record)
    strings = _strings(rdata)
    assert len(strings) > 2 and all(len(s) <= 255 for s in strings)
    assert [s[:3] for s in strings[1:]] == [
        f"r{n}=".encode() for n in range(len(strings) - 1)
    ]
    assert mdns_txt.unpack(rdata) == record


def test_a_record_over_the_txt_bound_is_not_packed() -> None:
    record = sign_record(ALICE, 1, [_long_name(n) for n in range(8)])
    with pytest.raises(mdns_txt.OversizeTxt):
        mdns_txt.pack(record)


def test_an_oversize_txt_is_refused_unread() -> None:
    record = sign_record(ALICE, 1, ["192.168.1.5:7010"])
    rdata = mdns_txt.pack(record) + _rdata(b"pad=" + b"x" * 250) * 5
    assert len(rdata) > mdns_txt.MAX_TXT
    with pytest.raises(mdns_txt.OversizeTxt):
        mdns_txt.unpack(rdata)


def test_unknown_keys_and_repeats_are_ignored() -> None:
    """RFC 6763 6.4: the first of a repeated key counts; a later version
    may add keys."""
    record = sign_record(ALICE, 1, ["192.168.1.5:7010"])
    rdata = _rdata(
        b"v=1", b"flag", b"later=thing", b"r0=" + record.encode(), b"r0=junk", b"v=2"
    )
    assert mdns_txt.unpack(rdata) == record


RECORD = sign_record(ALICE, 1, ["192.168.1.5:7010"])


@pytest.mark.parametrize(
    ("rdata", "why"),
    [
        (b"", "no v=1"),
        (_rdata(b"r0=" + RECORD.encode()), "no v=1"),
        (_rdata(b"v=2", b"r0=" + RECORD.encode()), "no v=1"),
        (_rdata(b"v=1"), "no record strings"),
        (_rdata(b"v=1", b"r1=" + RECORD.encode()), "no record strings"),
        (_rdata(b"v=1", b"r0=" + RECORD.encode())[:-1], "ends inside a string"),
        (_rdata(b"v=1", b"r0=" + RECORD.encode() + b"x"), "not a peer record"),
        (_rdata(b"v=1", b"r0=" + RECORD.encode()[:-1]), "not a peer record"),
        (_rdata(b"v=1", b"r0=\x05hello"), "not a peer record"),
    ],
)
def test_malformed_txt_is_refused(rdata: bytes, why: str) -> None:
    with pytest.raises(mdns_txt.MalformedTxt, match=why) as caught:
        mdns_txt.unpack(rdata)
    assert not isinstance(caught.value, mdns_txt.OversizeTxt)


def test_a_forged_record_unpacks_but_does_not_verify() -> None:
    """Reading is not trusting: the reader verifies (the record book does)."""
    forged = attrs.evolve(RECORD, addresses=("192.168.1.6:7010",))
    unpacked = mdns_txt.unpack(mdns_txt.pack(forged))
    assert unpacked == forged and not unpacked.verifies()


@given(st.binary(max_size=1400))
def test_any_bytes_are_a_record_or_malformed(rdata: bytes) -> None:
    try:
        record = mdns_txt.unpack(rdata)
    except mdns_txt.MalformedTxt:
        return
    assert isinstance(record, PeerRecord)


def _record_encoding_to(size: int) -> PeerRecord:
    """A record whose encoding is exactly ``size`` bytes (five long names,
    then one name grown a byte at a time)."""
    fixed = [_long_name(n) for n in range(5)]
    for extra in range(1, 400):
        labels, left = [], extra
        while left > 60:
            labels.append("a" * 60)
            left -= 61
        labels.append("a" * max(left, 1))
        record = sign_record(ALICE, 1, [*fixed, ".".join(labels) + ".example:7010"])
        if len(record.encode()) == size:
            return record
    raise AssertionError(f"no record of {size} bytes")


def test_a_txt_of_exactly_the_bound_is_packed_and_read() -> None:
    """1272 record bytes: six strings, 4 + 6 * 4 + 1272 = 1300 bytes of
    TXT, exactly MAX_TXT; one record byte more is one TXT byte too many."""
    at_bound = _record_encoding_to(1272)
    rdata = mdns_txt.pack(at_bound)
    assert len(rdata) == mdns_txt.MAX_TXT
    assert mdns_txt.unpack(rdata) == at_bound
    with pytest.raises(mdns_txt.OversizeTxt, match="needs 1301 bytes of TXT; 1300 fit"):
        mdns_txt.pack(_record_encoding_to(1273))


def test_a_txt_one_byte_over_the_bound_is_refused_naming_its_size() -> None:
    at_bound = mdns_txt.pack(_record_encoding_to(1272))
    with pytest.raises(mdns_txt.OversizeTxt, match="TXT of 1301 bytes; at most 1300"):
        mdns_txt.unpack(at_bound + b"\x00")
    # The same byte inside the bound (an empty string) is ignored.
    shorter = mdns_txt.pack(RECORD)
    assert mdns_txt.unpack(shorter + b"\x00") == RECORD
