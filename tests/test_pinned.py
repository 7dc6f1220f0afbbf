"""Security properties that a mutation review found unpinned: each test here
fails when the one-line bug it names is put back (``docs/testing.md``)."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from pathlib import Path
from typing import Any, Optional, cast

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import connectProtocol
from twisted.internet.task import Clock
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface.exceptions import BrokenMethodImplementation
from zope.interface.verify import verifyObject

from blueprint_net._adapters.dispatch import Dispatcher, FunctionHandler
from blueprint_net._adapters.interfaces import IRequestHandler
from blueprint_net._adapters.node import Node
from blueprint_net._adapters.peers import PeerTable
from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._core import framing, signatures, wire
from blueprint_net._core.errors import (
    ErrorCode,
    HandshakeError,
    HandshakeFailed,
    NotConnected,
    Refused,
    RemoteError,
    RequestTimeout,
    WireError,
)
from blueprint_net._core.handshake import Handshake
from blueprint_net._core.handshake_states import HandshakeState
from blueprint_net._core.handshake_transcripts import transcript
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.messaging import (
    Deadlines,
    IncomingRequest,
    Requests,
)
from blueprint_net._core.records import sign_record
from blueprint_net._policy import addresses
from blueprint_net._policy.bans import Ban, BanRegistry, Origin
from blueprint_net._policy.limits import (
    ConnectionLimiter,
    ConnectionLimits,
    Slot,
    TokenBucket,
)
from blueprint_net._policy.scores import Policy, PolicySettings
from blueprint_net._policy.settings import Settings
from blueprint_net.testing import MemoryNetwork
from tests.helpers import MakeNode, until
from tests.test_testing import Raw

# -- the handshake (the plain-TCP machine's public behaviour) ---------------


def _refusal(handshake: Handshake, message: wire.Message) -> ErrorCode:
    with pytest.raises(HandshakeFailed) as caught:
        handshake.receive(message)
    assert handshake.state is HandshakeState.FAILED
    assert caught.value.message  # the peer is told why, in words
    return caught.value.code


@pytest.mark.parametrize("initiator", [True, False])
@pytest.mark.parametrize("offset", [-1, +1])
def test_an_older_or_newer_version_is_incompatible(
    alice: Identity, bob: Identity, initiator: bool, offset: int
) -> None:
    """Not BAD_SIGNATURE later on (which would score an honest old peer as
    misbehaving): the version check is equality, both ways."""
    ours = wire.PROTOCOL_VERSION + 1  # room for an older one
    handshake = Handshake(alice, initiator=initiator, version=ours)
    handshake.start()
    hello = wire.Hello(ours + offset, bytes(32), bob.peer_id)
    assert _refusal(handshake, hello) is ErrorCode.INCOMPATIBLE_VERSION


def test_the_default_version_refuses_version_zero(
    alice: Identity, bob: Identity
) -> None:
    handshake = Handshake(alice, initiator=False)
    handshake.start()
    hello = wire.Hello(wire.PROTOCOL_VERSION - 1, bytes(32), bob.peer_id)
    assert _refusal(handshake, hello) is ErrorCode.INCOMPATIBLE_VERSION


#: Keys no signature may verify under: small order, and non-canonical.
_UNACCEPTABLE_KEYS = [
    (1).to_bytes(32, "little"),  # the identity
    (2**255 - 19).to_bytes(32, "little"),  # y = p
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
]


@pytest.mark.parametrize("key", _UNACCEPTABLE_KEYS, ids=lambda k: k.hex()[:8])
@pytest.mark.parametrize("initiator", [True, False])
def test_an_unacceptable_key_is_the_wrong_key(
    bob: Identity, key: bytes, initiator: bool
) -> None:
    """A peer whose claimed id *is* a small-order or non-canonical key gets
    WRONG_KEY from the key check, before any signature work."""
    claimed = PeerId.from_public_key(key)
    handshake = Handshake(bob, initiator=initiator)
    handshake.start()
    replies = handshake.receive(wire.Hello(wire.PROTOCOL_VERSION, bytes(32), claimed))
    proof: wire.Message
    if initiator:
        assert isinstance(replies[0], wire.HandshakeRequest)
        proof = wire.HandshakeResponse(key, bytes(64))
    else:
        proof = wire.HandshakeRequest(key, bytes(64))
    assert _refusal(handshake, proof) is ErrorCode.WRONG_KEY


def test_a_bad_signature_says_so(alice: Identity, bob: Identity) -> None:
    handshake = Handshake(bob, initiator=False)
    handshake.start()
    handshake.receive(wire.Hello(wire.PROTOCOL_VERSION, bytes(32), alice.peer_id))
    proof = wire.HandshakeRequest(alice.public_key, bytes(64))
    assert _refusal(handshake, proof) is ErrorCode.BAD_SIGNATURE


# -- addresses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("::ffff:0:0/96", "0.0.0.0/0"),  # every IPv4 address, mapped
        ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
        ("::ffff:192.0.2.1", "192.0.2.1/32"),
        ("::ffff:192.0.2.1/128", "192.0.2.1/32"),
    ],
)
def test_ipv4_mapped_networks_are_ipv4(text: str, network: str) -> None:
    assert addresses.parse_network(text) == ipaddress.ip_network(network)


def test_a_ban_on_the_mapped_range_covers_every_ipv4_host() -> None:
    bans = BanRegistry(Clock())
    bans.ban(addresses.parse_target("::ffff:0:0/96"), "all of IPv4")
    for host in ("192.0.2.1", "::ffff:198.51.100.7", "10.1.2.3"):
        assert bans.address_ban(host) is not None, host
    assert bans.address_ban("2001:db8::1") is None


def test_a_mapped_network_shorter_than_96_stays_ipv6() -> None:
    assert addresses.parse_network("::ffff:0:0/95") == ipaddress.ip_network(
        "::fffe:0:0/95"
    )


# -- misbehaviour points -----------------------------------------------------

#: What one offence costs (the ban threshold is 100): a failed proof is worse
#: than a garbled frame.  Written out here, not read from ``POINTS``.
_POINTS = {
    ErrorCode.UNKNOWN_MESSAGE_TYPE: 20,
    ErrorCode.TRUNCATED: 20,
    ErrorCode.TRAILING_BYTES: 20,
    ErrorCode.INVALID_UTF8: 20,
    ErrorCode.OUT_OF_RANGE: 20,
    ErrorCode.FRAME_TOO_LARGE: 20,
    ErrorCode.UNEXPECTED_MESSAGE: 20,
    ErrorCode.BAD_SIGNATURE: 50,
    ErrorCode.WRONG_KEY: 50,
    ErrorCode.SELF_CONNECTION: 50,
    ErrorCode.STREAM_SEQUENCE: 20,
    ErrorCode.STREAM_ACK: 20,
    ErrorCode.STREAM_LIMIT: 20,
}


@pytest.mark.parametrize("code", list(_POINTS), ids=lambda c: c.name)
def test_each_offence_costs_its_points(alice: Identity, code: ErrorCode) -> None:
    policy = Policy(BanRegistry(Clock()))
    assert policy.misbehaved("192.0.2.1", alice.peer_id, code) == []
    assert policy.score("192.0.2.1") == _POINTS[code]
    assert policy.score(alice.peer_id) == _POINTS[code]


def test_the_misbehaviour_codes_are_the_scored_ones() -> None:
    from blueprint_net._core.connection_events import MISBEHAVIOUR

    assert set(_POINTS) == MISBEHAVIOUR


# -- connection limits ------------------------------------------------------


def test_rate_buckets_past_the_cap_drop_only_the_full_ones() -> None:
    """Past 4,096 subnets, idle (full) buckets go; a drained one stays, or
    a flood from many subnets would reset a hostile subnet's rate limit."""
    clock = Clock()
    limiter = ConnectionLimiter(
        ConnectionLimits(connect_rate=1.0, connect_burst=2, max_per_subnet=100),
        clock,
    )
    cap = ConnectionLimiter._MAX_BUCKETS
    hostile = "198.51.100.1"
    assert limiter.refusal(hostile, True, limiter.subnet(hostile)) is None
    assert limiter.refusal(hostile, True, limiter.subnet(hostile)) is None
    assert limiter.refusal(hostile, True, limiter.subnet(hostile)) == "rate"
    for i in range(1, cap):  # cap - 1 more subnets, each one token spent
        host = str(ipaddress.IPv4Address(0x0A000000 + i))
        assert limiter.refusal(host, True, limiter.subnet(host)) is None
    assert len(limiter._buckets) == cap
    clock.advance(1.0)  # the others refill to 2 (full); the hostile one to 1
    newcomer = "203.0.113.9"
    assert limiter.refusal(newcomer, True, limiter.subnet(newcomer)) is None
    assert len(limiter._buckets) == 2  # the hostile one and the newcomer
    assert limiter.refusal(hostile, True, limiter.subnet(hostile)) is None
    assert limiter.refusal(hostile, True, limiter.subnet(hostile)) == "rate"


