"""The one object that holds a node's connection settings, with their defaults.

Layer: policy (pure values; no Twisted).

``Node``, ``PeerProtocol`` and the operator's options (``_ops/config.py``) all
take their defaults from here, so a default is written once.  Admission limits
and misbehaviour scoring have their own objects beside this one
(:class:`~blueprint_net._policy.limits.ConnectionLimits`,
:class:`~blueprint_net._policy.scores.PolicySettings`).
"""

from __future__ import annotations

import attrs

from blueprint_net._core import wire


@attrs.frozen
class Settings:
    """What every connection of one node shares."""

    #: Seconds a peer has to complete the handshake.
    handshake_timeout: float = 30.0
    #: Seconds a new connection has to send its first frame (a ``Hello``);
    #: a silent socket holds a handshake place this long, not the 30 s.
    first_frame_timeout: float = 5.0
    #: Largest frame accepted after the handshake, in bytes.
    max_frame: int = wire.DEFAULT_MAX_FRAME
    #: Seconds a request waits for its response by default.
    request_timeout: float = 30.0
    #: A verified peer quiet this long is pinged; silent for as long again
    #: after the ping, dropped (0 turns it off).  The original system pinged
    #: every 30 s.
    keepalive_interval: float = 30.0
    #: Bytes queued for a peer that is not reading: a send that would pass
    #: it is refused, a response replaced by ``Error{RATE_LIMITED}`` (one
    #: frame larger than this is let through an empty queue).
    max_send_queue: int = 4 * 1024 * 1024
    #: Bytes held for all peers together (partial inbound frames, queued
    #: frames, paused transports' buffers): the node-wide budget.
    memory_budget: int = 256 * 1024 * 1024
    #: The peer's requests processed at once; past it, we stop reading.
    max_concurrent_requests: int = 256
    #: Accept and dial links without TLS.  Off: a plain transport is closed
    #: before its handshake, because on one a relay can forward two
    #: handshakes and then speak as either peer.  For trusted networks,
    #: benchmarks and in-memory tests only.
    allow_plaintext: bool = False


#: Why a plain transport is closed on a node without ``allow_plaintext``.
PLAINTEXT_REFUSED = (
    "this node accepts TLS links only (p2ptls:); plaintext needs"
    " allow_plaintext / --allow-plaintext"
)


#: Every default: what a ``Node`` built without ``settings`` uses.
DEFAULTS = Settings()
