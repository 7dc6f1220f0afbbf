"""A party session, sans-IO: rounds of messages among a fixed list of
parties, buffering of early rounds, reliable broadcast by echo, evidence of
equivocation and blame.

Layer: core (sans-IO; imports nothing from Twisted).

``docs/protocol.md`` section 11 is the specification this implements.  One
:class:`PartySession` per session and local party; the adapter carries its
messages on one durable stream (section 10) per other party, named
:attr:`PartySession.stream_name`.

**In:** the application's ``send(round, to, payload)``,
``broadcast(round, payload, reliable)`` and ``gather(round, deadline)``;
``receive(peer_id, data)`` for each message delivered on the session's
stream with a peer; ``lost(peer_id, reason)`` when that stream ends;
``tick(now)`` (seconds, the origin of the deadlines) for the deadlines.

**Out:** :meth:`PartySession.outputs` -- :class:`Outgoing` (bytes to send to
one party on its stream, in order), :class:`Completed` (a gathered round's
messages, one per other party), :class:`Failed` (a gathered round that will
not complete: :class:`RoundTimeout`, :class:`Equivocation`,
:class:`FalseEcho` or :class:`PartyLost`), :class:`Violation` (a peer broke
a rule: reset its stream and charge it; each rule is its own
:class:`SessionViolation`).  Local misuse (a second message to one party in
a round, a round already finished) is ``ValueError``.

**States** of each round, all in one table, :data:`TABLE`: (state, input)
-> (next state, action).  A round is ``ABSENT`` (no entry), ``OPEN``
(messages coming in), ``ECHOED`` (a reliable round: every broadcast is in,
our echo sent), ``DISPUTED`` (an echo disagreed: relays exchanged),
``DONE`` (complete, not yet gathered), ``FAILED`` (will not complete) or
``FINISHED`` (reported to the application; kept until every earlier round is
finished too, so a late message is recognised as late).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Callable, Optional, Union

import attrs

from blueprint_net._core import session_wire as sw
from blueprint_net._core.errors import (
    BadBroadcastSignature,
    BlueprintError,
    DuplicateMessage,
    FalseEcho,
    MalformedSessionMessage,
    NotAParty,
    OversizedMessage,
    PartyLost,
    RoundTimeout,
    RoundTooFar,
    SessionBufferFull,
    SessionError,
    SessionViolation,
    UnexpectedRelay,
    WireError,
    WrongIndex,
    WrongKind,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.session_wire import (
    Broadcast,
    Direct,
    Echo,
    EquivocationEvidence,
    Relay,
    SignedBroadcast,
)
from blueprint_net._core.signatures import verify


@attrs.frozen
class SessionSettings:
    """A session's limits (every party of a session should use the same)."""

    #: Messages are taken for rounds up to this many past the lowest round
    #: not yet finished; a message for a round further ahead is refused.
    max_rounds_ahead: int = attrs.field(default=16)
    #: Most bytes of messages held for one party (rounds not yet finished).
    max_buffered: int = attrs.field(default=8 * 1024 * 1024)
    #: Largest payload of a message; the default leaves room for the
    #: session's header within a stream window of 1 MiB (section 10).
    max_payload: int = attrs.field(default=1024 * 1024 - 256)

    @max_rounds_ahead.validator
    def _check_ahead(self, _: object, value: int) -> None:
        if not 1 <= value < 2**32:
            raise ValueError("max_rounds_ahead is 1 to 2**32 - 1")

    @max_buffered.validator
    def _check_buffered(self, _: object, value: int) -> None:
        if value < 1:
            raise ValueError("max_buffered is at least 1 byte")

    @max_payload.validator
    def _check_payload(self, _: object, value: int) -> None:
        if not 0 <= value < 2**32:
            raise ValueError("max_payload is 0 to 2**32 - 1 bytes")


