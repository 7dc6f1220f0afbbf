"""Topic gossip: what a topic's handler and validator are given and answer,
and gossip's tunables.

``Node.subscribe``, ``publish`` and ``unsubscribe`` are the verbs;
``PublishFailed`` is in :mod:`blueprint_net.errors` with the other errors.
"""

from __future__ import annotations

from blueprint_net._adapters.gossip import GossipMessage
from blueprint_net._core.gossip_outputs import Verdict
from blueprint_net._core.gossip_settings import GossipSettings

__all__ = ["GossipMessage", "GossipSettings", "Verdict"]
