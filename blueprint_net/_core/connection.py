"""One connection, sans-IO: bytes in, events out; messages in, bytes out.

Layer: core (sans-IO; imports nothing from Twisted).

In the style of ``h2``: :meth:`Connection.receive_data` returns events and
queues any replies, :meth:`Connection.data_to_send` hands over the queued
bytes.  It owns the framer, the codec and the handshake, and it is the one
place that enforces "nothing but the handshake before ``Verified``".

When the peer's proof verifies, :meth:`Connection.receive_data` returns
:class:`PeerProven` last and holds whatever the peer sent after the proof;
the caller's policy answers with :meth:`Connection.accept` (which returns the
held frames' events) or :meth:`Connection.refuse`.

A request's life is decided here, both ways.  Ours: :meth:`Connection.request`
takes its deadline (time is a number the caller passes), :attr:`next_deadline`
says when the caller's one timer should call :meth:`Connection.expire`, which
returns the requests to fail.  The peer's: past ``max_in_flight`` they wait
in the :attr:`backlog`, undecoded (a flooder's whole read is not decoded
ahead of everyone else's; each is decoded as it is released);
:meth:`Connection.respond` frames an answer once (refusing one past the
frame limit, or one the caller's ``room`` says the send queue cannot hold),
:meth:`Connection.release` hands out the waiting requests the answers made
room for, and :attr:`saturated` says whether to stop reading the peer
meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Union

import attrs

from blueprint_net._core import framing, gossip_wire, stream_wire, wire
from blueprint_net._core.connection_events import (
    ConnectionEvent,
    ConnectionFailed,
    GossipReceived,
    PeerVerified,
    ResponseReceived,
    StreamFrames,
)
from blueprint_net._core.errors import (
    ErrorCode,
    HandshakeFailed,
    PeerLost,
    ProtocolError,
    WireError,
)
from blueprint_net._core.handshake import Handshake
from blueprint_net._core.handshake_states import HandshakeState, PeerProven, Phase
from blueprint_net._core.identity import Identity, PeerId
from blueprint_net._core.messaging import Deadlines, Requests

_STREAM_FIRST, _STREAM_LAST = stream_wire.TYPES[0], stream_wire.TYPES[-1]
_GOSSIP_FIRST, _GOSSIP_LAST = gossip_wire.T_PUBLISH, gossip_wire.T_LAST
_T_REQUEST = wire.T_REQUEST
_RESPONSES = (wire.SuccessResponse, wire.ProtocolResponse, wire.ErrorResponse)
_VERIFIED = Phase.VERIFIED


@attrs.define
class _Held:
    """What the peer sent after its proof, kept until the decision: frame
    bodies of the proving read, then later reads whole (framed only once the
    decision has set the frame limit)."""

    bodies: list[bytes]
    reads: list[bytes] = attrs.Factory(list)


class Connection:
    """The protocol state of one connection, from either end."""

    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        expected_peer: Optional[PeerId] = None,
        max_frame: int = wire.DEFAULT_MAX_FRAME,
        nonce: Optional[bytes] = None,
        max_in_flight: Optional[int] = None,
    ) -> None:
        self.handshake = Handshake(
            identity,
            initiator=initiator,
            expected_peer=expected_peer,
            nonce=nonce,
        )
        self.max_frame = max_frame
        self._framer = framing.FrameDecoder(min(wire.HANDSHAKE_MAX_FRAME, max_frame))
        self._outgoing: list[bytes] = []
        #: Bytes queued for the peer and not taken yet (:meth:`chunks_to_send`):
        #: what the send queue's room check counts beside its own queue.
        self.unsent = 0
        self.requests: Requests[Any] = Requests(max_in_flight)
        #: The bodies of the peer's requests past ``max_in_flight``, in
        #: order: decoded and handed out by :meth:`release` as earlier ones
        #: end (other frames go on).
        self.backlog: list[bytes] = []
        #: When our pending requests time out (see :meth:`expire`).
        self.deadlines = Deadlines()
        self.closed = False
        #: Closed, or a proven peer awaits the decision: no read is processed
        #: now (one test on the hot path covers both).
        self._halted = False
        self._held: Optional[_Held] = None
        self._max_gossip_frame: Optional[int] = None
        #: Whether stream frames are taken from the verified peer (else they
        #: are unknown types, as on a node that does not speak streams).
        self.streams = False

    @property
    def max_gossip_frame(self) -> Optional[int]:
        """Largest gossip frame taken from the verified peer; None: gossip
        frames are refused as unknown types (a node without a router).
        The framer refuses a longer one at its type byte, before buffering."""
        return self._max_gossip_frame

    @max_gossip_frame.setter
    def max_gossip_frame(self, cap: Optional[int]) -> None:
        self._max_gossip_frame = cap
        if cap is not None:
            self._framer.cap(range(gossip_wire.T_PUBLISH, gossip_wire.T_LAST + 1), cap)

    @property
    def state(self) -> HandshakeState:
        return self.handshake.state

    @property
    def peer_id(self) -> Optional[PeerId]:
        return self.handshake.peer_id

    @property
    def verified(self) -> bool:
        return self.handshake.phase is _VERIFIED

    @property
    def saturated(self) -> bool:
        """The peer has ``max_in_flight`` requests handed out, or more
        waiting: stop reading it until one ends."""
        return bool(self.backlog) or self.requests.full

    @property
    def next_deadline(self) -> Optional[float]:
        """When the first of our pending requests times out, if any."""
        return self.deadlines.earliest()

    @property
    def buffered(self) -> int:
        """Bytes of a partial frame held by the framer."""
        return self._framer.buffered

    # -- output -------------------------------------------------------------

    def _queue(self, message: wire.Message) -> None:
        self._push(framing.frame_chunks(message))

    def _push(self, chunks: list[bytes]) -> None:
        self._outgoing.extend(chunks)
        self.unsent += len(chunks[0]) if len(chunks) == 1 else sum(map(len, chunks))

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        return b"".join(self.chunks_to_send())

    def chunks_to_send(self) -> list[bytes]:
        """The same, unjoined: for ``writeSequence``, so a large payload is
        copied once, by the transport (see :func:`framing.frame_chunks`)."""
        chunks, self._outgoing = self._outgoing, []
        self.unsent = 0
        return chunks

    def initiate(self) -> None:
        """The transport is up: queue our ``Hello``."""
        for message in self.handshake.start():
            self._queue(message)

    def start_bound(
        self, binding: bytes, certified_peer: PeerId
    ) -> list[ConnectionEvent]:
        """TLS completed with ALPN ``blueprint/1``: the TLS variant of the
        handshake, bound to the exporter ``binding``, with the peer its
        certificate names (the dialer's Proof is queued).  Instead of
        :meth:`initiate`; returns a :class:`ConnectionFailed` if the
        certificate names us or an unexpected peer."""
        try:
            messages = self.handshake.start_bound(binding, certified_peer)
        except HandshakeFailed as error:
            return [self._close(ConnectionFailed(error))]
        for message in messages:
            self._queue(message)
        return []

    def set_channel_binding(self, value: bytes) -> None:
        """The TLS exporter value, once the TLS handshake is complete (before
        any application data, so before the first signature)."""
        self.handshake.set_channel_binding(value)

    def send(self, message: wire.Message) -> None:
        """Queue an application message; only once ``Verified``."""
        self._check_sendable()
        self._push(framing.frame_chunks(message))

    def request(
        self,
        protocol: str,
        payload: bytes,
        metadata: Optional[bytes] = None,
        token: Any = None,
        deadline: Optional[float] = None,
    ) -> int:
        """Queue a request; its id (0, asking for no response, without a
        ``token``).  ``ValueError`` if it could not travel.  With a
        ``deadline``, :meth:`expire` gives it up then."""
        self._check_sendable()  # before a token is registered to wait
        request_id = self.requests.request(token)
        try:
            chunks = framing.request_chunks(
                request_id, protocol, payload, metadata, self.max_frame
            )
        except ValueError:
            self.requests.abandon(request_id)
            raise
        self._push(chunks)
        if deadline is not None and request_id:
            self.deadlines.add(request_id, deadline)
        return request_id

    def expire(self, now: float) -> list[tuple[int, Any]]:
        """Give up our requests whose deadline is ``now`` or past: their ids
        and tokens, to be failed (a late response is then ignored)."""
        expired = []
        abandon = self.requests.abandon
        for request_id in self.deadlines.expire(now):
            token = abandon(request_id)
            if token is not None:
                expired.append((request_id, token))
        return expired

    def respond(
        self,
        response: wire.Response,
        room: Optional[Callable[[int], bool]] = None,
    ) -> None:
        """Answer a request the peer sent.  Its end may make room for the
        requests waiting in the :attr:`backlog`: :meth:`release` hands them
        out (after a read's answers, all at once).

        The answer is framed once, here: one past the frame limit becomes a
        ``PAYLOAD_TOO_LARGE`` Error, and one that ``room(frame size)`` says
        the send queue cannot hold a short ``RATE_LIMITED`` Error.  Nothing
        is sent for a request that wanted no response, or once closed.
        """
        if self.requests.respond(response) is None or self.closed:
            return
        request_id = response.request_id
        try:
            chunks = framing.frame_chunks(response, self.max_frame)
        except ValueError:
            chunks = framing.frame_chunks(framing.oversized(response, self.max_frame))
        else:
            size = len(chunks[0]) if len(chunks) == 1 else sum(map(len, chunks))
            if room is not None and not room(size):
                # The peer asks faster than it reads: it gets a short
                # answer rather than one the queue cannot hold.
                chunks = framing.frame_chunks(
                    wire.ErrorResponse(
                        request_id,
                        ErrorCode.RATE_LIMITED,
                        "not reading: the send queue is full",
                    )
                )
        self._push(chunks)

    def lost(self) -> list[Any]:
        """The transport is gone: the tokens of our pending requests, to be
        failed; nothing else is waited for, and nothing more is sent."""
        self.closed = self._halted = True
        self.deadlines.clear()
        self.backlog.clear()
        return self.requests.close()

    def send_frame(self, frame: bytes) -> None:
        """Queue an already-encoded frame (one encoding, many peers)."""
        self._check_sendable()
        self._outgoing.append(frame)
        self.unsent += len(frame)

    def _check_sendable(self) -> None:
        """``PeerLost`` once closed (it may happen any time: the caller
        copes); ``RuntimeError`` before ``Verified`` (a programming error)."""
        if self.closed:
            raise PeerLost("the connection closed")
        if not self.verified:
            raise RuntimeError("cannot send before the handshake completes")

    def fail(self, error: ProtocolError) -> ConnectionFailed:
        """Fail locally (a timeout, a policy decision): tell the peer, close."""
        if not self.verified and isinstance(error, HandshakeFailed):
            self.handshake.fail(error.code, error.message)
        return self._close(ConnectionFailed(error))

    def timed_out(self) -> ConnectionFailed:
        return self._close(ConnectionFailed(self.handshake.timed_out()))

    def accept(self) -> list[ConnectionEvent]:
        """Admit the peer of the last :class:`PeerProven`: ``Verified``.

        Returns :class:`PeerVerified`, then the events of what the peer sent
        after its proof, exactly as if they had arrived now.
        """
        for message in self.handshake.accept():
            self._queue(message)
        held, self._held = self._held, None
        assert held is not None and self.handshake.peer_id is not None
        self._halted = False
        self._framer.max_length = self.max_frame
        events: list[ConnectionEvent] = [PeerVerified(self.handshake.peer_id)]
        self._receive_verified(held.bodies, events)
        for data in held.reads:
            events += self.receive_data(data)
        return events

    def refuse(self, code: ErrorCode, reason: str) -> ConnectionFailed:
        """Refuse the peer of the last :class:`PeerProven` (a ban, a limit):
        the peer is told ``code``; what it sent after its proof is dropped."""
        return self._close(ConnectionFailed(self.handshake.refuse(code, reason)))

    def _close(self, event: ConnectionFailed) -> ConnectionFailed:
        if not self.closed:
            self.closed = self._halted = True
            self._held = None
            self.backlog.clear()
            if not event.error.remote:
                self._queue(wire.Error(event.error.code, event.error.message))
        return event

    # -- input --------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ConnectionEvent]:
        """Feed bytes from the peer; returns what happened, in order.

        A :class:`ConnectionFailed` event is always last: the caller sends
        :meth:`data_to_send` (the ``Error`` for the peer) and closes.  So is
        a :class:`PeerProven`: nothing more is read until :meth:`accept` or
        :meth:`refuse`.
        """
        if self._halted:
            if self._held is not None:  # the decision comes first
                self._held.reads.append(data)
            return []
        over: Optional[framing.FrameTooLarge] = None
        try:
            bodies = self._framer.feed(data)
        except framing.FrameTooLarge as error:
            if self.verified:
                return [self._close(ConnectionFailed(error))]
            # Frames behind a proof are read under the Verified limit (the
            # peer may send them right behind its proof, in the same read):
            # the handshake sees the frames before this one first.
            bodies, over = error.frames, error
        except WireError as error:
            return [self._close(ConnectionFailed(error))]
        events: list[ConnectionEvent] = []
        if self.handshake.phase is _VERIFIED:  # self.verified, on the hot path
            self._receive_verified(bodies, events)
            return events
        for index, body in enumerate(bodies):
            try:
                outputs = self.handshake.receive(wire.decode(body))
            except ProtocolError as error:
                events.append(self._close(ConnectionFailed(error)))
                return events
            for output in outputs:
                if isinstance(output, PeerProven):
                    # The rest waits for accept() or refuse().
                    self._halted = True
                    self._held = _Held(bodies[index + 1 :])
                    if over is not None:
                        self._held.reads.append(over.rest)
                    events.append(output)
                    return events
                self._queue(output)
        if over is not None:  # no proof before it: over the handshake's limit
            events.append(self._close(ConnectionFailed(over)))
        return events

    def release(self) -> list[ConnectionEvent]:
        """The backlog's requests, in order, while the in-flight bound
        allows (some of the peer's requests have ended), for the caller to
        serve; a :class:`ConnectionFailed` last if one of them is malformed
        (they are decoded only now).  Empty when none can be let out."""
        events: list[ConnectionEvent] = []
        requests, backlog = self.requests, self.backlog
        decode = wire.decode
        taken = 0
        while taken < len(backlog) and not requests.full and not self.closed:
            body = backlog[taken]
            taken += 1
            try:
                request = decode(body)
            except WireError as error:
                events.append(self._close(ConnectionFailed(error)))
                break
            assert isinstance(request, wire.Request)  # by its type byte
            refusal = requests.request_received(request)
            if refusal is None:
                events.append(request)
            else:
                self._queue(refusal)
        del backlog[:taken]
        return events

    def _receive_verified(
        self, bodies: list[bytes], events: list[ConnectionEvent]
    ) -> None:
        decode = wire.decode
        requests = self.requests
        streams = self.streams
        gossip_on = self._max_gossip_frame is not None
        run: Optional[list[bytes]] = None  # the bodies of the last StreamFrames
        for body in bodies:
            if streams and body and _STREAM_FIRST <= body[0] <= _STREAM_LAST:
                # Before decode: no exception on this path.
                if run is None:
                    run = []
                    events.append(StreamFrames(run))
                run.append(body)
                continue
            run = None
            if gossip_on and body and _GOSSIP_FIRST <= body[0] <= _GOSSIP_LAST:
                gossip = self._gossip(body)  # by its type byte: no exception
                events.append(gossip)
                if isinstance(gossip, ConnectionFailed):
                    return
                continue
            if body and body[0] == _T_REQUEST and (self.backlog or requests.full):
                # Waits, undecoded: see release().
                self.backlog.append(body)
                continue
            try:
                message = decode(body)
            except WireError as error:
                events.append(self._close(ConnectionFailed(error)))
                return
            if isinstance(message, wire.Request):
                refusal = requests.request_received(message)
                if refusal is None:
                    events.append(message)
                else:
                    self._queue(refusal)
            elif isinstance(message, _RESPONSES):
                token = requests.response_received(message)
                if token is not None:  # else: late, after its timeout
                    self.deadlines.discard(message.request_id)
                    events.append(ResponseReceived(message, token))
            elif isinstance(message, wire.Ping):
                self._queue(wire.Pong(message.opaque))
            elif isinstance(message, wire.Pong):
                pass  # any frame proves the peer alive; see PeerProtocol
            elif isinstance(message, wire.Error):
                failure = ProtocolError.from_peer(message.code, message.message)
                events.append(self._close(ConnectionFailed(failure)))
                return
            else:
                events.append(
                    self._close(
                        ConnectionFailed(
                            ProtocolError(
                                ErrorCode.UNEXPECTED_MESSAGE,
                                f"{type(message).__name__} after the handshake",
                            )
                        )
                    )
                )
                return

    def _gossip(self, body: bytes) -> Union[GossipReceived, ConnectionFailed]:
        """A body of a gossip type, gossip being on (without it, the type is
        one ``wire.decode`` does not know); the framer refused a frame over
        the gossip cap at its type byte."""
        try:
            message = gossip_wire.decode(body)
        except WireError as bad:
            return self._close(ConnectionFailed(bad))
        assert isinstance(message, gossip_wire.GOSSIP_TYPES)
        return GossipReceived(message, body)