class Equivocation(SessionError):
    """A party signed two different broadcasts for one round: ``evidence``
    holds both, and anyone can check it offline
    (:func:`verify_equivocation`)."""

    def __init__(self, evidence: EquivocationEvidence) -> None:
        super().__init__(
            f"party {evidence.origin} signed two different broadcasts"
            f" for round {evidence.round}"
        )
        self.evidence = evidence


class Kind(enum.Enum):
    """What the local party sends in a round."""

    DIRECT = enum.auto()
    BROADCAST = enum.auto()
    RELIABLE = enum.auto()


class RoundState(enum.Enum):
    ABSENT = enum.auto()
    OPEN = enum.auto()
    ECHOED = enum.auto()
    DISPUTED = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()
    FINISHED = enum.auto()


class Input(enum.Enum):
    #: The application sends (directs or its broadcast).
    SEND = enum.auto()
    #: The application gathers the round.
    GATHER = enum.auto()
    #: A party's Direct or Broadcast.
    MESSAGE = enum.auto()
    ECHO = enum.auto()
    RELAY = enum.auto()
    #: Every other party's message is in (a round without echo).
    ALL_IN = enum.auto()
    #: Every broadcast is in, ours too (a reliable round): we echo.
    BROADCASTS_IN = enum.auto()
    #: Every echo is in and equals ours.
    AGREED = enum.auto()
    #: A party's echo differs from ours: we relay the broadcasts to it.
    DISAGREED = enum.auto()
    #: A relay proved an equivocation or a false echo.
    CAUGHT = enum.auto()
    #: A party's stream ended, or it broke a rule.
    LOST = enum.auto()
    #: The gathered round's deadline passed.
    TIMEOUT = enum.auto()
    #: Complete or failed, and gathered: reported to the application.
    DELIVER = enum.auto()


@attrs.frozen
class Outgoing:
    """Send ``data`` to party ``to`` on the session's stream with it."""

    to: int
    data: bytes


@attrs.frozen
class Completed:
    """A gathered round: each other party's payload, by index."""

    round: int
    messages: dict[int, bytes]


@attrs.frozen
class Failed:
    """A gathered round that will not complete, and why."""

    round: int
    error: SessionError


@attrs.frozen
class Violation:
    """``peer`` broke ``error``'s rule: reset the stream with it, charge it."""

    peer: PeerId
    error: SessionViolation


Output = Union[Outgoing, Completed, Failed, Violation]

_ACTIVE = (RoundState.OPEN, RoundState.ECHOED, RoundState.DISPUTED)


def _timed(entry: _Round) -> bool:
    """The round waits, with a deadline (only ``gather`` sets one)."""
    return entry.state in _ACTIVE and entry.deadline is not None


def _duplicate(round: int, value: Any) -> DuplicateMessage:
    party, message, _ = value
    what = type(message).__name__.lower()
    return DuplicateMessage(f"a second {what} of party {party} in round {round}")


class _Round:
    """One round's state: what was sent, received, echoed and relayed."""

    __slots__ = (
        "deadline",
        "digest",
        "disputes",
        "echoes",
        "error",
        "gathered",
        "held",
        "messages",
        "mine",
        "number",
        "own",
        "sent_to",
        "state",
    )

    def __init__(self, number: int) -> None:
        self.number = number
        self.state = RoundState.ABSENT
        self.gathered = False
        self.deadline: Optional[float] = None
        #: What we send in the round (None: nothing yet).
        self.mine: Optional[Kind] = None
        self.sent_to: set[int] = set()
        self.own: Optional[SignedBroadcast] = None
        #: Each other party's Direct or Broadcast, by index.
        self.messages: dict[int, Union[Direct, Broadcast]] = {}
        self.echoes: dict[int, bytes] = {}
        #: Our echo digest (a reliable round, once every broadcast is in).
        self.digest: Optional[bytes] = None
        #: Each party whose echo differed: the origin of its next relay.
        self.disputes: dict[int, int] = {}
        self.error: Optional[SessionError] = None
        #: Bytes held for each party in this round.
        self.held: dict[int, int] = {}


#: An action: (session, the round's entry, its number, the input's value).
Action = Callable[["PartySession", Any, int, Any], Any]