def test_rate_buckets_under_the_cap_are_kept() -> None:
    clock = Clock()
    limiter = ConnectionLimiter(ConnectionLimits(connect_burst=1), clock)
    for i in range(ConnectionLimiter._MAX_BUCKETS - 1):
        host = str(ipaddress.IPv4Address(0x0A000000 + i))
        limiter.refusal(host, True, limiter.subnet(host))
    clock.advance(60.0)  # all full again
    limiter.refusal("203.0.113.9", True, limiter.subnet("203.0.113.9"))
    assert len(limiter._buckets) == ConnectionLimiter._MAX_BUCKETS


# -- request ids --------------------------------------------------------------


def test_request_ids_wrap_without_ever_using_zero() -> None:
    """0 is the fire-and-forget id: a response to it would never be matched."""
    requests: Requests[int] = Requests()
    top = 2**32 - 1
    requests._next_id = top - 3
    ids = [requests.request(i) for i in range(6)]
    assert ids == [top - 3, top - 2, top - 1, top, 1, 2]


def test_the_skip_over_ids_in_flight_wraps_without_zero() -> None:
    requests: Requests[int] = Requests()
    top = 2**32 - 1
    for start in (top - 1, top):
        requests._next_id = start
        requests.request(start)
    requests._next_id = top - 1  # both top - 1 and top are in flight
    assert requests.request(0) == 1
    assert requests.request(0) == 2


# -- nodes: per-peer limit and who is scored ---------------------------------


def test_notify_all_sends_the_metadata() -> None:
    seen: list[tuple[bytes, Optional[bytes]]] = []

    def note(request: IncomingRequest) -> None:
        seen.append((request.payload, request.metadata))

    with MemoryNetwork() as net:
        a = net.add_node()
        b = net.add_node(handlers={"note": note})
        net.connect(a, b)
        assert a.notify_all("note", b"p", b"m") == [b.peer_id]
        assert a.notify_all("note", b"q", peers=[b.peer_id, a.peer_id]) == [b.peer_id]
        net.pump()
        assert seen == [(b"p", b"m"), (b"q", None)]


# -- signature backends -------------------------------------------------------


@pytest.mark.parametrize("name", signatures.available_backends())
def test_a_fresh_backend_signs_verifies_and_refuses(name: str) -> None:
    """A new instance, not the cached one: its own setup is what runs."""
    backend: signatures.ISignatureBackend = {
        "pynacl": signatures.NaClBackend,
        "ed25519": signatures.Ed25519Backend,
    }[name]()
    public, key = backend.load(bytes(range(32)))
    signature = backend.sign(key, b"m")
    assert backend.verify(public, b"m", signature)
    assert not backend.verify(public, b"n", signature)  # bad signature: False
    assert not backend.verify(public, b"m", signature[:10])  # malformed: False


# -- the handshake ------------------------------------------------------------


def test_a_local_failure_is_recorded(alice: Identity) -> None:
    handshake = Handshake(alice, initiator=True)
    handshake.start()
    failure = handshake.timed_out()
    assert failure.code is ErrorCode.HANDSHAKE_TIMEOUT
    assert handshake.failure is failure


# -- request ids --------------------------------------------------------------


def test_abandoning_an_unknown_request_is_harmless() -> None:
    requests: Requests[str] = Requests()
    assert requests.abandon(12345) is None


# -- scores -------------------------------------------------------------------


def test_a_host_that_is_not_an_address_has_no_score() -> None:
    assert Policy(BanRegistry(Clock())).score("not-an-address") == 0.0


def test_a_ban_starts_the_score_afresh_and_says_why(alice: Identity) -> None:
    policy = Policy(BanRegistry(Clock()))
    policy.misbehaved(None, alice.peer_id, ErrorCode.BAD_SIGNATURE)
    [ban] = policy.misbehaved(None, alice.peer_id, ErrorCode.WRONG_KEY)
    assert "WRONG_KEY" in ban.reason
    assert policy.score(alice.peer_id) == 0.0


# -- token buckets ------------------------------------------------------------


def test_a_bucket_is_full_once_refilled_at_its_rate() -> None:
    bucket = TokenBucket(rate=4.0, burst=2, now=100.0)
    assert bucket.take(100.0)  # one token left
    assert not bucket.full(100.2)  # 1 + 0.8
    assert bucket.full(100.25)  # 1 + 4 * 0.25


# -- the ban registry ---------------------------------------------------------


