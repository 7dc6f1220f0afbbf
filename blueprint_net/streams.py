"""Durable streams: exactly once, in order, across reconnections
(``docs/protocol.md`` section 10; ``docs/embedding.md``, "Durable streams").

``Node.stream(peer_id, name, on_message, on_reset=None)`` opens one and
returns a :class:`Stream`; :class:`StreamSettings` (``Node(streams=...)``)
holds the limits; a stream that ends raises or reports
:class:`~blueprint_net.errors.StreamReset` (in :mod:`blueprint_net.errors`
with the other errors), whose ``code`` is a :class:`ResetCode` or an
application's code (1000-65535).
"""

from __future__ import annotations

from blueprint_net._adapters.streams import Stream
from blueprint_net._core.stream_wire import ResetCode
from blueprint_net._core.streams import StreamSettings

__all__ = ["ResetCode", "Stream", "StreamSettings"]
