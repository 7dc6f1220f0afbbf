"""Signed peer records: signed by their peer only, newest wins, bounded."""

from __future__ import annotations

import attrs
import pytest

from blueprint_net._core import records, signatures
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


class _Recording(signatures.NaClBackend):
    """The default curve work, noting each message it verifies."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: list[bytes] = []

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        self.verified.append(message)
        return super().verify(public_key, message, signature)


def test_a_record_verifies_with_the_backend_it_is_given() -> None:
    record = sign_record(ALICE, 3, ["192.0.2.1:7010"])
    backend = _Recording()
    assert record.verifies(backend)
    assert backend.verified == [records.DOMAIN + record.unsigned()]


def test_forgetting_an_unknown_peer_is_harmless() -> None:
    book = RecordBook(verify=lambda record: True)
    book.offer(sign_record(ALICE, 1, []))
    book.forget(BOB.peer_id)
    book.forget(ALICE.peer_id)
    book.forget(ALICE.peer_id)
    assert len(book) == 0 and ALICE.peer_id not in book


def test_with_only_tried_records_the_least_recently_heard_of_goes() -> None:
    """The book shrunk under its tried records (no unverified one left to
    go): the tried record heard of longest ago is evicted, not a newer one."""
    book = RecordBook(limit=3, verify=lambda record: True)
    first, second, third = _identities(3, 3_000_000)
    for identity in (first, second, third):
        book.offer(sign_record(identity, 1, []), BOB.peer_id)
        book.mark_tried(identity.peer_id)
    book.limit = 2
    assert book.offer(sign_record(first, 2, []), BOB.peer_id)  # heard anew
    assert [e.record.peer_id for e in book.entries()] == [
        third.peer_id,
        first.peer_id,
    ]
    assert all(e.tried for e in book.entries())


def test_address_boundaries() -> None:
    assert parse_address("h:1") == ("h", 1)
    assert parse_address("h:65535") == ("h", 65535)
    name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    assert check_addresses([name + ":1"]) == (name + ":1",)  # 255 bytes
    with pytest.raises(ValueError, match="255 bytes"):
        check_addresses([name + ":12"])  # 256 bytes
    with pytest.raises(ValueError, match="255 bytes"):  # bytes, not characters
        check_addresses(["\u00e9" * 127 + ":1"])
    assert sign_record(ALICE, 0, []).seqno == 0
    assert sign_record(ALICE, 2**64 - 1, []).verifies()
    with pytest.raises(ValueError, match="u64"):
        sign_record(ALICE, -1, [])


def test_our_own_records_are_never_outbound() -> None:
    """``outbound`` is a peer we dialed: a record the application offers
    (no source) is not one, even when told so."""
    book = RecordBook(verify=lambda record: True)
    book.offer(sign_record(ALICE, 1, []), outbound=True)
    entry = book.entry(ALICE.peer_id)
    assert entry is not None and (entry.source, entry.group) == (None, None)
    assert not entry.outbound
    book.offer(sign_record(ALICE, 2, []), outbound=True)
    entry = book.entry(ALICE.peer_id)
    assert entry is not None and entry.record.seqno == 2 and not entry.outbound
    book.offer(sign_record(BOB, 1, []), ALICE.peer_id, outbound=True)
    entry = book.entry(BOB.peer_id)
    assert entry is not None and entry.outbound and entry.source == ALICE.peer_id


def test_the_share_is_an_eighth_of_the_book() -> None:
    assert RecordBook(limit=20).share == 2
    assert RecordBook(limit=7).share == 1
    book = RecordBook(limit=20, verify=lambda record: True)
    batch = _identities(3, 4_000_000)
    for identity in batch:
        book.offer(sign_record(identity, 1, []), BOB.peer_id)
    assert [e.record.peer_id for e in book.entries()] == [i.peer_id for i in batch[1:]]


def test_a_sources_tried_records_are_not_its_share() -> None:
    book = RecordBook(limit=16, verify=lambda record: True)
    tried = _identities(2, 5_000_000)
    for identity in tried:
        book.offer(sign_record(identity, 1, []), BOB.peer_id)
        book.mark_tried(identity.peer_id)
    fresh = _identities(2, 6_000_000)
    for identity in fresh:
        book.offer(sign_record(identity, 1, []), BOB.peer_id)
    held = {e.record.peer_id for e in book.entries()}
    assert held == {i.peer_id for i in tried + fresh}
    # The application's records are no source's share either.
    book.offer(sign_record(ALICE, 1, []))
    more = _identities(1, 7_000_000)[0]
    book.offer(sign_record(more, 1, []), BOB.peer_id)
    held = {e.record.peer_id for e in book.entries()}
    assert ALICE.peer_id in held and fresh[0].peer_id not in held


def test_a_full_book_evicts_the_oldest_of_the_source_holding_the_most() -> None:
    book = RecordBook(limit=16, verify=lambda record: True)
    assert book.share == 2
    oldest, *crowd = _identities(3, 8_000_000)
    book.offer(sign_record(oldest, 1, []), ALICE.peer_id)
    book.mark_tried(oldest.peer_id)
    for identity in crowd:
        book.offer(sign_record(identity, 1, []), BOB.peer_id)
    singles = _identities(13, 8_100_000)
    sources = _identities(14, 8_200_000)
    for identity, source in zip(singles, sources):
        book.offer(sign_record(identity, 1, []), source.peer_id)
    assert len(book) == 16
    # Full: BOB holds the most untried records (2), so BOB's oldest goes:
    # not the oldest record (tried), nor any single source's.
    extra = _identities(1, 8_300_000)[0]
    book.offer(sign_record(extra, 1, []), sources[13].peer_id)
    held = [e.record.peer_id for e in book.entries()]
    assert held[:2] == [oldest.peer_id, crowd[1].peer_id]
    assert held[2:] == [i.peer_id for i in singles] + [extra.peer_id]


def test_a_bad_address_says_what_was_wrong() -> None:
    """The message names the fault (an operator's ``--advertise`` typo)."""
    with pytest.raises(ValueError, match=r"'\[1::2::3\]:7': not an IPv6 address"):
        parse_address("[1::2::3]:7")
