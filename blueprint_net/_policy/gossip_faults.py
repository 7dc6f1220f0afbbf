"""The price of each gossip fault: which connection fault it is scored as.

Layer: policy (pure values and decisions; no Twisted).

In: a :class:`~blueprint_net._core.gossip_outputs.Fault` the router reported; out:
the :class:`ErrorCode` that ``Policy.misbehaved`` scores it as.
"""

from __future__ import annotations

from blueprint_net._core.errors import ErrorCode
from blueprint_net._core.gossip_outputs import Fault

#: A gossip fault is scored as the connection fault it resembles
#: (``Policy.misbehaved(None, peer, code)``): a forged signature or record as
#: a bad handshake signature (50 points), a rejected message, a graft that
#: ignores our backoff or a heartbeat's flood of control messages as an
#: unexpected message (20).  Only the forwarding
#: peer is charged, never the origin a message names.
FAULT_CODES: dict[Fault, ErrorCode] = {
    Fault.INVALID_SIGNATURE: ErrorCode.BAD_SIGNATURE,
    Fault.INVALID_RECORD: ErrorCode.BAD_SIGNATURE,
    Fault.REJECTED: ErrorCode.UNEXPECTED_MESSAGE,
    Fault.GRAFT_IN_BACKOFF: ErrorCode.UNEXPECTED_MESSAGE,
    Fault.CONTROL_FLOOD: ErrorCode.UNEXPECTED_MESSAGE,
}


def fault_code(fault: Fault) -> ErrorCode:
    """The code to score a gossip fault with (see :data:`FAULT_CODES`)."""
    return FAULT_CODES[fault]
