"""The error-code table, and every exception this package raises on purpose.

Layer: core (sans-IO; imports nothing from Twisted).

One hierarchy with one base, :class:`BlueprintError`, so an application can
catch everything of ours with one ``except``.  Its families:

* :class:`ProtocolError` -- a fault that travels on the wire as an ``Error``;
* :class:`ConnectFailed` -- :meth:`Node.connect` got no verified peer
  (:class:`Refused` by our own policy, :class:`HandshakeError` when the
  connection closed before the handshake completed, or the transport's own
  failure to connect, kept as ``__cause__``);
* :class:`RequestFailed` -- a request got no usable response;
* :class:`PublishFailed` -- a local gossip publish could not be sent;
* :class:`ConfigurationError` -- a key file, ban database, option or handler
  that cannot be used (one line, naming what is wrong);
* :class:`SessionError` -- a round of a party session did not complete
  (``docs/protocol.md`` section 11; ``Equivocation``, which carries the
  evidence, is defined beside it in ``sessions``), and :class:`SessionViolation` -- a
  party broke the session's rules (its stream is reset, the peer charged).

Every code here travels on the wire as a big-endian ``u16`` in an ``Error``
message; ``docs/protocol.md`` reproduces this table and a test keeps the two
in step.  Codes are grouped by range so a peer can tell at a glance whose
fault an error was:

* ``1xx`` -- the frame or message could not be decoded (the sender is broken
  or hostile; the connection is closed);
* ``2xx`` -- the handshake or connection policy refused the peer (closed);
* ``3xx`` -- a request could not be served (the connection stays up).
"""

from __future__ import annotations

import enum
from typing import Union


class ErrorCode(enum.IntEnum):
    # 1xx: decoding
    UNKNOWN_MESSAGE_TYPE = 100
    TRUNCATED = 101
    TRAILING_BYTES = 102
    INVALID_UTF8 = 103
    OUT_OF_RANGE = 104
    FRAME_TOO_LARGE = 105

    # 2xx: handshake and connection policy
    UNEXPECTED_MESSAGE = 200
    INCOMPATIBLE_VERSION = 201
    BAD_SIGNATURE = 202
    WRONG_KEY = 203
    UNEXPECTED_PEER = 204
    SELF_CONNECTION = 205
    HANDSHAKE_TIMEOUT = 206
    DUPLICATE_CONNECTION = 207
    BANNED = 208
    NOT_ALLOWED = 209
    CONNECTION_LIMIT = 210
    IDLE_TIMEOUT = 211
    GOING_AWAY = 212
    # 2xx: durable streams (docs/protocol.md, section 10)
    STREAM_SEQUENCE = 213
    STREAM_ACK = 214
    STREAM_LIMIT = 215

    # 3xx: requests
    UNKNOWN_PROTOCOL = 300
    HANDLER_ERROR = 301
    PAYLOAD_TOO_LARGE = 302
    RATE_LIMITED = 303
    DUPLICATE_REQUEST_ID = 304
    SHUTTING_DOWN = 305


#: Codes for which the connection is closed after the ``Error`` is sent.
CLOSES_CONNECTION = frozenset(code for code in ErrorCode if code < 300)


class BlueprintError(Exception):
    """The base of every error blueprint-net raises on purpose."""


class ProtocolError(BlueprintError):
    """A fault that the peer is told about with an ``Error`` message.

    One exception type for every such fault, so a caller needs one ``except``
    and gets the wire code with it.
    """

    def __init__(self, code: ErrorCode, message: str, *, remote: bool = False) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        #: True when the peer reported this error to us in an ``Error``.
        self.remote = remote

    @classmethod
    def from_peer(cls, code: int, message: str) -> ProtocolError:
        """The error a peer's ``Error`` message reports.  Every ``Error`` ends
        the connection, so a code that is not a known connection code (below
        300) becomes ``UNEXPECTED_MESSAGE``; the message keeps the number."""
        if code in CLOSES_CONNECTION:
            known = ErrorCode(code)
        else:
            known, message = ErrorCode.UNEXPECTED_MESSAGE, f"[{code}] {message}"
        return cls(known, f"peer said: {message}", remote=True)

    def __str__(self) -> str:
        return f"{self.code.name} ({int(self.code)}): {self.message}"


class WireError(ProtocolError):
    """Bytes that are not a valid frame or message (codes ``1xx``)."""


class HandshakeFailed(ProtocolError):
    """The peer did not prove who it is, or the policy refused it (``2xx``).

    The handshake's own error, inside the node: not exported.  A caller
    sees it as the ``reason`` of the :class:`HandshakeError` that
    ``Node.connect`` fails with.
    """


