"""What the gossip router says back: its outputs, and the two verdicts they
carry.

Layer: core (sans-IO; imports nothing from Twisted).

In: nothing; these are values.  Out: :data:`RouterOutput`, what every
:class:`~blueprint_net._core.pubsub.Router` input returns, in order, for the
caller to carry out: :class:`Send` messages, :class:`Validate` a publication
with the application (whose :class:`Verdict` goes back to the router),
:class:`Deliver` it to local handlers, charge a :class:`Penalty` for a
:class:`Fault` (``_policy/gossip_faults.py`` prices each),
:class:`Discovered` peer records, and the publications :class:`Dropped`
(what happened to each, for the operator's per-topic figures).  No states:
each output is frozen.
"""

from __future__ import annotations

import enum
from typing import Union

import attrs

from blueprint_net._core.gossip_wire import GossipWireMessage, Publish
from blueprint_net._core.identity import PeerId
from blueprint_net._core.records import PeerRecord


class Verdict(enum.Enum):
    """An application validator's answer (gossipsub's three results)."""

    #: Deliver and forward.
    ACCEPT = "accept"
    #: Drop quietly: not forwarded, nobody charged (e.g. stale, not wrong).
    IGNORE = "ignore"
    #: Drop and charge the peer that forwarded it: the message is invalid.
    REJECT = "reject"


class Fault(enum.Enum):
    """What a peer provably did wrong; the policy layer prices each."""

    #: Forwarded a publication whose signature does not verify.
    INVALID_SIGNATURE = "invalid-signature"
    #: Forwarded a publication the application's validator rejected.
    REJECTED = "rejected"
    #: Sent a peer record whose signature does not verify.
    INVALID_RECORD = "invalid-record"
    #: Grafted while the backoff our own ``Prune`` set was running.
    GRAFT_IN_BACKOFF = "graft-in-backoff"
    #: Sent more subscription changes, grafts or prunes in one heartbeat
    #: interval than ``max_control_per_peer`` (charged once an interval).
    CONTROL_FLOOD = "control-flood"


@attrs.frozen
class Send:
    """Send ``message`` to each of ``peers`` (encode once, or not at all:
    ``body``, when given, is its frame body as received).  A peer whose send
    queue is full is skipped and counted, never waited for."""

    peers: tuple[PeerId, ...]
    message: GossipWireMessage
    body: bytes = attrs.field(default=b"", eq=False, repr=False)


@attrs.frozen
class Validate:
    """Run the topic's validator on ``message``, then call
    :meth:`Router.validated` with ``message_id`` and the verdict."""

    message_id: bytes
    message: Publish
    source: PeerId


@attrs.frozen
class Deliver:
    """Give ``message`` to the local handlers of its topic."""

    message: Publish


@attrs.frozen
class Penalty:
    """``peer`` did ``fault``: score it (``_policy/gossip_faults.py`` says how)."""

    peer: PeerId
    fault: Fault


@attrs.frozen
class Discovered:
    """Verified records, each newer than any held, received from ``source``:
    candidates for the connection manager, which applies bans first."""

    source: PeerId
    records: tuple[PeerRecord, ...]


#: ``Dropped.why``: seen (or maybe seen) before.
DUPLICATE = "duplicate"
#: ``Dropped.why``: its signature does not verify.
INVALID = "invalid"
#: ``Dropped.why``: too large, too old or too new, over a rate, or no room.
DROPPED = "dropped"


@attrs.frozen
class Dropped:
    """A publication on a topic we subscribe to was not taken, and why, in
    the per-topic figures' words: ``duplicate`` (seen, or maybe seen,
    before), ``invalid`` (its signature does not verify) or ``dropped``
    (too large, too old or too new, over a rate, or no room to validate).
    The router's counters say the exact reason; this says it per topic
    without the caller diffing them."""

    topic: str
    why: str


RouterOutput = Union[Send, Validate, Deliver, Penalty, Discovered, Dropped]