class PartySession:
    """One party's view of one session."""

    def __init__(
        self,
        identity: Identity,
        session_id: bytes,
        parties: Sequence[PeerId],
        settings: SessionSettings = SessionSettings(),
    ) -> None:
        keys = sw.sorted_keys([party.public_key for party in parties])
        if identity.public_key not in keys:
            raise ValueError("this node's own peer id is not in the party list")
        self.identity = identity
        self.settings = settings
        self.session_id = bytes(session_id)
        #: The parties in index order (the bytewise order of their keys).
        self.parties = tuple(PeerId.from_public_key(key) for key in keys)
        self.n = len(keys)
        self.index = keys.index(identity.public_key)
        self.digest = sw.session_digest(session_id, keys)
        self.stream_name = sw.stream_name(self.digest)
        self._keys = keys
        self._index_of = {key: i for i, key in enumerate(keys)}
        #: The lowest round not finished: earlier messages are late.
        self.base = 0
        #: Messages dropped as late (for a round already finished).
        self.late = 0
        #: Bytes held per party, over every round.
        self.held: dict[int, int] = dict.fromkeys(range(self.n), 0)
        #: Parties the session ended with, and why (first reason kept).
        self.lost_parties: dict[int, BlueprintError] = {}
        self._rounds: dict[int, _Round] = {}
        self._out: list[Output] = []
        #: Violations found by a local input, taken once its step is done.
        self._deferred: list[tuple[int, SessionViolation]] = []

    # -- inputs from the application ----------------------------------------

    def send(self, round: int, to: int, payload: bytes) -> None:
        """Send ``payload`` to party ``to`` alone as our message of ``round``."""
        if not 0 <= to < self.n or to == self.index:
            raise ValueError(f"party {to} is not another party of the session")
        self._local(round, Input.SEND, (Kind.DIRECT, to, bytes(payload)))

    def broadcast(self, round: int, payload: bytes, reliable: bool = False) -> None:
        """Send ``payload``, signed, to every other party as our message of
        ``round``; ``reliable``: every party broadcasts in the round, and it
        completes only when every party's echo agrees (section 11.5)."""
        kind = Kind.RELIABLE if reliable else Kind.BROADCAST
        self._local(round, Input.SEND, (kind, None, bytes(payload)))

    def gather(self, round: int, deadline: Optional[float] = None) -> None:
        """Report ``round`` (:class:`Completed` or :class:`Failed`) once one
        message of every other party is in (and, in a reliable round, every
        echo agrees); at ``deadline`` (``tick``'s time) it fails with
        :class:`RoundTimeout`.  Each round is gathered once."""
        self._local(round, Input.GATHER, deadline)

    def _local(self, round: int, kind: Input, value: Any) -> None:
        if not 0 <= round < 2**32:
            raise ValueError("a round is 0 to 2**32 - 1")
        if round < self.base:
            raise ValueError(f"round {round} is finished")
        if round >= self.base + self.settings.max_rounds_ahead:
            raise ValueError(
                f"round {round} is more than {self.settings.max_rounds_ahead}"
                f" rounds past round {self.base}, the lowest not finished"
            )
        entry = self._step(self._rounds.get(round), round, kind, value)
        deferred, self._deferred = self._deferred, []
        for party, error in deferred:
            self._violated(party, error)
        self._progress(entry)

    # -- inputs from the streams ----------------------------------------------

    def receive(self, peer: PeerId, data: bytes) -> None:
        """One message delivered on the session's stream with ``peer``."""
        index = self._index_of.get(peer.public_key)
        if index is None or index == self.index:
            self._out.append(
                Violation(peer, NotAParty(f"{peer} is not a party of the session"))
            )
            return
        if index in self.lost_parties:
            return  # its stream is being reset: nothing of it counts
        try:
            self._admit(index, data)
        except SessionViolation as error:
            self._violated(index, error)

    def lost(self, peer: PeerId, reason: BlueprintError) -> None:
        """The stream with ``peer`` ended (``reason``): what it held may be
        lost, so the session with it is over."""
        index = self._index_of.get(peer.public_key)
        if index is not None and index != self.index:
            self._lose(index, reason)

    def tick(self, now: float) -> None:
        """The time is ``now``: gathered rounds past their deadline fail."""
        for entry in list(self._rounds.values()):
            if _timed(entry) and entry.deadline <= now:  # type: ignore[operator]
                self._step(entry, entry.number, Input.TIMEOUT, None)
                self._progress(entry)

    # -- outputs ------------------------------------------------------------

    def outputs(self) -> list[Output]:
        """What to do since the last call, in order (then nothing)."""
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> Optional[float]:
        """The earliest deadline of a gathered round still waiting."""
        deadlines = [e.deadline for e in self._rounds.values() if _timed(e)]
        return min(deadlines, default=None)  # type: ignore[type-var]

    def state(self, round: int) -> RoundState:
        entry = self._rounds.get(round)
        return RoundState.ABSENT if entry is None else entry.state

    # -- the machine --------------------------------------------------------

    def _admit(self, index: int, data: bytes) -> None:
        try:
            message = sw.decode(data)
        except WireError as error:
            raise MalformedSessionMessage(error.message) from None
        if message.sender != index:
            raise WrongIndex(f"party {index} sent a message as party {message.sender}")
        round = message.round
        if round < self.base:
            self.late += 1
            return
        ahead = self.settings.max_rounds_ahead
        if round >= self.base + ahead:
            raise RoundTooFar(
                f"round {round} is more than {ahead} rounds past round"
                f" {self.base}, the lowest not finished"
            )
        if not isinstance(message, Echo):
            limit = self.settings.max_payload
            if len(message.payload) > limit:
                raise OversizedMessage(
                    f"a payload of {len(message.payload)} bytes; the limit is {limit}"
                )
        kind = _INPUTS[type(message)]
        entry = self._step(
            self._rounds.get(round), round, kind, (index, message, len(data))
        )
        self._progress(entry)

    def _step(
        self, entry: Optional[_Round], round: int, kind: Input, value: Any
    ) -> _Round:
        """Look the round's state and ``kind`` up in :data:`TABLE`, run the
        action (it raises before changing anything when the input is
        refused), then move the round to the next state."""
        state = RoundState.ABSENT if entry is None else entry.state
        target, action = TABLE[state, kind]
        if entry is None:
            entry = _Round(round)
            action(self, entry, round, value)
            self._rounds[round] = entry
        else:
            action(self, entry, round, value)
        entry.state = target
        if target is RoundState.FINISHED:
            self._finish(entry)
        return entry

    def _progress(self, entry: _Round) -> None:
        """Take the internal steps the round's content calls for."""
        others = self.n - 1
        if entry.state in _ACTIVE and self.lost_parties:
            party, reason = next(iter(self.lost_parties.items()))
            self._step(entry, entry.number, Input.LOST, PartyLost(party, reason))
        if entry.state is RoundState.OPEN and len(entry.messages) == others:
            if entry.mine is Kind.RELIABLE:
                self._step(entry, entry.number, Input.BROADCASTS_IN, None)
            elif entry.mine is not None or not self._expects_echo(entry):
                self._step(entry, entry.number, Input.ALL_IN, None)
        if entry.state in (RoundState.ECHOED, RoundState.DISPUTED):
            for party, digest in list(entry.echoes.items()):
                if digest != entry.digest and party not in entry.disputes:
                    self._step(entry, entry.number, Input.DISAGREED, party)
        if entry.state is RoundState.ECHOED and len(entry.echoes) == others:
            self._step(entry, entry.number, Input.AGREED, None)
        if entry.state is RoundState.DISPUTED and entry.error is not None:
            self._step(entry, entry.number, Input.CAUGHT, None)
        if entry.gathered and entry.state in (RoundState.DONE, RoundState.FAILED):
            self._step(entry, entry.number, Input.DELIVER, None)

    def _expects_echo(self, entry: _Round) -> bool:
        """Others broadcast reliably (or echo): wait for our own broadcast."""
        return bool(entry.echoes) or any(
            type(m) is Broadcast and m.reliable for m in entry.messages.values()
        )

    def _finish(self, entry: _Round) -> None:
        """Release what the round held; forget every finished round below
        the first one not finished."""
        for party, size in entry.held.items():
            self.held[party] -= size
        entry.held.clear()
        entry.messages.clear()
        entry.echoes.clear()
        entry.disputes.clear()
        rounds = self._rounds
        while (first := rounds.get(self.base)) and first.state is RoundState.FINISHED:
            del rounds[self.base]
            self.base += 1

    def _violated(self, index: int, error: SessionViolation) -> None:
        self._out.append(Violation(self.parties[index], error))
        self._lose(index, error)

    def _lose(self, index: int, reason: BlueprintError) -> None:
        if index in self.lost_parties:
            return
        self.lost_parties[index] = reason
        for entry in list(self._rounds.values()):
            self._progress(entry)

    def _hold(self, entry: _Round, party: int, size: int) -> None:
        limit = self.settings.max_buffered
        if self.held[party] + size > limit:
            raise SessionBufferFull(
                f"party {party} would have {self.held[party] + size} bytes"
                f" buffered; the limit is {limit}"
            )
        self.held[party] += size
        entry.held[party] = entry.held.get(party, 0) + size

    def _signed(self, round: int, origin: int, payload: bytes) -> bytes:
        return sw.signed_bytes(self.digest, round, origin, payload)

    def _verifies(
        self, round: int, origin: int, payload: bytes, signature: bytes
    ) -> bool:
        signed = self._signed(round, origin, payload)
        return verify(self._keys[origin], signed, signature, self.identity.backend)

    def _to_all(self, message: sw.SessionMessage) -> None:
        data = sw.encode(message)
        for party in range(self.n):
            if party != self.index:
                self._out.append(Outgoing(party, data))

    # -- actions: the application -------------------------------------------

    def _send(self, entry: _Round, round: int, value: Any) -> None:
        kind, to, payload = value
        limit = self.settings.max_payload
        if len(payload) > limit:
            raise ValueError(f"a payload of {len(payload)} bytes; the limit is {limit}")
        ended = entry.state in (RoundState.DONE, RoundState.FAILED)
        if kind is Kind.RELIABLE and ended:
            raise ValueError(f"round {round} ended without echo")
        if kind is Kind.DIRECT:
            if entry.mine not in (None, Kind.DIRECT):
                raise ValueError(f"round {round}: this party broadcast already")
            if to in entry.sent_to:
                raise ValueError(f"round {round}: party {to} was sent a message")
            direct = sw.encode(Direct(self.index, round, payload))
            entry.sent_to.add(to)
            self._out.append(Outgoing(to, direct))
        else:
            if entry.mine is not None:
                raise ValueError(f"round {round}: this party sent its message")
            signature = self.identity.sign(self._signed(round, self.index, payload))
            entry.own = SignedBroadcast(payload, signature)
            reliable = kind is Kind.RELIABLE
            self._to_all(Broadcast(self.index, round, payload, signature, reliable))
        first = entry.mine is None
        entry.mine = kind
        if first:
            self._judge_kinds(entry)

    def _judge_kinds(self, entry: _Round) -> None:
        """Our first send fixes the round's kind: what was held that
        disagrees with it is a violation by its sender."""
        reliable = entry.mine is Kind.RELIABLE
        wrong = [
            party
            for party, message in entry.messages.items()
            if (type(message) is Broadcast and message.reliable) != reliable
        ]
        if not reliable:
            wrong += [party for party in entry.echoes if party not in wrong]
        for party in wrong:
            self._deferred.append(
                (
                    party,
                    WrongKind(
                        f"party {party}'s message of round {entry.number} does not"
                        f" match the round ({'with' if reliable else 'without'}"
                        " echo)"
                    ),
                )
            )

    def _refuse_send(self, entry: _Round, round: int, _: Any) -> None:
        if entry.state is RoundState.FINISHED:
            raise ValueError(f"round {round} is finished")
        raise ValueError(f"round {round}: this party sent its message")

    def _gather(self, entry: _Round, round: int, deadline: Optional[float]) -> None:
        if entry.gathered:
            raise ValueError(f"round {round} is gathered already")
        entry.gathered = True
        entry.deadline = deadline

    def _refuse_gather(self, _: _Round, round: int, __: Any) -> None:
        raise ValueError(f"round {round} is gathered already")

    def _deliver(self, entry: _Round, round: int, _: None) -> None:
        if entry.error is not None:
            self._out.append(Failed(round, entry.error))
        else:
            messages = {p: m.payload for p, m in sorted(entry.messages.items())}
            self._out.append(Completed(round, messages))

    # -- actions: the parties ----------------------------------------------

    def _take_message(self, entry: _Round, round: int, value: Any) -> None:
        party, message, size = value
        if party in entry.messages:
            raise _duplicate(round, value)
        reliable = type(message) is Broadcast and message.reliable
        if entry.mine is not None and reliable != (entry.mine is Kind.RELIABLE):
            raise WrongKind(
                f"party {party} sent a {'reliable' if reliable else 'plain'}"
                f" message in round {round}, which is"
                f" {'without' if reliable else 'with'} echo here"
            )
        if type(message) is Broadcast and not self._verifies(
            round, party, message.payload, message.signature
        ):
            raise BadBroadcastSignature(
                f"party {party}'s broadcast of round {round} is not signed by it"
            )
        self._hold(entry, party, size)
        entry.messages[party] = message

    def _duplicate(self, _: _Round, round: int, value: Any) -> None:
        raise _duplicate(round, value)

    def _take_echo(self, entry: _Round, round: int, value: Any) -> None:
        party, echo, size = value
        if party in entry.echoes:
            raise _duplicate(round, value)
        if entry.mine not in (None, Kind.RELIABLE):
            raise WrongKind(f"party {party} echoed round {round}, which has no echo")
        self._hold(entry, party, size)
        entry.echoes[party] = echo.digest

    def _late_echo(self, entry: _Round, round: int, value: Any) -> None:
        """An echo in a complete round: a repeat, or a round without echo."""
        if entry.digest is not None:
            raise _duplicate(round, value)
        raise WrongKind(f"party {value[0]} echoed round {round}, which has no echo")

    def _echo(self, entry: _Round, round: int, _: None) -> None:
        own = entry.own
        assert own is not None
        payloads = [
            own.payload if party == self.index else entry.messages[party].payload
            for party in range(self.n)
        ]
        entry.digest = sw.echo_digest(self.digest, round, payloads)
        self._to_all(Echo(self.index, round, entry.digest))

    def _relay(self, entry: _Round, round: int, party: int) -> None:
        """Send ``party`` every broadcast of the round as we have it."""
        entry.disputes[party] = 0
        for origin in range(self.n):
            if origin == self.index:
                signed = entry.own
                assert signed is not None
            else:
                message = entry.messages[origin]
                assert type(message) is Broadcast
                signed = SignedBroadcast(message.payload, message.signature)
            relay = Relay(self.index, round, origin, signed.payload, signed.signature)
            self._out.append(Outgoing(party, sw.encode(relay)))

    def _take_relay(self, entry: _Round, round: int, value: Any) -> None:
        party, relay, _ = value
        expected = entry.disputes.get(party)
        if expected is None:  # (all n relays in decide the round: FAILED)
            raise UnexpectedRelay(
                f"party {party} relayed round {round} without a disagreement"
            )
        origin = relay.origin
        if origin != expected:
            raise UnexpectedRelay(
                f"party {party} relayed origin {origin} of round {round};"
                f" origin {expected} is next"
            )
        ours = self._broadcast_of(entry, origin)
        if relay.payload != ours.payload:
            if not self._verifies(round, origin, relay.payload, relay.signature):
                raise BadBroadcastSignature(
                    f"party {party} relayed a broadcast of party {origin}"
                    f" in round {round} that party {origin} did not sign"
                )
            theirs = SignedBroadcast(relay.payload, relay.signature)
            entry.error = Equivocation(sw.evidence(round, origin, ours, theirs))
        entry.disputes[party] = origin + 1
        if entry.error is None and origin + 1 == self.n:
            entry.error = FalseEcho(round, party)

    def _broadcast_of(self, entry: _Round, origin: int) -> SignedBroadcast:
        if origin == self.index:
            assert entry.own is not None
            return entry.own
        message = entry.messages[origin]
        assert type(message) is Broadcast
        return SignedBroadcast(message.payload, message.signature)

    def _refuse_relay(self, _: _Round, round: int, value: Any) -> None:
        raise UnexpectedRelay(
            f"party {value[0]} relayed round {round} without a disagreement"
        )

    def _lost_party(self, entry: _Round, _: int, error: PartyLost) -> None:
        entry.error = error

    def _timeout(self, entry: _Round, round: int, _: None) -> None:
        others = [p for p in range(self.n) if p != self.index]
        if entry.state is RoundState.OPEN:
            missing = [p for p in others if p not in entry.messages]
        else:  # an echo, or the relays of a disagreement (all in decide it)
            missing = [
                p for p in others if p not in entry.echoes or p in entry.disputes
            ]
        entry.error = RoundTimeout(round, tuple(missing))

    def _ignore(self, _: _Round, __: int, ___: Any) -> None:
        return None

    def _drop_late(self, _: _Round, __: int, ___: Any) -> None:
        self.late += 1