class ConnectFailed(BlueprintError):
    """A dial did not end with a verified peer.

    Raised as is (with the transport's error as ``__cause__``) when no
    connection could be made at all; see the subclasses for the rest.
    """


class Refused(ConnectFailed):
    """The node's own policy refused to open a connection (a ban, a limit)."""


class HandshakeError(ConnectFailed):
    """The connection closed before its handshake completed.

    ``reason`` is the :class:`ProtocolError` that ended it when there was one
    (its ``code`` says why), else the transport's error.
    """

    def __init__(self, reason: Union[ProtocolError, BaseException]) -> None:
        super().__init__(str(reason))
        self.reason = reason


class ConfigurationError(BlueprintError):
    """Something the operator supplied cannot be used; the message says what,
    in one line."""


class KeyFileError(ConfigurationError):
    """A key file that cannot be used; the message says why in one line."""


class PlaintextRefused(Refused, ConfigurationError):
    """A plain (not TLS) listener, dial or connection on a node that has not
    opted in with ``Settings(allow_plaintext=True)`` (``--allow-plaintext``).

    Both a :class:`Refused` (what :meth:`Node.connect` fails with) and a
    :class:`ConfigurationError` (what was asked for cannot be used): the fix
    is ``p2ptls:`` or the explicit opt-in, never a retry.
    """


class RequestFailed(BlueprintError):
    """A request ended without a response the application can use.

    The Deferred of :meth:`Node.request` fails with one of the subclasses.
    """


class RemoteError(RequestFailed):
    """The peer answered with ``InstanceMessageResponse::Error``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        try:
            name = ErrorCode(self.code).name
        except ValueError:
            name = "application error"
        return f"{name} ({self.code}): {self.message}"


class RequestTimeout(RequestFailed):
    """No response arrived within the request timeout."""


class PeerLost(RequestFailed):
    """The connection closed before the response arrived."""


class NotConnected(RequestFailed):
    """There is no verified connection to that peer."""


class SendQueueFull(RequestFailed):
    """The peer is not reading and the bounded send queue is full."""


class PublishFailed(BlueprintError):
    """A local publish could not be sent: over the topic's size cap or this
    node's own publish rate (the message says which)."""


class SessionError(BlueprintError):
    """A round of a party session did not complete: what its ``gather``
    fails with.  Each subclass names whom it blames."""


class RoundTimeout(SessionError):
    """The round's deadline passed; ``missing`` are the indexes of the
    parties whose message (or echo, or relay) had not arrived."""

    def __init__(self, round: int, missing: tuple[int, ...]) -> None:
        names = ", ".join(map(str, missing)) or "none (this party never sent)"
        super().__init__(f"round {round} timed out; missing parties: {names}")
        self.round = round
        self.missing = missing


class FalseEcho(SessionError):
    """``party``'s echo of round ``round`` disagreed with ours, but the
    broadcasts it relayed show no equivocation: its echo was false."""

    def __init__(self, round: int, party: int) -> None:
        super().__init__(
            f"party {party}'s echo of round {round} disagrees with the"
            " broadcasts it relayed"
        )
        self.round = round
        self.party = party


class PartyLost(SessionError):
    """The session with ``party`` ended before the round completed: its
    stream was reset, or it broke the session's rules (``reason``)."""

    def __init__(self, party: int, reason: BlueprintError) -> None:
        super().__init__(f"party {party} is lost: {reason}")
        self.party = party
        self.reason = reason


class SessionViolation(BlueprintError):
    """A party's session message that an honest party never sends: the
    session's stream with it is reset and its peer id charged.  Each
    subclass is one rule."""


class NotAParty(SessionViolation):
    """A message on a session's stream from a peer not in its party list."""


class WrongIndex(SessionViolation):
    """A message that names another party's index as its sender."""


class DuplicateMessage(SessionViolation):
    """A second message (or echo, or relay) from one party in one round."""


class RoundTooFar(SessionViolation):
    """A message for a round past the bound of rounds buffered ahead."""


class SessionBufferFull(SessionViolation):
    """A message that would pass the bytes buffered for its party."""


class OversizedMessage(SessionViolation):
    """A payload larger than the session's limit."""


class BadBroadcastSignature(SessionViolation):
    """A broadcast (or a relayed one) whose signature does not verify."""


class WrongKind(SessionViolation):
    """A message whose kind disagrees with the round's: a reliable
    broadcast in a round without echo, anything else (or no echo) in a
    reliable one."""


class UnexpectedRelay(SessionViolation):
    """A relay from a party whose echo did not disagree, or out of order."""


class MalformedSessionMessage(SessionViolation):
    """A stream payload that is not one well-formed session message."""
