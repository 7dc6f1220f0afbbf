"""blueprint-net: authenticated peer-to-peer messaging for Twisted.

Everything an application needs is importable from here; the packages whose
names start with an underscore are private and may change between releases.
``docs/embedding.md`` documents each name; ``docs/architecture.md`` shows the
layers behind them.  Importing this package installs no reactor.
"""

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
from blueprint_net._core.identity import (
    Identity,
    KeyFileError,
    PeerId,
    load_identity,
    load_or_create_identity,
)
from blueprint_net._core.messaging import IncomingRequest, ProtocolData, Success
from blueprint_net._core.pubsub import Verdict
from blueprint_net._core.wire import ProtocolResponse, Reply, SuccessResponse
from blueprint_net._policy.bans import Ban, BanRegistry, IBanStore, Origin
from blueprint_net._policy.discovery import DiscoverySettings
from blueprint_net._policy.gossip import GossipSettings
from blueprint_net._policy.limits import ConnectionLimits
from blueprint_net._policy.scores import Policy, PolicySettings
from blueprint_net._policy.settings import Settings

__version__ = "0.1.0"

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