def test_change_callbacks_say_whether_a_ban_was_lifted() -> None:
    registry = BanRegistry(Clock())
    seen: list[tuple[str, bool]] = []
    registry.on_change(lambda ban, lifted: seen.append((str(ban.target), lifted)))
    registry.ban("192.0.2.0/24", "test")
    assert registry.unban("192.0.2.0/24")
    assert seen == [("192.0.2.0/24", False), ("192.0.2.0/24", True)]


def test_unbanning_what_is_not_banned_is_false_and_leaves_nothing() -> None:
    registry = BanRegistry(Clock())
    assert not registry.unban("192.0.2.0/24")  # no ban of that prefix length
    registry.ban("192.0.2.0/24", "test")
    assert not registry.unban("198.51.100.0/24")  # same length, other network
    assert registry.unban("192.0.2.0/24")
    assert registry._networks == {}  # no empty index left behind


def test_reconcile_counts_each_change_and_announces_active_bans(
    alice: Identity, bob: Identity
) -> None:
    clock = Clock()
    clock.advance(1000.0)
    registry = BanRegistry(clock)
    announced: list[Ban] = []
    registry.on_ban(announced.append)
    kept = registry.ban(alice.peer_id, "kept")
    registry.ban("192.0.2.0/24", "dropped by the other writer")
    announced.clear()
    new = Ban(bob.peer_id, "new", 990.0, Origin.MANUAL, 2000.0)
    net = ipaddress.ip_network("198.51.100.0/24")
    expired = Ban(net, "expired", 10.0, Origin.MANUAL, 20.0)
    assert registry.reconcile([kept, new, expired]) == 3  # one gone, two new
    assert sorted(map(str, (b.target for b in registry._every()))) == sorted(
        [str(alice.peer_id), str(bob.peer_id), "198.51.100.0/24"]
    )
    assert announced == [new]  # the expired one no longer applies
    assert registry.reconcile([kept, new, expired]) == 0


# -- the peer table -----------------------------------------------------------


@attrs.define(eq=False)
class _Conn:
    """What the peer table reads of a connection."""

    peer_id: PeerId
    session_key: bytes


def _conn(peer: PeerId, key: bytes) -> PeerProtocol:
    return cast(PeerProtocol, _Conn(peer, key))


def test_the_peer_table_keeps_one_connection_per_peer(alice: Identity) -> None:
    table = PeerTable()
    first, better, worse = (_conn(alice.peer_id, k) for k in (b"m", b"a", b"z"))
    for conn in (first, better, worse):
        table.opened(conn)
    assert table.budget(alice.peer_id) is None  # not verified yet
    bucket = TokenBucket(1.0, 1, 0.0)
    outcome = table.verified(first, lambda: bucket)
    assert (outcome.new, outcome.dropped) == (True, None)
    outcome = table.verified(better, lambda: None)  # the smaller key wins
    assert (outcome.new, outcome.dropped) == (False, first)
    outcome = table.verified(worse, lambda: None)  # loses: newcomer dropped
    assert (outcome.new, outcome.dropped) == (False, worse)
    assert table[alice.peer_id] is better
    assert table.budget(alice.peer_id) is bucket  # the first one's, kept
    assert table.connections_of(alice.peer_id) == 3
    assert not table.closed(worse) and table.closed(better)
    assert table.get(alice.peer_id) is None


# -- wire: the encoder refuses what the decoder would --------------------------


@pytest.mark.parametrize("kind", [wire.HandshakeRequest, wire.HandshakeResponse])
@pytest.mark.parametrize(("key", "sig"), [(31, 64), (33, 64), (32, 63), (32, 65)])
def test_a_proof_of_the_wrong_size_is_not_encoded(
    kind: type[wire.HandshakeRequest], key: int, sig: int
) -> None:
    with pytest.raises(ValueError, match="32 bytes and a signature 64"):
        wire.encode(kind(bytes(key), bytes(sig)))
    assert wire.decode(wire.encode(kind(bytes(32), bytes(64)))) == kind(
        bytes(32), bytes(64)
    )


# -- the node facade ----------------------------------------------------------


def test_a_ban_through_the_node_expires(alice: Identity) -> None:
    with MemoryNetwork() as net:
        a = net.add_node()
        ban = a.ban(alice.peer_id, "a while", duration=60.0)
        assert ban.expires == 60.0
        assert a.bans.peer_ban(alice.peer_id) is not None
        net.advance(60.0)
        assert a.bans.peer_ban(alice.peer_id) is None
        assert a.ban(alice.peer_id, "for good").expires is None


def test_broadcasts_reach_only_the_peers_named_and_carry_metadata() -> None:
    seen: list[tuple[str, bytes, Optional[bytes]]] = []

    def handlers(name: str) -> dict[str, object]:
        def note(request: IncomingRequest) -> bytes:
            seen.append((name, request.payload, request.metadata))
            return b"ok"

        return {"note": note}

    with MemoryNetwork() as net:
        a = net.add_node()
        b = net.add_node(handlers=handlers("b"))  # type: ignore[arg-type]
        c = net.add_node(handlers=handlers("c"))  # type: ignore[arg-type]
        for other in (b, c):
            net.connect(a, other)
        stranger = Identity(bytes(range(200, 232))).peer_id
        outcomes = net.result(
            a.broadcast("note", b"1", b"m", peers=[stranger, c.peer_id])
        )
        assert set(outcomes) == {stranger, c.peer_id}
        assert outcomes[c.peer_id].ok and not outcomes[stranger].ok
        assert a.notify_all("note", b"2", peers=[stranger, b.peer_id]) == [b.peer_id]
        a.notify(b.peer_id, "note", b"3", b"n")
        net.pump()
        assert sorted(seen) == [("b", b"2", None), ("b", b"3", b"n"), ("c", b"1", b"m")]
        # The one connected peer asked, plus the two notifications (each is
        # in the peer's "requests out", so in the metric too: issue 23 item 7).
        assert a.counters["requests.out.note"] == 3


def test_an_unregistered_protocol_is_unknown() -> None:
    with MemoryNetwork() as net:
        a = net.add_node()
        b = net.add_node(handlers={"echo": lambda request: request.payload})
        net.connect(a, b)
        assert net.result(a.request(b.peer_id, "echo", b"x")).data == b"x"
        b.unregister("echo")
        with pytest.raises(RemoteError) as refused:
            net.result(a.request(b.peer_id, "echo", b"x"))
        assert refused.value.code == ErrorCode.UNKNOWN_PROTOCOL


def test_a_request_rate_of_zero_is_no_limit() -> None:
    with MemoryNetwork() as net:
        a = net.add_node()
        b = net.add_node(
            handlers={"echo": lambda request: request.payload},
            limits=ConnectionLimits(request_rate=0, request_burst=2),
        )
        net.connect(a, b)
        replies = [a.request(b.peer_id, "echo", b"x") for _ in range(5)]
        assert all(net.result(reply).data == b"x" for reply in replies)


