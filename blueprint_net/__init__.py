"""blueprint-net: authenticated peer-to-peer messaging for Twisted.

The names here are what every application needs: the :class:`Node`, its
:class:`Settings`, identities, the request and answer types and the errors
nearly every caller catches.  The rest lives in public modules named for
their idea: :mod:`blueprint_net.node` (the types around a ``Node``),
:mod:`blueprint_net.errors`, :mod:`blueprint_net.gossip`,
:mod:`blueprint_net.streams`, :mod:`blueprint_net.policy`,
:mod:`blueprint_net.discovery`, :mod:`blueprint_net.sessions` and
:mod:`blueprint_net.testing`.  The packages whose names start with an
underscore are private and may change between releases.  ``docs/embedding.md``
documents each name (and the names that moved); ``docs/architecture.md``
shows the layers behind them.

Importing this package installs no reactor and imports none of its modules:
each name is imported from its module when first used (PEP 562), so the
sans-IO core (``blueprint_net._core``) can be imported without Twisted.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blueprint_net._adapters.node import Node
    from blueprint_net._core.errors import (
        BlueprintError,
        ConnectFailed,
        RemoteError,
        RequestFailed,
    )
    from blueprint_net._core.identity import Identity, PeerId
    from blueprint_net._core.messaging import IncomingRequest, ProtocolData, Success
    from blueprint_net._core.wire import ProtocolResponse, Reply, SuccessResponse
    from blueprint_net._ops.keyfiles import load_identity, load_or_create_identity
    from blueprint_net._policy.settings import Settings

__version__ = "0.1.0"

#: Each public name and the module it is defined in.
_HOMES = {
    "BlueprintError": "blueprint_net._core.errors",
    "ConnectFailed": "blueprint_net._core.errors",
    "Identity": "blueprint_net._core.identity",
    "IncomingRequest": "blueprint_net._core.messaging",
    "load_identity": "blueprint_net._ops.keyfiles",
    "load_or_create_identity": "blueprint_net._ops.keyfiles",
    "Node": "blueprint_net._adapters.node",
    "PeerId": "blueprint_net._core.identity",
    "ProtocolData": "blueprint_net._core.messaging",
    "ProtocolResponse": "blueprint_net._core.wire",
    "RemoteError": "blueprint_net._core.errors",
    "Reply": "blueprint_net._core.wire",
    "RequestFailed": "blueprint_net._core.errors",
    "Settings": "blueprint_net._policy.settings",
    "Success": "blueprint_net._core.messaging",
    "SuccessResponse": "blueprint_net._core.wire",
}

__all__ = [
    "BlueprintError",
    "ConnectFailed",
    "Identity",
    "IncomingRequest",
    "Node",
    "PeerId",
    "ProtocolData",
    "ProtocolResponse",
    "RemoteError",
    "Reply",
    "RequestFailed",
    "Settings",
    "Success",
    "SuccessResponse",
    "__version__",
    "load_identity",
    "load_or_create_identity",
]

#: Names that were importable from here before 0.2 and now live in a public
#: module: they still work from here, with a ``DeprecationWarning``.
_MOVED = {
    **dict.fromkeys(
        (
            "BanDatabaseError",
            "ConfigurationError",
            "ErrorCode",
            "HandshakeError",
            "KeyFileError",
            "NotConnected",
            "PeerLost",
            "PlaintextRefused",
            "ProtocolError",
            "PublishFailed",
            "Refused",
            "RequestTimeout",
            "SendQueueFull",
            "WireError",
        ),
        "blueprint_net.errors",
    ),
    **dict.fromkeys(
        ("GossipMessage", "GossipSettings", "Verdict"), "blueprint_net.gossip"
    ),
    **dict.fromkeys(
        (
            "Ban",
            "BanRegistry",
            "ConnectionLimits",
            "IBanStore",
            "Origin",
            "Policy",
            "PolicySettings",
            "SqliteBanStore",
        ),
        "blueprint_net.policy",
    ),
    **dict.fromkeys(
        ("ConnectionManager", "DiscoverySettings", "PeerKeeper"),
        "blueprint_net.discovery",
    ),
    **dict.fromkeys(
        ("Handler", "IRequestHandler", "Outcome", "Peer"), "blueprint_net.node"
    ),
}

#: Names that were public here and are no longer public anywhere: where the
#: value still comes from, and what to use instead.
_RETIRED = {
    "HandshakeFailed": (
        "blueprint_net._core.errors",
        "it is the handshake's own error; Node.connect fails with"
        " blueprint_net.errors.HandshakeError, whose .reason is the"
        " ProtocolError (with its .code) that ended the handshake",
    ),
}


#: The public modules, importable as attributes once the package is (as
#: ``blueprint_net.errors.ErrorCode`` after ``import blueprint_net``).
_MODULES = frozenset(
    {
        "discovery",
        "errors",
        "gossip",
        "node",
        "policy",
        "sessions",
        "streams",
        "testing",
    }
)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    home = _HOMES.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _MOVED:
        home = _MOVED[name]
        advice = f"import it from {home}"
    elif name in _RETIRED:
        home, advice = _RETIRED[name]
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Not cached: every use from here is told where the name went.
    warnings.warn(
        f"blueprint_net.{name} is deprecated: {advice}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
