"""Party sessions (issue 20): ``Node.session(session_id, parties)`` returns a
:class:`Session` (``send``, ``broadcast``, ``gather``, ``close``).

:func:`verify_equivocation` checks, offline, the evidence an
:class:`~blueprint_net.errors.Equivocation` carries; evidence travels as
bytes with :func:`encode_evidence` and :func:`decode_evidence`.
``docs/protocol.md`` section 11 specifies sessions; their errors are in
:mod:`blueprint_net.errors`.
"""

from __future__ import annotations

from blueprint_net._adapters.sessions import Session
from blueprint_net._core.session_echo import verify_equivocation
from blueprint_net._core.session_states import SessionSettings
from blueprint_net._core.session_wire import (
    EquivocationEvidence,
    SignedBroadcast,
    decode_evidence,
    encode_evidence,
)

__all__ = [
    "EquivocationEvidence",
    "Session",
    "SessionSettings",
    "SignedBroadcast",
    "decode_evidence",
    "encode_evidence",
    "verify_equivocation",
]