def test_a_keepalive_interval_under_a_second_runs() -> None:
    with MemoryNetwork() as net:
        a = net.add_node(settings=Settings(keepalive_interval=0.5))
        b = net.add_node()
        net.connect(a, b)
        assert any(call.getTime() == 0.5 for call in net.clock.getDelayedCalls())


def test_refusals_are_counted_each_time(alice: Identity) -> None:
    with MemoryNetwork() as net:
        a = net.add_node()
        b = net.add_node(limits=ConnectionLimits(max_per_peer=1))
        net.connect(a, b)
        for _ in range(2):
            with pytest.raises(HandshakeError):
                net.result(a.connect(net.endpoint(b, source=a)))
        assert b.counters["refused.peer"] == 2
        a.ban(alice.peer_id, "test")
        for _ in range(2):
            with pytest.raises(Refused):
                net.result(a.connect(net.endpoint(b, source=a), peer_id=alice.peer_id))
        assert a.counters["refused.banned"] == 2


def test_outbound_dials_are_not_rate_limited() -> None:
    """The connection rate limit is for strangers dialing in; a node's own
    dials (and kept dials) count against the other limits only."""
    with MemoryNetwork() as net:
        a = net.add_node(limits=ConnectionLimits(connect_rate=0.001, connect_burst=1))
        others = [net.add_node(host="192.0.2.1") for _ in range(4)]  # one host
        for other in others[:2]:
            net.connect(a, other)
        for other in others[2:]:
            kept = net.endpoint(other, source=a).connect(a.dial_factory(other.peer_id))
            net.result(kept)
            net.pump()
        assert len(a.peers) == 4
        assert a.counters["refused.rate"] == 0


# -- the dispatcher -----------------------------------------------------------


def _dispatcher(**handlers: Any) -> Dispatcher:
    return Dispatcher(Clock(), Counter(), handlers=handlers)


def _serve(
    dispatcher: Dispatcher,
    protocol: str,
    payload: bytes = b"",
    *,
    stopping: bool = False,
) -> wire.Response:
    sent: list[wire.Response] = []
    request = wire.Request(7, protocol, payload)
    peer_id = Identity(bytes(range(32))).peer_id
    dispatcher.serve(request, peer_id, sent.append, budget=None, stopping=stopping)
    [response] = sent
    return response


def test_protocol_names_are_1_to_255_bytes() -> None:
    dispatcher = _dispatcher()
    dispatcher.register("x" * 255, lambda request: None)
    for bad in ("", "x" * 256, "é" * 128):
        with pytest.raises(ValueError, match="1 to 255 bytes"):
            dispatcher.register(bad, lambda request: None)


def test_refusals_and_requests_are_counted_each_time() -> None:
    dispatcher = _dispatcher(echo=lambda request: request.payload)
    for _ in range(2):
        assert _serve(dispatcher, "echo", b"a") == wire.ProtocolResponse(7, b"a")
        stopped = _serve(dispatcher, "echo", stopping=True)
        assert stopped == wire.ErrorResponse(
            7, ErrorCode.SHUTTING_DOWN, "the node is stopping"
        )
        unknown = _serve(dispatcher, "nope")
        assert isinstance(unknown, wire.ErrorResponse)
        assert unknown.code == ErrorCode.UNKNOWN_PROTOCOL
    assert dispatcher.counters == {
        "requests.in.echo": 2,
        "requests.refused.echo.SHUTTING_DOWN": 2,
        "requests.refused.unknown.UNKNOWN_PROTOCOL": 2,
    }


def test_a_plain_callable_is_a_request_handler_through_its_adapter() -> None:
    adapted = FunctionHandler(lambda request: request.payload, max_payload=None)
    assert verifyObject(IRequestHandler, adapted)
    with pytest.raises(BrokenMethodImplementation):
        verifyObject(
            IRequestHandler, FunctionHandler(cast(Any, lambda: b""), max_payload=None)
        )


def test_a_peer_past_its_request_budget_is_told_to_slow_down() -> None:
    dispatcher = _dispatcher(echo=lambda request: request.payload)
    budget = TokenBucket(rate=1.0, burst=1.0, now=0.0)  # one now, the next in 1 s
    request = wire.Request(7, "echo", b"a")
    peer_id = Identity(bytes(range(32))).peer_id
    sent: list[wire.Response] = []
    for _ in range(2):
        dispatcher.serve(request, peer_id, sent.append, budget=budget, stopping=False)
    assert sent == [
        wire.ProtocolResponse(7, b"a"),
        wire.ErrorResponse(7, ErrorCode.RATE_LIMITED, "too many requests; slow down"),
    ]
    assert dispatcher.counters["requests.refused.echo.RATE_LIMITED"] == 1


@pytest.mark.parametrize(
    ("code", "passed_on"), [(299, False), (300, True), (0xFFFF, True), (0x10000, False)]
)
@pytest.mark.parametrize("later", [False, True])
def test_a_handlers_remote_error_is_passed_on_only_with_a_request_code(
    code: int, passed_on: bool, later: bool
) -> None:
    def handler(request: IncomingRequest) -> Any:
        if later:
            return defer.fail(RemoteError(code, "said so"))
        raise RemoteError(code, "said so")

    response = _serve(_dispatcher(h=handler), "h")
    if passed_on:
        assert response == wire.ErrorResponse(7, code, "said so")
    else:
        assert response == wire.ErrorResponse(
            7, ErrorCode.HANDLER_ERROR, "the handler failed"
        )


# -- messaging bounds -----------------------------------------------------------


def test_the_deadline_heap_stays_within_twice_the_live_plus_64() -> None:
    deadlines = Deadlines()
    deadlines.add(1, 1000.0)  # one request stays in flight throughout
    sizes = []
    for request_id in range(2, 300):  # each answered at once (lazy deletion)
        deadlines.add(request_id, float(request_id))
        sizes.append(len(deadlines._heap))
        deadlines.discard(request_id)
    deadlines.discard(12345)  # unknown: harmless
    assert max(sizes) == 2 * 2 + 64  # two live entries when the bound is checked
    assert min(sizes) == 2  # rebuilt from the live entries
    assert deadlines.earliest() == 1000.0


class _AllInFlight(dict):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return 2**32 - 1


def test_no_id_is_allocated_when_every_id_is_in_flight() -> None:
    requests: Requests[int] = Requests()
    requests.pending = _AllInFlight()
    with pytest.raises(RuntimeError, match=r"^every request id is in flight$"):
        requests.request(1)
    assert requests.request(None) == wire.NO_RESPONSE


def test_a_duplicate_request_id_is_refused_by_id() -> None:
    requests: Requests[int] = Requests()
    assert requests.request_received(wire.Request(7, "p", b"")) is None
    assert requests.request_received(wire.Request(7, "p", b"")) == wire.ErrorResponse(
        7, ErrorCode.DUPLICATE_REQUEST_ID, "request 7 is already in flight"
    )


