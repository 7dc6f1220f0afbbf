"""Connections that reach this very node (a ``--peer`` naming our own
address), recognised so that neither half is scored or summarised.

Layer: adapters (Twisted: reads transports' addresses, logs).

In: each outbound connection as it opens (:meth:`SelfConnections.
remember_own_end`: its local end); a connection whose handshake failed
with ``SELF_CONNECTION`` (:meth:`SelfConnections.reached_self`).  Out:
whether that connection reached this node: the outbound half by its
initiator flag (logged once, a configuration error), the inbound half by
its far end being one of our recent outbound local ends.

States: the local ends of our recent outbound connections, each kept for
``handshake_timeout`` seconds (the oldest let go first).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from blueprint_net._adapters.protocol import PeerProtocol


class SelfConnections:
    """Our recent outbound local ends; see the module."""

    def __init__(self, clock: IReactorTime, handshake_timeout: float, log: Logger):
        self.clock, self.handshake_timeout, self.log = clock, handshake_timeout, log
        #: Local ends of our recent outbound connections, (host, port) ->
        #: until when: an inbound connection from one of them is ourselves.
        self.own_ends: dict[tuple[str, int], float] = {}

    def remember_own_end(self, protocol: PeerProtocol) -> None:
        """Note an outbound connection's local end, so the inbound half of a
        connection to ourselves is known for what it is (not an attack)."""
        local = protocol.transport.getHost() if protocol.transport else None
        if not hasattr(local, "port"):
            return  # not TCP: no far end to recognise
        now = self.clock.seconds()
        ends = self.own_ends
        while ends and next(iter(ends.values())) < now:
            del ends[next(iter(ends))]  # the oldest first: dicts keep order
        key = (str(getattr(local, "host", "")), int(getattr(local, "port", 0)))
        ends[key] = now + self.handshake_timeout

    def reached_self(self, protocol: PeerProtocol) -> bool:
        """A SELF_CONNECTION failure of a connection that reached this very
        node (a configuration error, never scored): the outbound half is
        logged once; the inbound half is recognised by its far end."""
        if protocol.initiator:
            self.log.warn(
                "dialed {address} and reached this node itself; dropped"
                " (a --peer or connect() naming our own address?)",
                address=protocol.where,
            )
            return True
        far = protocol.address
        key = (getattr(far, "host", None), getattr(far, "port", None))
        expiry = self.own_ends.get(key)  # type: ignore[arg-type]
        return expiry is not None and expiry >= self.clock.seconds()
