"""Finding peers and keeping them: the services that dial for a node.

A :class:`ConnectionManager` keeps a node at its target outbound peers from
signed peer records and bootstrap endpoints (tuned by
:class:`DiscoverySettings`); a :class:`PeerKeeper` keeps one known peer at a
known address connected; an :class:`MdnsService` announces the node's record
on the local network and finds others there (mDNS, tuned by
:class:`MdnsSettings`; it needs the ``blueprint-net[mdns]`` extra).  All are
``IService``\\ s built beside a node: they take an
:class:`~blueprint_net.node.INode`.
"""

from __future__ import annotations

from blueprint_net._adapters.connection_manager import ConnectionManager
from blueprint_net._adapters.keeper import PeerKeeper
from blueprint_net._adapters.mdns import MdnsService
from blueprint_net._policy.discovery import DiscoverySettings
from blueprint_net._policy.mdns import MdnsSettings

__all__ = [
    "ConnectionManager",
    "DiscoverySettings",
    "MdnsService",
    "MdnsSettings",
    "PeerKeeper",
]
