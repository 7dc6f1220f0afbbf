"""blueprint-net: authenticated peer-to-peer messaging for Twisted.

Everything an application needs is importable from here; the packages whose
names start with an underscore are private and may change between releases.
``docs/embedding.md`` documents each name; ``docs/architecture.md`` shows the
layers behind them.

Importing this package installs no reactor and imports none of its modules:
each name is imported from its module when first used (PEP 562), so the
sans-IO core (``blueprint_net._core``) can be imported without Twisted.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blueprint_net._adapters.banstore import BanDatabaseError, SqliteBanStore
    from blueprint_net._adapters.connections import ConnectionManager
    from blueprint_net._adapters.dispatch import Handler
    from blueprint_net._adapters.gossip import GossipMessage
    from blueprint_net._adapters.interfaces import IRequestHandler
    from blueprint_net._adapters.keeper import PeerKeeper
    from blueprint_net._adapters.node import Node, Outcome
    from blueprint_net._adapters.peers import Peer
    from blueprint_net._core.errors import (
        BlueprintError,
        ConfigurationError,
        ConnectFailed,
        ErrorCode,
        HandshakeError,
        HandshakeFailed,
        KeyFileError,
        NotConnected,
        PeerLost,
        PlaintextRefused,
        ProtocolError,
        PublishFailed,
        Refused,
        RemoteError,
        RequestFailed,
        RequestTimeout,
        SendQueueFull,
        WireError,
    )
    from blueprint_net._core.gossip_settings import GossipSettings
    from blueprint_net._core.identity import Identity, PeerId
    from blueprint_net._core.messaging import IncomingRequest, ProtocolData, Success
    from blueprint_net._core.pubsub import Verdict
    from blueprint_net._core.wire import ProtocolResponse, Reply, SuccessResponse
    from blueprint_net._ops.keyfiles import load_identity, load_or_create_identity
    from blueprint_net._policy.bans import Ban, BanRegistry, IBanStore, Origin
    from blueprint_net._policy.discovery import DiscoverySettings
    from blueprint_net._policy.limits import ConnectionLimits
    from blueprint_net._policy.scores import Policy, PolicySettings
    from blueprint_net._policy.settings import Settings

__version__ = "0.1.0"

#: Each public name and the module it is defined in.
_HOMES = {
    "Ban": "blueprint_net._policy.bans",
    "BanDatabaseError": "blueprint_net._adapters.banstore",
    "BanRegistry": "blueprint_net._policy.bans",
    "BlueprintError": "blueprint_net._core.errors",
    "ConfigurationError": "blueprint_net._core.errors",
    "ConnectFailed": "blueprint_net._core.errors",
    "ConnectionLimits": "blueprint_net._policy.limits",
    "ConnectionManager": "blueprint_net._adapters.connections",
    "DiscoverySettings": "blueprint_net._policy.discovery",
    "ErrorCode": "blueprint_net._core.errors",
    "GossipMessage": "blueprint_net._adapters.gossip",
    "GossipSettings": "blueprint_net._core.gossip_settings",
    "Handler": "blueprint_net._adapters.dispatch",
    "HandshakeError": "blueprint_net._core.errors",
    "HandshakeFailed": "blueprint_net._core.errors",
    "IBanStore": "blueprint_net._policy.bans",
    "Identity": "blueprint_net._core.identity",
    "IncomingRequest": "blueprint_net._core.messaging",
    "IRequestHandler": "blueprint_net._adapters.interfaces",
    "KeyFileError": "blueprint_net._core.errors",
    "load_identity": "blueprint_net._ops.keyfiles",
    "load_or_create_identity": "blueprint_net._ops.keyfiles",
    "Node": "blueprint_net._adapters.node",
    "NotConnected": "blueprint_net._core.errors",
    "Origin": "blueprint_net._policy.bans",
    "Outcome": "blueprint_net._adapters.node",
    "Peer": "blueprint_net._adapters.peers",
    "PeerId": "blueprint_net._core.identity",
    "PeerKeeper": "blueprint_net._adapters.keeper",
    "PeerLost": "blueprint_net._core.errors",
    "PlaintextRefused": "blueprint_net._core.errors",
    "Policy": "blueprint_net._policy.scores",
    "PolicySettings": "blueprint_net._policy.scores",
    "ProtocolData": "blueprint_net._core.messaging",
    "ProtocolError": "blueprint_net._core.errors",
    "ProtocolResponse": "blueprint_net._core.wire",
    "PublishFailed": "blueprint_net._core.errors",
    "Refused": "blueprint_net._core.errors",
    "RemoteError": "blueprint_net._core.errors",
    "Reply": "blueprint_net._core.wire",
    "RequestFailed": "blueprint_net._core.errors",
    "RequestTimeout": "blueprint_net._core.errors",
    "SendQueueFull": "blueprint_net._core.errors",
    "Settings": "blueprint_net._policy.settings",
    "SqliteBanStore": "blueprint_net._adapters.banstore",
    "Success": "blueprint_net._core.messaging",
    "SuccessResponse": "blueprint_net._core.wire",
    "Verdict": "blueprint_net._core.pubsub",
    "WireError": "blueprint_net._core.errors",
}

__all__ = [
    "Ban",
    "BanDatabaseError",
    "BanRegistry",
    "BlueprintError",
    "ConfigurationError",
    "ConnectFailed",
    "ConnectionLimits",
    "ConnectionManager",
    "DiscoverySettings",
    "ErrorCode",
    "GossipMessage",
    "GossipSettings",
    "Handler",
    "HandshakeError",
    "HandshakeFailed",
    "IBanStore",
    "IRequestHandler",
    "Identity",
    "IncomingRequest",
    "KeyFileError",
    "Node",
    "NotConnected",
    "Origin",
    "Outcome",
    "Peer",
    "PeerId",
    "PeerKeeper",
    "PeerLost",
    "PlaintextRefused",
    "Policy",
    "PolicySettings",
    "ProtocolData",
    "ProtocolError",
    "ProtocolResponse",
    "PublishFailed",
    "Refused",
    "RemoteError",
    "Reply",
    "RequestFailed",
    "RequestTimeout",
    "SendQueueFull",
    "Settings",
    "SqliteBanStore",
    "Success",
    "SuccessResponse",
    "Verdict",
    "WireError",
    "__version__",
    "load_identity",
    "load_or_create_identity",
]


def __getattr__(name: str) -> Any:
    try:
        home = _HOMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
