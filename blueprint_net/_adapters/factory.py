"""The factory a node listens and dials with: one :class:`PeerProtocol`
per connection, all reporting to one host.

Layer: adapters (Twisted).

In: what every connection of one side shares (the host, the identity, the
clock, the settings, the node's memory budget; for a dial, the id expected).
Out: a :class:`PeerProtocol` per ``buildProtocol``.  No states.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory

from blueprint_net._adapters.protocol import IConnectionHost, PeerProtocol
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._policy.resources import MemoryBudget
from blueprint_net._policy.settings import DEFAULTS, Settings


class PeerFactory(Factory):
    """Builds :class:`PeerProtocol` for one side of a connection.

    One factory serves a listening port (``initiator=False``); an outbound
    connection gets its own, carrying the id it expects to reach.
    """

    #: One factory per dial: Twisted's "Starting factory" lines would be
    #: noise, one pair per outbound connection.
    noisy = False

    def __init__(
        self,
        host: IConnectionHost,
        identity: Identity,
        clock: IReactorTime,
        settings: Settings = DEFAULTS,
        *,
        initiator: bool,
        expected_peer: Optional[PeerId] = None,
        waited_on: Optional[bool] = None,
        memory: Optional[MemoryBudget] = None,
    ) -> None:
        self.host = host
        self.identity = identity
        #: The budget shared by every connection of the node.
        self.memory = memory
        self.clock = clock
        self.settings = settings
        self.initiator = initiator
        self.expected_peer = expected_peer
        #: Whether someone awaits each protocol's ``verified`` (by default,
        #: for a dialer); if not, its failure is consumed once reported.
        self.waited_on = waited_on

    def buildProtocol(self, addr: Optional[IAddress]) -> PeerProtocol:
        protocol = PeerProtocol(
            self.host,
            self.identity,
            self.clock,
            self.settings,
            initiator=self.initiator,
            expected_peer=self.expected_peer,
            waited_on=self.waited_on,
            memory=self.memory,
        )
        protocol.factory = self
        return protocol
