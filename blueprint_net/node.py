"""The :class:`Node` and the types its methods take and give beyond the
everyday ones of ``blueprint_net``.

:class:`INode` is what a service built beside a node may use of it (what
``ConnectionManager`` and ``PeerKeeper`` take; ``Node`` and the nodes of
:mod:`blueprint_net.testing` provide it).  A handler is an
:class:`IRequestHandler` or a plain callable (together: :data:`Handler`).
"""

from __future__ import annotations

from blueprint_net._adapters.dispatch import Handler
from blueprint_net._adapters.facade import INode
from blueprint_net._adapters.interfaces import IRequestHandler
from blueprint_net._adapters.node import Node, Outcome
from blueprint_net._adapters.peers import Peer

__all__ = ["Handler", "INode", "IRequestHandler", "Node", "Outcome", "Peer"]