_INPUTS: dict[type, Input] = {
    Direct: Input.MESSAGE,
    Broadcast: Input.MESSAGE,
    Echo: Input.ECHO,
    Relay: Input.RELAY,
}

_ABSENT, _OPEN, _ECHOED, _DISPUTED, _DONE, _FAILED, _FINISHED = RoundState

#: The machine: (state, input) -> (next state, action).  The action runs
#: before the move and raises, changing nothing, when the input is refused
#: (``ValueError`` for the application, a :class:`SessionViolation` for a
#: party).  Every (state, party input) pair is listed; internal inputs are
#: listed only where :meth:`PartySession._progress` takes them.
TABLE: dict[tuple[RoundState, Input], tuple[RoundState, Action]] = {
    # The application sends.
    (_ABSENT, Input.SEND): (_OPEN, PartySession._send),
    (_OPEN, Input.SEND): (_OPEN, PartySession._send),
    (_ECHOED, Input.SEND): (_ECHOED, PartySession._refuse_send),
    (_DISPUTED, Input.SEND): (_DISPUTED, PartySession._refuse_send),
    (_DONE, Input.SEND): (_DONE, PartySession._send),
    (_FAILED, Input.SEND): (_FAILED, PartySession._send),
    (_FINISHED, Input.SEND): (_FINISHED, PartySession._refuse_send),
    # The application gathers.
    (_ABSENT, Input.GATHER): (_OPEN, PartySession._gather),
    (_OPEN, Input.GATHER): (_OPEN, PartySession._gather),
    (_ECHOED, Input.GATHER): (_ECHOED, PartySession._gather),
    (_DISPUTED, Input.GATHER): (_DISPUTED, PartySession._gather),
    (_DONE, Input.GATHER): (_FINISHED, PartySession._deliver),
    (_FAILED, Input.GATHER): (_FINISHED, PartySession._deliver),
    (_FINISHED, Input.GATHER): (_FINISHED, PartySession._refuse_gather),
    # A party's Direct or Broadcast: one per party and round.
    (_ABSENT, Input.MESSAGE): (_OPEN, PartySession._take_message),
    (_OPEN, Input.MESSAGE): (_OPEN, PartySession._take_message),
    (_ECHOED, Input.MESSAGE): (_ECHOED, PartySession._duplicate),
    (_DISPUTED, Input.MESSAGE): (_DISPUTED, PartySession._duplicate),
    (_DONE, Input.MESSAGE): (_DONE, PartySession._duplicate),
    (_FAILED, Input.MESSAGE): (_FAILED, PartySession._drop_late),
    (_FINISHED, Input.MESSAGE): (_FINISHED, PartySession._drop_late),
    # A party's echo: held until ours is made, then compared.
    (_ABSENT, Input.ECHO): (_OPEN, PartySession._take_echo),
    (_OPEN, Input.ECHO): (_OPEN, PartySession._take_echo),
    (_ECHOED, Input.ECHO): (_ECHOED, PartySession._take_echo),
    (_DISPUTED, Input.ECHO): (_DISPUTED, PartySession._take_echo),
    (_DONE, Input.ECHO): (_DONE, PartySession._late_echo),
    (_FAILED, Input.ECHO): (_FAILED, PartySession._drop_late),
    (_FINISHED, Input.ECHO): (_FINISHED, PartySession._drop_late),
    # A party's relay: only after its echo disagreed with ours.
    (_ABSENT, Input.RELAY): (_ABSENT, PartySession._refuse_relay),
    (_OPEN, Input.RELAY): (_OPEN, PartySession._refuse_relay),
    (_ECHOED, Input.RELAY): (_ECHOED, PartySession._refuse_relay),
    (_DISPUTED, Input.RELAY): (_DISPUTED, PartySession._take_relay),
    (_DONE, Input.RELAY): (_DONE, PartySession._refuse_relay),
    (_FAILED, Input.RELAY): (_FAILED, PartySession._drop_late),
    (_FINISHED, Input.RELAY): (_FINISHED, PartySession._drop_late),
    # What the round's content calls for.
    (_OPEN, Input.ALL_IN): (_DONE, PartySession._ignore),
    (_OPEN, Input.BROADCASTS_IN): (_ECHOED, PartySession._echo),
    (_ECHOED, Input.AGREED): (_DONE, PartySession._ignore),
    (_ECHOED, Input.DISAGREED): (_DISPUTED, PartySession._relay),
    (_DISPUTED, Input.DISAGREED): (_DISPUTED, PartySession._relay),
    (_DISPUTED, Input.CAUGHT): (_FAILED, PartySession._ignore),
    (_DONE, Input.DELIVER): (_FINISHED, PartySession._deliver),
    (_FAILED, Input.DELIVER): (_FINISHED, PartySession._deliver),
    # The end of a round that will not complete.
    (_OPEN, Input.LOST): (_FAILED, PartySession._lost_party),
    (_ECHOED, Input.LOST): (_FAILED, PartySession._lost_party),
    (_DISPUTED, Input.LOST): (_FAILED, PartySession._lost_party),
    (_OPEN, Input.TIMEOUT): (_FAILED, PartySession._timeout),
    (_ECHOED, Input.TIMEOUT): (_FAILED, PartySession._timeout),
    (_DISPUTED, Input.TIMEOUT): (_FAILED, PartySession._timeout),
}


def verify_equivocation(
    evidence: EquivocationEvidence, session_id: bytes, parties: Sequence[PeerId]
) -> bool:
    """Whether ``evidence`` proves that its origin, a party of the session
    ``session_id`` among ``parties``, signed two different broadcasts for
    one round.  Needs only public keys; ``ValueError`` for a party list or
    session id that no session can have."""
    keys = sw.sorted_keys([party.public_key for party in parties])
    digest = sw.session_digest(session_id, keys)
    if not 0 <= evidence.origin < len(keys) or not 0 <= evidence.round < 2**32:
        return False
    first, second = evidence.first, evidence.second
    if first.payload == second.payload:
        return False
    key = keys[evidence.origin]
    return all(
        verify(
            key,
            sw.signed_bytes(digest, evidence.round, evidence.origin, signed.payload),
            signed.signature,
        )
        for signed in (first, second)
    )
