"""Durable streams on a node: the sans-IO machines (``_core/streams.py``)
driven by the node's verified connections, clock and memory budget, and the
application's :class:`Stream` objects (``stream_objects``, with the life
behind each stream and what is kept per peer).

Layer: adapters (Twisted).  ``docs/protocol.md`` section 10 is the protocol.

**In:** stream frame bodies of the connection kept for each peer id
(:meth:`StreamHost.received`, from the connection host after ``Verified``);
that connection's coming and going (:meth:`StreamHost.link_changed`,
:meth:`StreamHost.connection_closed`); the application's
:meth:`StreamHost.open` and each :class:`Stream`'s ``send``, ``put`` and
``reset``; the node's clock.

**Out:** the machines' frames written through the kept connection's
outbound queue; each message delivered to its stream's ``on_message``;
:class:`StreamReset` to ``on_reset`` and to whoever waits on the stream;
the bytes held charged to the node's :class:`MemoryBudget`; the peer's
violations (``213``-``215``, ``UNEXPECTED_MESSAGE`` and decoding errors)
closing its connection with that code, which the host charges to the peer
(``connection.MISBEHAVIOUR``); counters (``streams.*``).

**What it decides.**  A peer's machine is made lazily: when the application
opens a stream to it, or when the peer's hello comes (a node whose
application never uses streams sends no stream frame to anyone, so a peer
that does not speak them is never bothered).  It is kept across that peer's
connections, and forgotten once it holds no stream, no message and no link:
only its numbers stay (incarnations, window, stream limit, reset counts: a
few integers), for ``remembered_peers`` peers, least recently used dropped
first.  A peer whose numbers were dropped is afterwards shown a new
incarnation (:attr:`StreamHost.incarnation` changes whenever one is
dropped): to it we restarted, which is the truth about its streams (10.2),
and no reset number is ever reused with it.

Messages of a stream the application has not opened (*unclaimed*) are held
by :class:`Unclaimed` (``unclaimed``: its bounds and the ``UNCLAIMED``
reset past them); :meth:`StreamHost.open` claims them, handed over in order
on the next reactor turn, before anything newer.

One timer (:meth:`StreamHost._tick`) serves the acknowledgements due for
``ack_delay`` and the unclaimed streams' deadlines; it runs only while one
of them is pending.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from typing import Any, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from blueprint_net._adapters.peers import PeerTable
from blueprint_net._adapters.protocol import PeerProtocol
from blueprint_net._adapters.stream_objects import (
    MessageCallback,
    PeerNumbers,
    ResetCallback,
    Stream,
    StreamLife,
    StreamPeer,
    StreamReset,
    reset_label,
)
from blueprint_net._adapters.unclaimed import Unclaimed
from blueprint_net._core.errors import (
    ProtocolError,
    WireError,
)
from blueprint_net._core.identity import PeerId
from blueprint_net._core.stream_states import (
    Delivered,
    Reset,
    StreamSettings,
    StreamState,
)
from blueprint_net._core.stream_wire import MAX_STREAM_ID, T_STREAM_DATA, ResetCode
from blueprint_net._core.streams import PeerStreams
from blueprint_net._core.telemetry import (
    STREAM_PEERS_FORGOTTEN,
    STREAM_RESETS,
    STREAM_VIOLATIONS,
)
from blueprint_net._policy.resources import MemoryBudget


def _random_incarnation() -> int:
    return int.from_bytes(os.urandom(8), "big")


_OPEN = StreamState.OPEN


class StreamHost:
    """Every durable stream of one node; see the module."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        settings: StreamSettings,
        peers: PeerTable,
        memory: MemoryBudget,
        counters: Counter[str],
        *,
        incarnation: Optional[int] = None,
    ) -> None:
        self.clock, self.settings = clock, settings
        self.memory, self.counters = memory, counters
        self._table = peers
        #: Shown to every peer whose machine is made afresh (10.2): random
        #: at start, and again whenever a peer's numbers are dropped.
        self.incarnation = _random_incarnation() if incarnation is None else incarnation
        self.peers: dict[PeerId, StreamPeer] = {}
        #: Forgotten peers' numbers, least recently used first.
        self.remembered: OrderedDict[PeerId, PeerNumbers] = OrderedDict()
        #: Peers with acknowledgements possibly due: what the one timer
        #: looks at, with the unclaimed streams' deadlines.
        self._acking: dict[StreamPeer, None] = {}
        #: Messages of streams the application has not opened.
        self.unclaimed = Unclaimed(
            clock,
            settings,
            memory,
            counters,
            write=self.write,
            charge=self.charge,
            arm=self._arm,
        )
        self._timer: Optional[IDelayedCall] = None
        #: Peers whose sends are written at the end of this reactor turn,
        #: together (one write for a burst of small messages).
        self._sending: dict[StreamPeer, None] = {}
        self._flush: Optional[IDelayedCall] = None
        self.stopped = False

    # -- the application's side ---------------------------------------------

    def open(
        self,
        peer_id: PeerId,
        name: bytes,
        on_message: MessageCallback,
        on_reset: Optional[ResetCallback] = None,
    ) -> Stream:
        """The stream ``name`` with ``peer_id``; see ``Node.stream``."""
        if not isinstance(peer_id, PeerId):
            raise TypeError(
                f"peer_id is a PeerId, not {type(peer_id).__name__}"
                " (PeerId.from_string reads the text form)"
            )
        if not isinstance(name, bytes):
            raise TypeError(f"a stream name is bytes, not {type(name).__name__}")
        if not 1 <= len(name) <= MAX_STREAM_ID:
            raise ValueError(f"a stream name is 1 to {MAX_STREAM_ID} bytes")
        if self.stopped:
            raise RuntimeError("the node is stopping: no new stream")
        state = self._peer(peer_id)
        if name in state.streams:
            raise ValueError(f"stream {name!r} with {peer_id} is open already")
        life = state.streams[name] = StreamLife(self, state, name, on_message, on_reset)
        held = self.unclaimed.claim(state, name)
        if held is not None:
            life.backlog = held.messages
            self.clock.callLater(0, life.hand_over)
        if state.link is None:
            kept = self._table.get(peer_id)
            if kept is not None and not kept.connection.closed:
                self._connect(state, kept)
        return Stream(life)

    # -- the connection host's side -----------------------------------------

    def link_changed(self, peer_id: PeerId) -> None:
        """A connection to ``peer_id`` was verified: if the peer table now
        keeps one other than the machine's, the machine moves to it."""
        state = self.peers.get(peer_id)
        kept = self._table.get(peer_id)
        if state is None or kept is None or state.link is kept or self.stopped:
            return
        if state.link is not None:
            state.machine.disconnected()
        self._connect(state, kept)

    def connection_closed(self, protocol: PeerProtocol) -> None:
        """A connection is gone, with whatever was in flight on it."""
        peer_id = protocol.peer_id
        state = None if peer_id is None else self.peers.get(peer_id)
        if state is None or state.link is not protocol:
            return
        state.link = None
        state.machine.disconnected()
        self._acking.pop(state, None)
        self._forget_if_idle(state)

    def received(self, protocol: PeerProtocol, bodies: list[bytes]) -> None:
        """Stream frame bodies from a verified peer, in a row: fed to its
        machine, then what came out acted on once."""
        connection = protocol.connection
        peer_id = protocol.peer_id
        assert peer_id is not None
        state = self.peers.get(peer_id)
        if state is None or state.link is not protocol:
            if connection.closed or self._table.get(peer_id) is not protocol:
                # A duplicate the table did not keep, or frames after a
                # violation of the same read (the link was let go).
                return
            if state is None:
                state = self._peer(peer_id)
            if state.link is not None:
                state.machine.disconnected()
            self._connect(state, protocol)
        machine = state.machine
        receive = machine.receive
        data = other = False
        violation = None
        try:
            for body in bodies:
                receive(body)
                if body[0] == T_STREAM_DATA:
                    data = True
                else:
                    other = True
        except (WireError, ProtocolError) as error:
            violation = error  # what came before it stands (10.3)
        out = machine.data_to_send()
        if out and not connection.closed:  # closed: the peer said goodbye
            connection.send_frame(out[0] if len(out) == 1 else b"".join(out))
        events = machine.events()
        if events:
            self._handle(state, events)
        if violation is not None:
            self.counters[STREAM_VIOLATIONS.key_for(violation.code.name)] += 1
            protocol.close(violation)  # the host charges it (MISBEHAVIOUR)
            self.connection_closed(protocol)  # nothing more is read from it
        elif data:
            state.last_data = self.clock.seconds()
            if state not in self._acking:
                self._acking[state] = None
                self._arm()
        if other and state.stalled:
            state.stalled = False  # a hello or reset may have freed a stream
            self._wake(state)
        if other and state.draining:  # acknowledgements may have come
            for life in list(state.draining):
                life.drained()
        if state.charged != machine.buffered_bytes + state.unclaimed_bytes + (
            state.handed
        ):
            self.charge(state)

    def stop(self) -> None:
        """The node stops: every stream is reset (the peers are told, as
        far as the connections still carry it) and reported ``CANCELLED``;
        the timer stops."""
        self.stopped = True
        for state in list(self.peers.values()):
            for life in list(state.streams.values()):
                self.reset_stream(life, ResetCode.CANCELLED, report=True)
            for name in list(state.unclaimed):
                state.machine.reset(name, ResetCode.CANCELLED)
                self.unclaimed.drop_unclaimed(state, name)
            self.write(state)
        self._acking.clear()
        self.unclaimed.holding.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._write_all()
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None

    def status(self) -> dict[str, int]:
        """Figures for the status page."""
        peers = self.peers.values()
        return {
            "peers": len(self.peers),
            "streams": sum(len(s.streams) for s in peers),
            "unclaimed": sum(len(s.unclaimed) for s in peers),
            "buffered_bytes": sum(s.charged for s in peers),
            "remembered_peers": len(self.remembered),
        }

    # -- the machines -------------------------------------------------------

    def _peer(self, peer_id: PeerId) -> StreamPeer:
        """The peer's state, made (from its numbers if remembered)."""
        state = self.peers.get(peer_id)
        if state is not None:
            return state
        numbers = self.remembered.pop(peer_id, None)
        incarnation = self.incarnation if numbers is None else numbers.incarnation
        machine = PeerStreams(incarnation, self.settings)
        if numbers is not None:
            machine.peer_incarnation = numbers.peer_incarnation
            machine.peer_window = numbers.peer_window
            machine.peer_max_streams = numbers.peer_max_streams
            machine.peer_resets = numbers.peer_resets
            machine.resets_sent = numbers.resets_sent
        state = self.peers[peer_id] = StreamPeer(peer_id, machine)
        return state

    def _forget_if_idle(self, state: StreamPeer) -> None:
        """Forget a peer with no link, no stream and nothing held; keep its
        numbers (see the module).  (A stream held unclaimed is open in the
        machine: ``stream_count`` covers it.)"""
        if state.link is not None or state.streams or state.machine.stream_count:
            return
        peer_id = state.peer_id
        del self.peers[peer_id]
        self.unclaimed.holding.pop(state, None)
        self.charge(state)  # to 0
        if self.settings.remembered_peers == 0:
            self._dropped()
            return
        remembered = self.remembered
        remembered[peer_id] = state.numbers()
        while len(remembered) > self.settings.remembered_peers:
            remembered.popitem(last=False)
            self._dropped()

    def _dropped(self) -> None:
        """A peer's numbers are gone: from now on a peer met afresh is
        shown a new incarnation (it may be that one)."""
        self.counters[STREAM_PEERS_FORGOTTEN.key] += 1
        self.incarnation = _random_incarnation()

    def _connect(self, state: StreamPeer, protocol: PeerProtocol) -> None:
        state.link = protocol
        state.machine.connected()
        self.write(state)

    def soon(self, state: StreamPeer) -> None:
        """Write what ``state``'s machine queued at the end of this turn."""
        self._sending[state] = None
        if self._flush is None:
            self._flush = self.clock.callLater(0, self._write_all)

    def _write_all(self) -> None:
        self._flush = None
        sending, self._sending = self._sending, {}
        for state in sending:
            self.write(state)

    def write(self, state: StreamPeer) -> None:
        """What the machine queued, through its connection's queue (not the
        send queue's bound: the window bounds a peer's stream bytes, and a
        frame left out would be a gap to the peer)."""
        out = state.machine.data_to_send()
        link = state.link
        if not out or link is None or link.connection.closed:
            return  # nothing, or lost with the connection (resent on the next)
        link.connection.send_frame(out[0] if len(out) == 1 else b"".join(out))
        link.outbound.flush()

    def charge(self, state: StreamPeer) -> None:
        held = state.machine.buffered_bytes + state.unclaimed_bytes + state.handed
        if self.peers.get(state.peer_id) is not state:
            held = 0  # forgotten
        self.memory.charge(held - state.charged)
        state.charged = held

    def _handle(self, state: StreamPeer, events: list[Any]) -> None:
        streams, stream_state = state.streams, state.machine.state
        for event in events:
            kind = type(event)
            if kind is Delivered:
                name = event.stream
                for payload in event.payloads:
                    # A callback (or an unclaimed stream's bound) may have
                    # reset the stream since the machine delivered these,
                    # and its name may be open afresh: the rest belonged to
                    # the life that ended, and is dropped, never held.
                    if stream_state(name) is not _OPEN:
                        break
                    life = streams.get(name)
                    if life is not None:
                        life.deliver(payload)
                    else:
                        self.unclaimed.hold(state, name, payload)
            elif kind is Reset:
                self._ended(state, event)
            else:  # Room
                state.blocked = False
                self._wake(state)

    def _wake(self, state: StreamPeer) -> None:
        for life in list(state.waiting):
            life.wake()

    def _ended(self, state: StreamPeer, event: Reset) -> None:
        self.counters[STREAM_RESETS.key_for(reset_label(event.code))] += 1
        life = state.streams.pop(event.stream, None)
        if life is not None:
            error = StreamReset(
                state.peer_id, event.stream, event.code, by_peer=event.remote
            )
            life.end(error, report=True)
        elif event.stream in state.unclaimed:
            self.unclaimed.drop_unclaimed(state, event.stream)
        if state.stalled:
            state.stalled = False
            self._wake(state)

    def reset_stream(self, life: StreamLife, code: int, report: bool = False) -> None:
        """End ``life`` here (the application's reset, or the node stops);
        nothing happens to a life already ended (reset twice, or by a
        callback while the node stops: that end stands)."""
        if life.error is not None:
            return
        state, name = life.peer, life.name
        state.machine.reset(name, code)
        if state.streams.get(name) is life:
            del state.streams[name]
        self.counters[STREAM_RESETS.key_for(reset_label(code))] += 1
        life.end(StreamReset(state.peer_id, name, code, by_peer=False), report)
        self.write(state)
        self.charge(state)
        self._forget_if_idle(state)

    # -- the one timer --------------------------------------------------------

    def _deadline(self) -> Optional[float]:
        due = []
        if self._acking:
            due.append(self.clock.seconds() + self.settings.ack_delay)
        held = self.unclaimed.deadline()
        if held is not None:
            due.append(held)
        return min(due, default=None)

    def _arm(self) -> None:
        when = self._deadline()
        timer = self._timer
        if timer is not None and timer.active():
            if when is not None and timer.getTime() <= when:
                return
            timer.cancel()
        self._timer = None
        if when is not None and not self.stopped:
            delay = max(0.0, when - self.clock.seconds())
            self._timer = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        """Acknowledge what is due; reset the unclaimed streams that waited
        ``unclaimed_timeout``; sleep until the next of either."""
        self._timer = None
        now = self.clock.seconds()
        delay = self.settings.ack_delay
        for state in list(self._acking):
            state.machine.tick(now)
            self.write(state)
            if now >= state.last_data + delay:
                del self._acking[state]  # every acknowledgement went out
        self.unclaimed.expire(now)
        self._arm()
