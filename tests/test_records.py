"""Signed peer records: signed by their peer only, newest wins, bounded."""

from __future__ import annotations

import attrs
import pytest

from blueprint_net._core import records
from blueprint_net._core.identity import Identity
from blueprint_net._core.records import (
    PeerRecord,
    RecordBook,
    check_addresses,
    parse_address,
    sign_record,
)

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(32, 64)))


def test_a_signed_record_verifies_and_any_change_breaks_it() -> None:
    record = sign_record(ALICE, 7, ["127.0.0.1:4001", "[::1]:4001"])
    assert record.verifies()
    assert not attrs.evolve(record, seqno=8).verifies()
    assert not attrs.evolve(record, addresses=("127.0.0.2:4001",)).verifies()
    assert not attrs.evolve(record, peer_id=BOB.peer_id).verifies()


def test_the_record_domain_is_its_own() -> None:
    """A signature over the same bytes without the domain (say, made for
    another purpose) is not a record signature."""
    record = sign_record(ALICE, 1, ["example.com:80"])
    bare = attrs.evolve(record, signature=ALICE.sign(record.unsigned()))
    assert not bare.verifies()
    assert records.DOMAIN.startswith(b"blueprint-net/peer-record/")


def test_the_newest_record_wins_and_stale_ones_cost_no_verification() -> None:
    checked: list[PeerRecord] = []

    def verify(record: PeerRecord) -> bool:
        checked.append(record)
        return record.verifies()

    book = RecordBook(verify=verify)
    old, new = sign_record(ALICE, 1, ["10.0.0.1:1"]), sign_record(ALICE, 2, ["h:2"])
    assert book.offer(new) is True
    assert book.offer(old) is False  # a relay cannot roll it back
    assert book.offer(new) is False  # nor repeat it
    assert checked == [new]
    assert book.get(ALICE.peer_id) == new


def test_a_forged_record_is_refused_and_kept_out() -> None:
    book = RecordBook()
    forged = attrs.evolve(sign_record(ALICE, 5, ["h:1"]), addresses=("evil:1",))
    assert book.offer(forged) is None
    assert ALICE.peer_id not in book


def test_the_book_is_bounded() -> None:
    book = RecordBook(limit=3)
    identities = [Identity(bytes([n]) * 32) for n in range(5)]
    for identity in identities:
        assert book.offer(sign_record(identity, 1, []))
    assert len(book) == 3
    assert identities[0].peer_id not in book and identities[4].peer_id in book


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:4001", ("127.0.0.1", 4001)),
        ("[::1]:80", ("::1", 80)),
        ("[2001:DB8::1]:80", ("2001:db8::1", 80)),
        ("node-1.example.com:443", ("node-1.example.com", 443)),
    ],
)
def test_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "h:0",
        "h:65536",
        "h:080",
        "a..b:1",
        "-a:1",
        "h",
        "[::1]",
        "[::g]:1",
        "a b:1",
        "unix:path=/tmp/x",
        "tcp:host=h:port=1",
        "a" * 64 + ":1",
        "a" * 250 + "_:1",  # would backtrack for ever with a naive pattern
    ],
)
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="address"):
        parse_address(text)


def test_a_record_holds_few_short_addresses() -> None:
    with pytest.raises(ValueError, match="at most 8"):
        check_addresses(["h:1"] * 9)
    with pytest.raises(ValueError, match="255 bytes"):
        check_addresses([("a." * 130) + "b:1"])
    with pytest.raises(ValueError, match="u64"):
        sign_record(ALICE, 2**64, [])
    assert check_addresses(["h:1"] * 8) == ("h:1",) * 8


def _identities(count: int, start: int = 0) -> list[Identity]:
    return [Identity((start + n).to_bytes(4, "big") * 8) for n in range(count)]


def test_a_sybil_fill_leaves_the_tried_record_in_the_book() -> None:
    """80 short-lived ids sending 16 fresh records each (1,280 records into a
    1,024 book) evict none of the records the node verified by connecting."""
    book = RecordBook(verify=lambda record: True)
    honest, friend = _identities(2, 1_000_000)
    assert book.offer(sign_record(honest, 1, ["192.0.2.1:7010"]), friend.peer_id)
    book.mark_tried(honest.peer_id)  # we dialed it and its handshake passed
    sybils = _identities(80 + 80 * 16)
    for n, sybil in enumerate(sybils[:80]):
        for fresh in sybils[80 + 16 * n : 96 + 16 * n]:
            book.offer(sign_record(fresh, 1, ["203.0.113.9:7010"]), sybil.peer_id)
    assert len(book) == book.limit
    assert book.get(honest.peer_id) is not None
    entry = book.entry(honest.peer_id)
    assert entry is not None and entry.tried and entry.source == friend.peer_id


def test_one_source_and_one_netgroup_hold_only_their_share() -> None:
    book = RecordBook(verify=lambda record: True)
    assert book.share == 128
    first, second, third = _identities(3, 2_000_000)
    for identity in _identities(300):
        book.offer(sign_record(identity, 1, []), first.peer_id)
    assert len(book) == 128  # the newest 128 of its 300
    assert _identities(300)[-1].peer_id in book
    assert _identities(1)[0].peer_id not in book
    # Two sources in one netgroup (one attacker's subnet) share one share.
    groups = {first.peer_id: "a", second.peer_id: "b", third.peer_id: "b"}
    book = RecordBook(verify=lambda record: True)
    book.netgroup = groups.__getitem__
    for n, identity in enumerate(_identities(400, 10_000)):
        book.offer(sign_record(identity, 1, []), (second, third)[n % 2].peer_id)
    for identity in _identities(50, 20_000):
        book.offer(sign_record(identity, 1, []), first.peer_id)
    held = [e.group for e in book.entries()]
    assert held.count("b") == 128 and held.count("a") == 50
    # The application's own records (no source) are not a peer's share.
    for identity in _identities(200, 30_000):
        book.offer(sign_record(identity, 1, []))
    assert len(book) == 128 + 50 + 200


def test_a_newer_record_keeps_its_provenance_and_gains_an_outbound_source() -> None:
    book = RecordBook(verify=lambda record: True)
    book.offer(sign_record(ALICE, 1, ["192.0.2.1:1"]), BOB.peer_id)
    entry = book.entry(ALICE.peer_id)
    assert entry is not None and not entry.outbound and not entry.tried
    book.mark_tried(ALICE.peer_id)
    book.offer(sign_record(ALICE, 2, ["192.0.2.2:1"]), ALICE.peer_id, outbound=True)
    entry = book.entry(ALICE.peer_id)
    assert entry is not None and entry.record.seqno == 2
    assert (entry.source, entry.outbound, entry.tried) == (BOB.peer_id, True, True)