def test_a_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=4.0, burst=2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0) and not bucket.take(0.0)
    assert not bucket.take(0.2)  # 0.8 of a token
    assert bucket.take(0.25)  # 4 per second: one more by 0.25 s


# -- backends are made once; handshake inputs ------------------------------------


def test_a_backend_is_made_once_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signatures, "_instances", {})
    backend = signatures.get_backend("pynacl")
    assert isinstance(backend, signatures.NaClBackend)
    assert signatures.get_backend("pynacl") is backend
    assert signatures._instances == {"pynacl": backend}


def test_the_transcript_is_the_documented_concatenation(
    alice: Identity, bob: Identity
) -> None:
    signed = transcript(2, 1, alice.peer_id, b"n" * 32, bob.peer_id, b"m" * 32, b"cb")
    a, b = alice.peer_id.binary, bob.peer_id.binary
    assert signed == (
        b"blueprint-net/handshake/v1\x00\x02\x00\x01"
        + bytes([len(a)]) + a + b"n" * 32
        + bytes([len(b)]) + b + b"m" * 32
        + b"\x02cb"
    )  # fmt: skip


def test_a_given_nonce_is_used_and_a_self_connection_says_so(alice: Identity) -> None:
    handshake = Handshake(alice, initiator=False, nonce=b"n" * 32)
    [hello] = handshake.start()
    assert hello == wire.Hello(wire.PROTOCOL_VERSION, b"n" * 32, alice.peer_id)
    code = _refusal(
        handshake, wire.Hello(wire.PROTOCOL_VERSION, b"m" * 32, alice.peer_id)
    )
    assert code is ErrorCode.SELF_CONNECTION


@pytest.mark.parametrize("host", ["fe80::1%eth0", "fe80::1%a%b", "::ffff:192.0.2.1%x"])
def test_a_scope_is_dropped(host: str) -> None:
    unscoped = ipaddress.ip_address(host.split("%", maxsplit=1)[0])
    expected = getattr(unscoped, "ipv4_mapped", None) or unscoped
    parsed = addresses.parse_address(host)
    assert parsed == expected and getattr(parsed, "scope_id", None) is None


# -- scoring and bans of verified peers -------------------------------------------


def test_a_host_that_is_not_an_address_is_not_allowed() -> None:
    policy = Policy(BanRegistry(Clock()), allowed_networks=["0.0.0.0/0"])
    assert policy.is_allowed("192.0.2.1") and not policy.is_allowed("not-an-address")


def test_reconcile_counts_every_ban_gone(alice: Identity, bob: Identity) -> None:
    registry = BanRegistry(Clock())
    registry.ban(alice.peer_id, "a")
    registry.ban(bob.peer_id, "b")
    assert registry.reconcile([]) == 2


def test_the_first_request_id_is_1() -> None:
    requests: Requests[str] = Requests()
    assert requests.request("t") == 1


# -- what the dispatcher logs and says ------------------------------------------


def _logged(dispatcher: Dispatcher) -> list[dict[str, Any]]:
    """The dispatcher's log events, caught on the instance (no global observer)."""
    events: list[dict[str, Any]] = []
    dispatcher._log = Logger(observer=cast(ILogObserver, events.append))
    return events


def test_a_handler_returning_the_wrong_type_is_logged_with_whom_and_what() -> None:
    dispatcher = _dispatcher(odd=lambda request: 3)
    events = _logged(dispatcher)
    response = _serve(dispatcher, "odd")
    assert response == wire.ErrorResponse(
        7, ErrorCode.HANDLER_ERROR, "the handler failed"
    )
    [event] = events
    assert event["log_level"] is LogLevel.error
    assert formatEvent(event) == "handler for 'odd' returned int, not bytes or None"
    assert event["peer_id"] == str(Identity(bytes(range(32))).peer_id)


@pytest.mark.parametrize("later", [False, True])
def test_a_failing_handler_is_logged_with_whom_and_its_traceback(later: bool) -> None:
    def handler(request: IncomingRequest) -> Any:
        if later:
            return defer.fail(KeyError("secret"))
        raise KeyError("secret")

    dispatcher = _dispatcher(h=handler)
    events = _logged(dispatcher)
    response = _serve(dispatcher, "h")
    assert response == wire.ErrorResponse(
        7, ErrorCode.HANDLER_ERROR, "the handler failed"
    )
    [event] = events
    peer = str(Identity(bytes(range(32))).peer_id)
    assert event["log_level"] is LogLevel.critical
    assert event["log_failure"].check(KeyError)
    assert formatEvent(event) == f"handler for 'h' failed on a request from {peer}"
    assert event["protocol"] == "h" and event["peer_id"] == peer


def test_registering_what_is_not_a_handler_says_what_it_was() -> None:
    with pytest.raises(TypeError, match=r"^42 is not a request handler$"):
        _dispatcher().register("p", cast(Any, 42))


def test_unregister_removes_only_that_protocol_and_forgets_the_unknown() -> None:
    dispatcher = _dispatcher(a=lambda request: None, b=lambda request: None)
    dispatcher.unregister("a")
    dispatcher.unregister("never-registered")
    assert dispatcher.protocols == ["b"]
    assert _serve(dispatcher, "a").code == ErrorCode.UNKNOWN_PROTOCOL  # type: ignore[union-attr]


# -- what the node logs, counts and says ----------------------------------------


def _formatted(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(event) for event in events]


def test_the_node_logs_where_it_listens_and_whom_it_lost(
    node_log: list[dict[str, Any]],
) -> None:
    with MemoryNetwork() as net:
        a, b = net.add_node(), net.add_node()
        host, port = a.listening_addresses[0]
        listening = [e for e in node_log if e["log_format"].startswith("listening")]
        [event] = [e for e in listening if f" {host}:" in formatEvent(e)]
        # host:port ([host]:port for IPv6), not the address's repr (issue 23,
        # item 6).
        assert formatEvent(event) == f"listening on {host}:{port}"
        net.connect(b, a)
        net.result(b.disconnect(a.peer_id))
        net.pump()
        [lost] = [e for e in node_log if e.get("peer_id") == str(a.peer_id)]
        assert isinstance(lost["reason"], str) and lost["reason"]
        assert formatEvent(lost) == f"peer {a.peer_id} lost: {lost['reason']}"
        assert lost["address"] == f"{net.host(a)}:{port}"


