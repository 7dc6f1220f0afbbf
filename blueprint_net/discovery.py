"""Finding peers and keeping them: the services that dial for a node.

A :class:`ConnectionManager` keeps a node at its target outbound peers from
signed peer records and bootstrap endpoints (tuned by
:class:`DiscoverySettings`); a :class:`PeerKeeper` keeps one known peer at a
known address connected.  Both are ``IService``\\ s built beside a node: they
take an :class:`~blueprint_net.node.INode`.
"""

from __future__ import annotations

from blueprint_net._adapters.connection_manager import ConnectionManager
from blueprint_net._adapters.keeper import PeerKeeper
from blueprint_net._policy.discovery import DiscoverySettings

__all__ = ["ConnectionManager", "DiscoverySettings", "PeerKeeper"]
