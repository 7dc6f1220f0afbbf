"""A party session, sans-IO: rounds of messages among a fixed list of
parties, buffering of early rounds, reliable broadcast by echo, evidence of
equivocation and blame.

Layer: core (sans-IO; imports nothing from Twisted).

``docs/protocol.md`` section 11 is the specification this implements.  One
:class:`PartySession` per session and local party; the adapter carries its
messages on one durable stream (section 10) per other party, named
:attr:`PartySession.stream_name`.  Its vocabulary (settings, states,
inputs, outputs, each round's record) is
:mod:`~blueprint_net._core.session_states`; the signatures, echoes and
relays of reliable broadcast are its
:class:`~blueprint_net._core.session_echo.ReliableBroadcast`.

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

from collections.abc import Sequence
from typing import Any, Callable, Optional

from blueprint_net._core import session_wire as sw
from blueprint_net._core.errors import (
    BadBroadcastSignature,
    BlueprintError,
    DuplicateMessage,
    MalformedSessionMessage,
    NotAParty,
    OversizedMessage,
    PartyLost,
    RoundTimeout,
    RoundTooFar,
    SessionBufferFull,
    SessionViolation,
    UnexpectedRelay,
    WireError,
    WrongIndex,
    WrongKind,
)
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.session_echo import ReliableBroadcast
from blueprint_net._core.session_states import (
    DEFAULTS,
    Completed,
    Failed,
    Input,
    Kind,
    Outgoing,
    Output,
    RoundEntry,
    RoundState,
    SessionSettings,
    Violation,
)
from blueprint_net._core.session_wire import Broadcast, Direct, Echo, Relay

_ACTIVE = (RoundState.OPEN, RoundState.ECHOED, RoundState.DISPUTED)


def _timed(entry: RoundEntry) -> bool:
    """The round waits, with a deadline (only ``gather`` sets one)."""
    return entry.state in _ACTIVE and entry.deadline is not None


def _duplicate(round: int, value: Any) -> DuplicateMessage:
    party, message, _ = value
    what = type(message).__name__.lower()
    return DuplicateMessage(f"a second {what} of party {party} in round {round}")


#: An action: (session, the round's entry, its number, the input's value).
Action = Callable[["PartySession", Any, int, Any], Any]


class PartySession:
    """One party's view of one session."""

    def __init__(
        self,
        identity: Identity,
        session_id: bytes,
        parties: Sequence[PeerId],
        settings: SessionSettings = DEFAULTS,
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
        #: Signs and checks the broadcasts, echoes and relays them.
        self.broadcasts = ReliableBroadcast(identity, self.digest, keys)
        self._index_of = {key: i for i, key in enumerate(keys)}
        #: The lowest round not finished: earlier messages are late.
        self.base = 0
        #: Messages dropped as late (for a round already finished).
        self.late = 0
        #: Bytes held per party, over every round.
        self.held: dict[int, int] = dict.fromkeys(range(self.n), 0)
        #: Parties the session ended with, and why (first reason kept).
        self.lost_parties: dict[int, BlueprintError] = {}
        self._rounds: dict[int, RoundEntry] = {}
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
        self, entry: Optional[RoundEntry], round: int, kind: Input, value: Any
    ) -> RoundEntry:
        """Look the round's state and ``kind`` up in :data:`TABLE`, run the
        action (it raises before changing anything when the input is
        refused), then move the round to the next state."""
        state = RoundState.ABSENT if entry is None else entry.state
        target, action = TABLE[state, kind]
        if entry is None:
            entry = RoundEntry(round)
            action(self, entry, round, value)
            self._rounds[round] = entry
        else:
            action(self, entry, round, value)
        entry.state = target
        if target is RoundState.FINISHED:
            self._finish(entry)
        return entry

    def _progress(self, entry: RoundEntry) -> None:
        """Take the internal steps the round's content calls for."""
        others = self.n - 1
        self._check_lost(entry)
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
        self._check_lost(entry)  # the steps above may now need a lost party
        if entry.gathered and entry.state in (RoundState.DONE, RoundState.FAILED):
            self._step(entry, entry.number, Input.DELIVER, None)

    def _check_lost(self, entry: RoundEntry) -> None:
        """Fail the round if it still needs something from a lost party."""
        if entry.state in _ACTIVE and self.lost_parties:
            for party, reason in self.lost_parties.items():
                if self._needs(entry, party):
                    lost = PartyLost(party, reason)
                    self._step(entry, entry.number, Input.LOST, lost)
                    break

    def _needs(self, entry: RoundEntry, party: int) -> bool:
        """Whether the round still waits for something from ``party``: its
        message, its echo in a reliable round, or (disputed) its relays.  A
        party that finished and closed the session first is lost to us only
        for the rounds it had not given everything to."""
        if party not in entry.messages:
            return True
        if entry.state is RoundState.DISPUTED:
            # Relays are awaited only from the parties whose echo differed.
            return entry.disputes.get(party, self.n) < self.n
        reliable = entry.mine is Kind.RELIABLE or self._expects_echo(entry)
        return reliable and party not in entry.echoes

    def _expects_echo(self, entry: RoundEntry) -> bool:
        """Others broadcast reliably (or echo): wait for our own broadcast."""
        return bool(entry.echoes) or any(
            type(m) is Broadcast and m.reliable for m in entry.messages.values()
        )

    def _finish(self, entry: RoundEntry) -> None:
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

    def _hold(self, entry: RoundEntry, party: int, size: int) -> None:
        limit = self.settings.max_buffered
        if self.held[party] + size > limit:
            raise SessionBufferFull(
                f"party {party} would have {self.held[party] + size} bytes"
                f" buffered; the limit is {limit}"
            )
        self.held[party] += size
        entry.held[party] = entry.held.get(party, 0) + size

    def _to_all(self, message: sw.SessionMessage) -> None:
        data = sw.encode(message)
        for party in range(self.n):
            if party != self.index:
                self._out.append(Outgoing(party, data))

    # -- actions: the application -------------------------------------------

    def _send(self, entry: RoundEntry, round: int, value: Any) -> None:
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
            entry.own = own = self.broadcasts.sign(round, payload)
            reliable = kind is Kind.RELIABLE
            self._to_all(Broadcast(self.index, round, payload, own.signature, reliable))
        first = entry.mine is None
        entry.mine = kind
        if first:
            self._judge_kinds(entry)

    def _judge_kinds(self, entry: RoundEntry) -> None:
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

    def _refuse_send(self, entry: RoundEntry, round: int, _: Any) -> None:
        if entry.state is RoundState.FINISHED:
            raise ValueError(f"round {round} is finished")
        raise ValueError(f"round {round}: this party sent its message")

    def _gather(self, entry: RoundEntry, round: int, deadline: Optional[float]) -> None:
        if entry.gathered:
            raise ValueError(f"round {round} is gathered already")
        entry.gathered = True
        entry.deadline = deadline

    def _refuse_gather(self, _: RoundEntry, round: int, __: Any) -> None:
        raise ValueError(f"round {round} is gathered already")

    def _deliver(self, entry: RoundEntry, round: int, _: None) -> None:
        if entry.error is not None:
            self._out.append(Failed(round, entry.error))
        else:
            messages = {p: m.payload for p, m in sorted(entry.messages.items())}
            self._out.append(Completed(round, messages))

    # -- actions: the parties ----------------------------------------------

    def _take_message(self, entry: RoundEntry, round: int, value: Any) -> None:
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
        if type(message) is Broadcast and not self.broadcasts.verifies(
            round, party, message.payload, message.signature
        ):
            raise BadBroadcastSignature(
                f"party {party}'s broadcast of round {round} is not signed by it"
            )
        self._hold(entry, party, size)
        entry.messages[party] = message

    def _duplicate(self, _: RoundEntry, round: int, value: Any) -> None:
        raise _duplicate(round, value)

    def _take_echo(self, entry: RoundEntry, round: int, value: Any) -> None:
        party, echo, size = value
        if party in entry.echoes:
            raise _duplicate(round, value)
        if entry.mine not in (None, Kind.RELIABLE):
            raise WrongKind(f"party {party} echoed round {round}, which has no echo")
        self._hold(entry, party, size)
        entry.echoes[party] = echo.digest

    def _late_echo(self, entry: RoundEntry, round: int, value: Any) -> None:
        """An echo in a complete round: a repeat, or a round without echo."""
        if entry.digest is not None:
            raise _duplicate(round, value)
        raise WrongKind(f"party {value[0]} echoed round {round}, which has no echo")

    def _echo(self, entry: RoundEntry, round: int, _: None) -> None:
        entry.digest = self.broadcasts.echo_digest(entry, round)
        self._to_all(Echo(self.index, round, entry.digest))

    def _relay(self, entry: RoundEntry, round: int, party: int) -> None:
        """Send ``party`` every broadcast of the round as we have it."""
        entry.disputes[party] = 0
        for relay in self.broadcasts.relays(entry, round):
            self._out.append(Outgoing(party, sw.encode(relay)))

    def _take_relay(self, entry: RoundEntry, round: int, value: Any) -> None:
        party, relay, _ = value
        self.broadcasts.take_relay(entry, round, party, relay)

    def _refuse_relay(self, _: RoundEntry, round: int, value: Any) -> None:
        raise UnexpectedRelay(
            f"party {value[0]} relayed round {round} without a disagreement"
        )

    def _lost_party(self, entry: RoundEntry, _: int, error: PartyLost) -> None:
        entry.error = error

    def _timeout(self, entry: RoundEntry, round: int, _: None) -> None:
        others = [p for p in range(self.n) if p != self.index]
        if entry.state is RoundState.OPEN:
            missing = [p for p in others if p not in entry.messages]
        else:  # an echo, or the relays of a disagreement (all in decide it)
            missing = [
                p for p in others if p not in entry.echoes or p in entry.disputes
            ]
        entry.error = RoundTimeout(round, tuple(missing))

    def _ignore(self, _: RoundEntry, __: int, ___: Any) -> None:
        return None

    def _drop_late(self, _: RoundEntry, __: int, ___: Any) -> None:
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