def test_notify_all_skips_a_full_queue_with_a_warning_and_goes_on(
    node_log: list[dict[str, Any]],
) -> None:
    with MemoryNetwork() as net:
        a = net.add_node(settings=Settings(max_send_queue=1000))
        b, c = net.add_node(), net.add_node()
        net.connect(a, b)
        net.connect(a, c)
        a._peers[b.peer_id].outbound.pauseProducing()  # b's transport is full
        payload = bytes(600)
        assert a.notify_all("x", payload, peers=[b.peer_id]) == [b.peer_id]
        order = [b.peer_id, c.peer_id]
        assert a.notify_all("x", payload, peers=order) == [c.peer_id]
        [event] = [e for e in node_log if e["log_format"].startswith("not sent")]
        error = event["error"]
        assert isinstance(error, str) and "not reading" in error
        assert formatEvent(event) == f"not sent to {b.peer_id}: {error}"


def test_not_connected_says_to_whom(alice: Identity) -> None:
    with MemoryNetwork() as net:
        a = net.add_node()
        expected = f"^no verified connection to {alice.peer_id}$"
        with pytest.raises(NotConnected, match=expected):
            a.notify(alice.peer_id, "x", b"")
        failed = a.request(alice.peer_id, "x", b"")
        failure: list[Failure] = []
        failed.addErrback(failure.append)
        [reason] = failure
        assert reason.check(NotConnected)
        assert re.match(expected, str(reason.value))


def test_handshakes_and_requests_out_are_counted_each_time() -> None:
    with MemoryNetwork() as net:
        a = net.add_node()
        b, c = net.add_node(handlers={"x": lambda r: b""}), net.add_node()
        net.connect(b, a)
        net.connect(c, a)
        assert a.counters["handshakes.ok"] == 2
        for _ in range(2):
            net.result(a.request(b.peer_id, "x", b""))
        assert a.counters["requests.out.x"] == 2


# -- loopback, coalescing, eviction ---------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_is_never_scored_unless_opted_in(host: str) -> None:
    policy = Policy(BanRegistry(Clock()))
    for _ in range(10):
        assert policy.misbehaved(host, None, ErrorCode.TRUNCATED) == []
    assert policy.score(host) == 0.0 and policy.bans.bans() == []
    opted_in = Policy(BanRegistry(Clock()), PolicySettings(ban_loopback=True))
    earned = opted_in.misbehaved(host, None, ErrorCode.TRUNCATED)
    earned += opted_in.misbehaved(host, None, ErrorCode.TRUNCATED)
    assert opted_in.score(host) > 0 or earned


def test_a_coalesced_ban_is_automatic_and_lasts_what_the_last_ban_earned() -> None:
    clock = Clock()
    clock.advance(1000)
    settings = PolicySettings(ban_threshold=10, coalesce_after=3, ban_duration=60)
    policy = Policy(BanRegistry(clock), settings)
    policy.misbehaved("198.51.100.1", None, ErrorCode.TRUNCATED)
    clock.advance(60)  # that ban is over: the next one of .1 lasts twice as long
    policy.misbehaved("198.51.100.1", None, ErrorCode.TRUNCATED)
    policy.misbehaved("198.51.100.2", None, ErrorCode.TRUNCATED)
    [ban] = policy.misbehaved("198.51.100.3", None, ErrorCode.TRUNCATED)
    assert str(ban.target) == "198.51.100.0/24"
    assert ban.origin is Origin.AUTOMATIC
    assert ban.reason == "misbehaviour from 3 addresses, last TRUNCATED"
    assert ban.expires == clock.seconds() + 60  # .3's first offence
    assert policy.bans.bans() == [ban]


def test_a_network_as_wide_as_the_coalescing_prefix_keeps_its_ban() -> None:
    """IPv6 offenders scored per /48, coalesced per /48, after one ban: the
    network's own ban is not replaced by itself and then lifted."""
    settings = PolicySettings(ban_threshold=10, ipv6_prefix=48, coalesce_after=1)
    policy = Policy(BanRegistry(Clock()), settings)
    [ban] = policy.misbehaved("2001:db8:1::1", None, ErrorCode.TRUNCATED)
    assert str(ban.target) == "2001:db8:1::/48"
    assert policy.bans.bans() == [ban]
    assert ban.reason.startswith("misbehaviour, last TRUNCATED")


def _pending(limiter: ConnectionLimiter, host: str) -> Slot:
    admission = limiter.admit(host, True, limiter.subnet(host))
    assert admission.refused is None
    return limiter.opened(limiter.subnet(host), handshaking=True, owner=host)


def test_with_one_handshake_per_subnet_the_first_subnets_is_evicted() -> None:
    limiter = ConnectionLimiter(ConnectionLimits(max_handshaking=2), Clock())
    _pending(limiter, "192.0.2.1")
    _pending(limiter, "192.0.2.2")
    admission = limiter.admit("192.0.2.3", True, limiter.subnet("192.0.2.3"))
    assert admission.refused is None
    assert admission.evict is not None and admission.evict.owner == "192.0.2.1"


def test_refusal_asks_without_evicting_and_refuses_a_banned_host() -> None:
    limiter = ConnectionLimiter(
        ConnectionLimits(max_handshaking=1),
        Clock(),
        refuse_address=lambda host: "ban" if host == "203.0.113.9" else None,
    )
    assert limiter.refusal("203.0.113.9", True, None) == "banned"
    _pending(limiter, "192.0.2.1")
    subnet = limiter.subnet("192.0.2.2")
    assert limiter.refusal("192.0.2.2", True, subnet) == "handshaking"
    assert limiter.handshaking == 1 and limiter.counters["evicted.handshaking"] == 0


def test_expired_bans_are_purged_once_a_minute_when_banning(
    alice: Identity, bob: Identity, carol: Identity
) -> None:
    clock = Clock()
    registry = BanRegistry(clock)
    lifted: list[Ban] = []
    registry.on_change(lambda ban, gone: lifted.append(ban) if gone else None)
    old = registry.ban(alice.peer_id, "short", duration=1)
    clock.advance(59.5)
    registry.ban(bob.peer_id, "a")  # under a minute since the last purge
    assert lifted == []
    clock.advance(0.5)  # exactly a minute since
    registry.ban(carol.peer_id, "b")
    assert lifted == [old]


def test_a_ban_of_no_duration_is_made_and_over_at_once(alice: Identity) -> None:
    clock = Clock()
    clock.advance(5)
    ban = BanRegistry(clock).ban(alice.peer_id, "zero", duration=0)
    assert ban.expires == 5 and not ban.active(5)


# -- the node's own corners: itself, the wrong protocol, kept dials, stop --------


def test_stop_aborts_what_did_not_close_within_the_grace() -> None:
    with MemoryNetwork() as net:
        a, b = net.add_node(), net.add_node()
        net.connect(b, a)
        transport: Any = a._peers[b.peer_id].transport
        far: Any = b._peers[a.peer_id].transport
        aborted: list[bool] = []
        transport.loseConnection = lambda: None  # a close that never completes
        far.loseConnection = lambda: None  # and a peer that never closes
        real_abort = transport.abortConnection

        def abort() -> None:
            aborted.append(True)
            del transport.loseConnection
            real_abort()

        transport.abortConnection = abort
        stopping = a.stop()
        net.pump()
        assert not stopping.called
        net.advance(2.0)
        assert aborted == [True]
        net.pump()
        assert stopping.called


