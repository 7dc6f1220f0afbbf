"""A party session's vocabulary: its settings, each round's states, the
inputs its table is keyed by, what it yields, and the record each round's
state is kept in.

Layer: core (sans-IO; imports nothing from Twisted).

Nothing here moves: :mod:`~blueprint_net._core.sessions` is the machine
(:class:`~blueprint_net._core.sessions.PartySession`) whose one table
(state, input) -> (next state, action) uses these.

- Settings: :class:`SessionSettings`, a session's limits; :data:`DEFAULTS`.
- States: :class:`RoundState`, each round's; :class:`Kind`, what the local
  party sends in a round; :class:`RoundEntry`, one round's record.
- In: :class:`Input`, the kinds of input the table is keyed by.
- Out: :data:`Output` (:class:`Outgoing`, :class:`Completed`,
  :class:`Failed`, :class:`Violation`); :class:`Equivocation`, the failure
  whose evidence anyone can check offline.
"""

from __future__ import annotations

import enum
from typing import Optional, Union

import attrs

from blueprint_net._core.errors import SessionError, SessionViolation
from blueprint_net._core.identity import PeerId
from blueprint_net._core.session_wire import (
    Broadcast,
    Direct,
    EquivocationEvidence,
    SignedBroadcast,
)


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


#: The settings a session gets unless it is given its own.
DEFAULTS = SessionSettings()


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


class RoundEntry:
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
