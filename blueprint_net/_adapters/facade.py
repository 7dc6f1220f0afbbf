"""``INode``: what the services built on a node may use of it.

Layer: adapters (a ``zope.interface`` contract; nothing runs here).

In: nothing; it is a declaration.  ``Node`` provides it, and the services
that sit beside a node rather than inside it -- discovery's
``ConnectionManager``, ``PeerKeeper``, an application's own -- take an
``INode``, never the ``Node`` class.  So those modules do not import the
facade (``tests/test_architecture.py`` enforces it), they cannot reach into
its private state, and a test or an application can hand them a stand-in.

Each member is one ``Node`` already has, with the same meaning; see
``docs/embedding.md`` for the public ones.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from zope.interface import Interface

if TYPE_CHECKING:
    from blueprint_net._adapters.gossip import Gossip
    from blueprint_net._adapters.peers import Peer
    from blueprint_net._core.errors import ProtocolError
    from blueprint_net._core.identity import PeerId
    from blueprint_net._policy.bans import BanRegistry
    from blueprint_net._policy.discovery import Scope
    from blueprint_net._policy.scores import Policy


class INode(Interface):
    """A running node, as the services beside it see it."""

    peer_id: PeerId
    clock: IReactorTime
    #: The node's counters (``_ops/metrics.py`` publishes them).
    counters: Counter[str]
    gossip: Gossip
    policy: Policy
    bans: BanRegistry
    #: Verified peers, one entry per peer id.
    peers: list[Peer]
    #: True once the node began to stop: dial nothing more.
    stopping: bool
    #: The (host, port) pairs the node listens on.
    listening_addresses: list[tuple[str, int]]

    def peer(peer_id: PeerId) -> Optional[Peer]:
        """The verified peer with this id, if connected."""

    def connect(
        endpoint: Union[str, IStreamClientEndpoint], peer_id: Optional[PeerId] = None
    ) -> defer.Deferred[Peer]:
        """Dial; fires with the peer once verified."""

    def disconnect(
        peer_id: PeerId, error: Optional[ProtocolError] = None
    ) -> defer.Deferred[None]:
        """Say goodbye to one peer (``error``) and close."""

    def dial_scopes() -> frozenset[Scope]:
        """Which address scopes learned from records may be dialled."""

    def on_peer_verified(callback: Callable[[Peer], Any]) -> None:
        """Call ``callback`` with each peer once verified."""

    def on_peer_lost(callback: Callable[[Peer], Any]) -> None:
        """Call ``callback`` with each verified peer once gone."""