def test_unsubscribe_leaves_that_topic() -> None:
    with MemoryNetwork() as net:
        a = net.add_node()
        a.subscribe("t", lambda message: None)
        a.subscribe("u", lambda message: None)
        a.unsubscribe("t")
        assert sorted(a.gossip.topics) == ["u"]
        assert a.gossip.router.subscribed == {"u"}


# -- dialing by record (real TLS on loopback) -------------------------------------


async def _tls_node(
    make_node: MakeNode, clock: Clock, **options: Any
) -> tuple[Node, int]:
    node = make_node(Identity.generate(), allow_plaintext=False, clock=clock, **options)
    address = (await node.listen("p2ptls:0:interface=127.0.0.1")).getHost()
    assert isinstance(address, IPv4Address)
    return node, address.port


@pytest_twisted.ensureDeferred
async def test_a_record_is_dialed_pinned_to_its_id_and_the_last_failure_raised(
    make_node: MakeNode,
) -> None:
    """A record naming someone else's address reaches that someone, who
    cannot prove the record's id: refused, after the closed port before it."""
    clock = Clock()
    asker, _ = await _tls_node(make_node, clock)
    other, port = await _tls_node(make_node, clock)
    claimed = Identity.generate()
    record = sign_record(claimed, 1, ["127.0.0.1:1", f"127.0.0.1:{port}"])
    assert asker.gossip.records.offer(record)
    with pytest.raises(HandshakeError):  # TLS: its certificate is not that id
        await asker.dial_record(claimed.peer_id)
    assert asker.peer(other.peer_id) is None


@pytest_twisted.ensureDeferred
async def test_a_node_off_loopback_does_not_dial_loopback_records(
    make_node: MakeNode,
) -> None:
    clock = Clock()
    asker, _ = await _tls_node(make_node, clock)
    stranger = Identity.generate()
    with pytest.raises(NotConnected, match="no address"):
        await asker.dial_record(stranger.peer_id)  # no record at all
    asker.gossip.set_addresses(["192.0.2.1:7010"])  # we advertise a public address
    assert asker.gossip.records.offer(sign_record(stranger, 1, ["127.0.0.1:1"]))
    with pytest.raises(NotConnected, match="no address"):
        await asker.dial_record(stranger.peer_id)


@pytest_twisted.ensureDeferred
async def test_a_request_by_record_carries_its_metadata_and_timeout(
    make_node: MakeNode,
) -> None:
    clock = Clock()
    seen: list[Optional[bytes]] = []

    def slow(request: IncomingRequest) -> defer.Deferred[bytes]:
        seen.append(request.metadata)
        return defer.Deferred()  # never answers

    asker, _ = await _tls_node(make_node, clock)
    answerer, port = await _tls_node(make_node, clock, handlers={"slow": slow})
    assert asker.gossip.records.offer(
        answerer.gossip.set_addresses([f"127.0.0.1:{port}"])
    )
    asked = asker.request(answerer.peer_id, "slow", b"x", b"meta", timeout=5.0)
    await until(lambda: seen == [b"meta"])
    clock.advance(5.0)
    failed: list[Failure] = []
    asked.addErrback(failed.append)  # at once: no waiting on a mutant
    assert [failure.type for failure in failed] == [RequestTimeout]


@pytest_twisted.ensureDeferred
async def test_a_unix_socket_peer_survives_bans_and_its_garbage_scores_nothing(
    alice: Identity, bob: Identity, make_node: MakeNode, tmp_path: Path
) -> None:
    """A UNIX socket's address has no host: neither a network ban's sweep nor
    scoring the peer's garbage may trip on it."""
    a, b = make_node(alice), make_node(bob)
    path = tmp_path / "s"
    await a.listen(f"unix:{path}")
    await b.connect(f"unix:{path}", alice.peer_id)
    await until(lambda: len(a.peers) == 1)
    a.ban("192.0.2.0/24", "elsewhere")
    assert [peer.peer_id for peer in a.peers] == [bob.peer_id]
    errors: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(cast(ILogObserver, observe))
    try:
        b._peers[alice.peer_id].transport.write(b"\xff" * 64)  # type: ignore[union-attr]
        await until(lambda: not a.peers)
        await until(lambda: not b.peers)
    finally:
        globalLogPublisher.removeObserver(cast(ILogObserver, observe))
    assert errors == [] and a.counters["misbehaviour"] == 1
    assert len(a.bans.bans()) == 1 and a.policy.score(bob.peer_id) == 0


# -- the wire's copies: what is kept by reference, what is merged ----------------


@pytest.mark.parametrize("extra", [0, 1])
def test_a_payload_of_a_large_part_or_more_is_a_chunk_of_its_own(extra: int) -> None:
    data = bytes(framing.LARGE_PART + extra)
    chunks = framing.frame_chunks(wire.SuccessResponse(3, data))
    assert len(chunks) == 2 and chunks[1] is data  # not copied into the frame
    assert b"".join(chunks) == framing.frame(wire.SuccessResponse(3, data))
    smaller = wire.SuccessResponse(3, bytes(framing.LARGE_PART - 1))
    assert len(framing.frame_chunks(smaller)) == 1


def test_a_body_over_the_limit_is_named_in_the_error() -> None:
    message = wire.SuccessResponse(3, bytes(100))
    with pytest.raises(ValueError) as caught:
        framing.frame_chunks(message, max_body=50)
    assert str(caught.value) == (
        "a successresponse of 110 bytes exceeds the frame limit of 50"
    )


def _large_frame_arriving(decoder: framing.FrameDecoder) -> bytes:
    """Feed the start of one large frame; its whole body."""
    body = bytes(range(256)) * 100  # 25,600 bytes
    frame = len(body).to_bytes(4, "big") + body
    assert decoder.feed(frame[:20_004]) == []
    return body


def test_tiny_reads_never_recopy_a_large_piece_and_merge_among_themselves() -> None:
    """A peer dribbling bytes costs one copy of each: the 20 KB already
    held is kept as it is, and the tiny reads join each other."""
    decoder = framing.FrameDecoder(1 << 20)
    body = _large_frame_arriving(decoder)
    first = decoder._partial[0]
    for i in range(20_000, 20_010):
        assert decoder.feed(body[i : i + 1]) == []
    assert decoder._partial[0] is first and len(decoder._partial) == 2
    assert decoder.feed(body[20_010:]) == [body]
    assert decoder.buffered == 0


