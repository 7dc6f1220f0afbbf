"""Every error blueprint-net raises on purpose, and the wire's error codes.

One hierarchy with one base, :class:`BlueprintError`, so one ``except``
catches all of ours.  The base and the errors nearly every caller catches
(:class:`ConnectFailed`, :class:`RequestFailed`, :class:`RemoteError`) are
also importable from ``blueprint_net`` itself; ``docs/embedding.md`` draws
the tree.
"""

from __future__ import annotations

from blueprint_net._adapters.banstore import BanDatabaseError
from blueprint_net._adapters.stream_objects import StreamReset
from blueprint_net._core.errors import (
    BlueprintError,
    ConfigurationError,
    ConnectFailed,
    ErrorCode,
    FalseEcho,
    HandshakeError,
    KeyFileError,
    NotConnected,
    PartyLost,
    PeerLost,
    PlaintextRefused,
    ProtocolError,
    PublishFailed,
    Refused,
    RemoteError,
    RequestFailed,
    RequestTimeout,
    RoundTimeout,
    SendQueueFull,
    SessionError,
    SessionViolation,
    WireError,
)
from blueprint_net._core.session_states import Equivocation

__all__ = [
    "BanDatabaseError",
    "BlueprintError",
    "ConfigurationError",
    "ConnectFailed",
    "Equivocation",
    "ErrorCode",
    "FalseEcho",
    "HandshakeError",
    "KeyFileError",
    "NotConnected",
    "PartyLost",
    "PeerLost",
    "PlaintextRefused",
    "ProtocolError",
    "PublishFailed",
    "Refused",
    "RemoteError",
    "RequestFailed",
    "RequestTimeout",
    "RoundTimeout",
    "SendQueueFull",
    "SessionError",
    "SessionViolation",
    "StreamReset",
    "WireError",
]