def test_a_read_of_1_kib_is_kept_as_its_own_piece() -> None:
    decoder = framing.FrameDecoder(1 << 20)
    body = _large_frame_arriving(decoder)
    assert decoder.feed(body[20_000:20_001]) == []  # a tiny piece
    assert decoder.feed(body[20_001:21_025]) == []  # 1024 bytes: not merged
    assert len(decoder._partial) == 3
    assert decoder.feed(body[21_025:]) == [body]


def test_a_piece_of_16_kib_takes_no_more_tiny_reads() -> None:
    decoder = framing.FrameDecoder(1 << 20)
    body = bytes(40_000)
    frame = len(body).to_bytes(4, "big") + body
    k16 = 16 * 1024
    assert decoder.feed(frame[:5]) == []  # the prefix and one byte
    assert decoder.feed(frame[5 : 5 + k16]) == []  # a piece of 16 KiB
    assert decoder.feed(frame[5 + k16 : 6 + k16]) == []
    assert [len(piece) for piece in decoder._partial] == [1, k16, 1]
    assert decoder.feed(frame[6 + k16 :]) == [body]


@pytest_twisted.ensureDeferred
async def test_concurrent_dials_by_record_share_one_and_each_gets_the_peer(
    make_node: MakeNode,
) -> None:
    clock = Clock()
    asker, _ = await _tls_node(make_node, clock)
    answerer, port = await _tls_node(make_node, clock)
    assert asker.gossip.records.offer(
        answerer.gossip.set_addresses([f"127.0.0.1:{port}"])
    )
    first, second = (asker.dial_record(answerer.peer_id) for _ in range(2))
    peers = [await first, await second]
    assert [peer.peer_id for peer in peers] == [answerer.peer_id] * 2
    assert asker.counters["handshakes.ok"] == 1


def test_leaving_permissioned_mode_closes_nothing() -> None:
    with MemoryNetwork() as net:
        a, b = net.add_node(), net.add_node()
        net.connect(b, a)
        assert a.set_permitted(None) == 0
        assert a.set_permitted([a.peer_id]) == 1  # b is not on the list


def test_each_eviction_frees_its_place_and_is_counted() -> None:
    limiter = ConnectionLimiter(ConnectionLimits(max_handshaking=2), Clock())
    for newcomer in ("192.0.2.3", "192.0.2.4"):
        if limiter.handshaking < 2:
            _pending(limiter, "192.0.2.1")
            _pending(limiter, "192.0.2.2")
        admission = limiter.admit(newcomer, True, limiter.subnet(newcomer))
        assert admission.evict is not None
        limiter.evict(admission.evict)
        assert limiter.handshaking == 1
        limiter.opened(limiter.subnet(newcomer), handshaking=True)
    assert limiter.counters["evicted.handshaking"] == 2


def test_each_refusal_is_counted() -> None:
    limiter = ConnectionLimiter(ConnectionLimits(max_connections=0), Clock())
    for _ in range(2):
        assert limiter.admit("192.0.2.1", True, None).refused == "connections"
    assert limiter.counters["refused.connections"] == 2


# -- the wire's own words, and the longest name -----------------------------------


def _body(message: wire.Message) -> bytes:
    return framing.frame(message)[4:]


def test_a_255_byte_protocol_name_is_encoded() -> None:
    request = wire.Request(1, "x" * 255, b"p")
    assert wire.decode(_body(request)) == request


def test_malformed_fields_are_named_in_their_errors(alice: Identity) -> None:
    request = _body(wire.Request(1, "p", b"", None))
    nameless = request[:5] + b"\x00" + request[7:]  # name length 0
    flagged = request[:-1] + b"\x02"  # the metadata flag 2
    hello = _body(wire.Hello(wire.PROTOCOL_VERSION, bytes(32), alice.peer_id))
    raw_id = alice.peer_id.binary
    forged = hello.replace(raw_id, b"\x99" + raw_id[1:])
    for body, words in (
        (nameless, "empty protocol name"),
        (flagged, "option flag 2 is not 0 or 1"),
        (forged, "not an Ed25519 peer id"),
    ):
        with pytest.raises(WireError) as caught:
            wire.decode(body)
        assert caught.value.message == words


def test_permissioned_mode_leaves_handshakes_in_progress_alone() -> None:
    with MemoryNetwork() as net:
        a = net.add_node()
        silent = Raw()
        net.result(connectProtocol(net.endpoint(a), silent))
        assert a.set_permitted([a.peer_id]) == 0
        net.pump()
        assert not silent.lost


def test_a_connection_is_counted_once_and_only_while_open(alice: Identity) -> None:
    table = PeerTable()
    conn, never_opened = _conn(alice.peer_id, b"m"), _conn(alice.peer_id, b"n")
    table.opened(conn)
    table.verified(conn, lambda: None)
    table.verified(conn, lambda: None)
    table.verified(never_opened, lambda: None)
    assert table.connections_of(alice.peer_id) == 1


def test_a_failed_handshake_is_detailed_with_its_code(
    summary_log: list[dict[str, Any]],
) -> None:
    with MemoryNetwork() as net:
        a = net.add_node()
        rude = Raw()
        net.result(connectProtocol(net.endpoint(a), rude))
        rude.transport.write(framing.frame(wire.Request(1, "echo", b"hi")))  # type: ignore[union-attr]
        net.pump()
        [detail] = [e for e in summary_log if e["log_level"] is LogLevel.debug]
        local: Any = rude.transport.getHost()  # type: ignore[union-attr]
        assert formatEvent(detail).startswith(
            f"handshake with {local.host}:{local.port} failed: UNEXPECTED_MESSAGE: "
        )


@pytest.mark.parametrize(
    "body",
    [
        # A payload length (8) that runs past the body: the fast path must
        # not read the payload from before its length field.
        b"\x10\x00\x00\x00\x07\x01p" + (8).to_bytes(4, "big") + b"\x00",
        # A name length (10) whose length field holds ASCII: the fast path
        # must not find a "length" counting back from the body's end.
        b"\x10\x00\x00\x00\x07\x0a" + b"a" * 247 + (256).to_bytes(4, "big"),
        # Metadata flagged 2 (not 0 or 1), with a length that would fit.
        b"\x10\x00\x00\x00\x07\x01p\x00\x00\x00\x00\x02\x00\x00\x00\x01m",
        # Metadata whose length (5 << 24) runs past the end: read one byte
        # late, it would say 1.
        b"\x10\x00\x00\x00\x07\x01p\x00\x00\x00\x00\x01\x05\x00\x00\x00\x01",
    ],
    ids=["payload-past-the-end", "name-from-the-end", "flag-2", "length-shifted"],
)
def test_a_request_the_reader_refuses_is_not_taken_by_the_fast_path(
    body: bytes,
) -> None:
    with pytest.raises(WireError):
        wire.decode(body)
