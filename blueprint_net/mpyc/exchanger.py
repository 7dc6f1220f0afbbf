"""MPyC's per-peer message exchange over blueprint-net durable streams.

Layer: surface (an optional integration; imports MPyC, which has no types).

In: an MPyC ``Runtime``, a :class:`~blueprint_net.node.Node` (its durable
streams, ``Node.stream``) and the parties' peer ids in MPyC's index order.  Out: the
runtime's ``start`` replaced (:func:`install`), so that ``await mpc.start()``
opens one stream per peer instead of MPyC's TCP connections, and each
``Party.protocol`` is a :class:`StreamExchanger`.

The seam is what MPyC's runtime uses of a connection, and nothing else:
``Runtime._send_message``/``_receive_message`` call ``protocol.send(pc,
payload)`` and ``protocol.receive(pc)``; ``Runtime.shutdown`` reads
``protocol.nbytes_sent``, calls ``close_connection()`` for the higher
parties and waits for ``unset_protocol`` from both sides;
``Runtime.start`` ends with ``set_protocol`` for every peer.  MPyC's own
``shutdown``, ``transfer`` and everything above them run unchanged.

Messages on a stream (the stream keeps their boundaries, order and
exactly-once delivery, so there is no size field):

- the first message each way is the hello: the PRSS keys that MPyC's client
  sends after its 2-byte pid (the pid is the proven peer id now);
- ``pc`` (8 bytes, little-endian, signed) + payload: one MPyC message;
- ``b"bye"``: nothing more follows (MPyC's TCP close);
- ``b"F"`` + a 4-byte count ``k``: the next ``k`` messages are the parts of
  one ``pc`` + payload too large for one stream message.

Shorter than 8 bytes is what tells a control message from an MPyC one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Optional

from mpyc import asyncoro
from twisted.internet import defer

from blueprint_net import PeerId
from blueprint_net.errors import StreamReset
from blueprint_net.node import Node
from blueprint_net.streams import ResetCode

#: The last message each way (MPyC closes its TCP connection there).
BYE = b"bye"
#: Tag of the message announcing a message sent in parts.
PARTS = b"F"
#: Largest stream message we send; a larger MPyC message goes in parts so
#: that no single message comes near the stream window.
PART_SIZE = 256 * 1024
#: MPyC's program counter: 8 bytes, little-endian, signed.
PC_SIZE = 8
#: Application reset code for a peer that broke this framing.
RESET_BAD_FRAMING = 1000


def session_digest(parties: Sequence[PeerId]) -> bytes:
    """16 bytes naming the party list *in index order*: parties given the
    list in another order (so other indexes) never share a stream."""
    return hashlib.sha256(b"".join(p.public_key for p in parties)).digest()[:16]


def stream_name(parties: Sequence[PeerId], generation: int) -> bytes:
    """The stream of one ``mpc.start()`` (a program may start again after
    ``shutdown``; each start has its own streams)."""
    return b"bn/mpyc/" + session_digest(parties) + b"/%d" % generation


class StreamExchanger(asyncoro.MessageExchanger):  # type: ignore[misc]
    """MPyC's ``MessageExchanger`` for one peer, over a durable stream.

    It keeps MPyC's buffering (``receive`` and ``buffers`` are inherited: a
    message that arrives before it is asked for waits in ``buffers`` under
    its pc, one asked for before it arrives is a Future there), and
    replaces what touched the transport.
    """

    def __init__(
        self,
        runtime: Any,
        peer_pid: int,
        node: Node,
        peer_id: PeerId,
        name: bytes,
    ) -> None:
        super().__init__(runtime, peer_pid)
        self.peer_id = peer_id
        #: Our messages the stream had no room for yet, in order (MPyC's
        #: ``send`` cannot wait; an asyncio transport buffers the same way).
        self._waiting: deque[bytes] = deque()
        self._room: Optional[defer.Deferred[None]] = None
        #: The peer's hello, once it came (it may come before ``begin``).
        self._hello: Optional[bytes] = None
        self._begun = False
        self._parts_left = 0
        self._parts: list[bytes] = []
        self._bye_sent = self._bye_received = False
        self._error: Optional[Exception] = None
        self.stream = node.stream(peer_id, name, self._message, self._reset)

    def begin(self) -> None:
        """Send our hello; register the peer once its hello is here.

        Separate from opening the stream: the stream is claimed early (so
        that a peer that starts first is not held as unclaimed), while the
        PRSS keys are the ones of ``mpc.start()`` time (a program may set
        ``mpc.threshold`` before it, which makes new keys).
        """
        self._begun = True
        if self._error is not None:
            return
        keys: list[bytes] = []
        if not self.runtime.options.no_prss:
            keys = self.runtime._prss_keys_to_peer(self.peer_pid)
        self._put(b"".join(keys))
        if self._hello is not None:
            self._take_hello(self._hello)

    # -- what MPyC's runtime calls ----------------------------------------

    def send(self, pc: int, payload: bytes) -> None:
        """Send ``payload`` labelled ``pc`` (``Runtime._send_message``)."""
        if self._error is not None:
            raise self._error
        message = pc.to_bytes(PC_SIZE, "little", signed=True) + payload
        self.nbytes_sent += len(message)
        if len(message) <= PART_SIZE:
            self._put(message)
            return
        parts = [message[i : i + PART_SIZE] for i in range(0, len(message), PART_SIZE)]
        self._put(PARTS + len(parts).to_bytes(4, "big"))
        for part in parts:
            self._put(part)

    def receive(self, pc: int) -> Any:
        """A message already here, else a Future for it; a failed Future
        once the stream has ended without a goodbye."""
        if self._error is not None and not isinstance(
            self.buffers.get(pc, None), bytes
        ):
            failed: asyncio.Future[bytes] = asyncio.Future(loop=self.runtime._loop)
            failed.set_exception(self._error)
            return failed
        return super().receive(pc)

    def close_connection(self) -> None:
        """Say goodbye: after everything sent so far (MPyC's TCP close)."""
        if self._bye_sent or self._error is not None:
            return
        self._bye_sent = True
        self._put(BYE)

    # -- the stream's side --------------------------------------------------

    def _put(self, message: bytes) -> None:
        if self._waiting or not self.stream.send(message):
            self._waiting.append(message)
            self._wait()

    def _wait(self) -> None:
        if self._room is None:
            self._room = self.stream.wait_for_room()
            self._room.addCallbacks(self._drain, self._room_failed)

    def _drain(self, _: object) -> None:
        self._room = None
        if self._error is not None:  # the stream ended: nothing will go
            self._waiting.clear()
            return
        while self._waiting:
            if not self.stream.send(self._waiting[0]):
                self._wait()
                return
            self._waiting.popleft()

    def _room_failed(self, failure: Any) -> None:
        self._room = None
        self._reset(failure.value)

    def _message(self, message: bytes) -> None:
        if self._hello is None:
            self._hello = message
            if self._begun:
                self._take_hello(message)
        elif self._parts_left:
            self._parts.append(message)
            self._parts_left -= 1
            if not self._parts_left:
                whole, self._parts = b"".join(self._parts), []
                self._deliver(whole)
        elif len(message) >= PC_SIZE:
            self._deliver(message)
        elif message == BYE:
            self._take_bye()
        elif message[:1] == PARTS and len(message) == 5:
            self._parts_left = int.from_bytes(message[1:], "big")
        else:
            self._broken(f"an unknown control message {message!r}")

    def _take_hello(self, keys: bytes) -> None:
        runtime = self.runtime
        if not runtime.options.no_prss:
            expected = runtime._prss_keys_from_peer(self.peer_pid)
            if len(keys) != expected:
                self._broken(
                    f"{len(keys)} bytes of PRSS keys, not {expected}"
                    " (a different threshold or party count?)"
                )
                return
            runtime._prss_keys_from_peer(self.peer_pid, keys)
        runtime.set_protocol(self.peer_pid, self)

    def _deliver(self, message: bytes) -> None:
        pc = int.from_bytes(message[:PC_SIZE], "little", signed=True)
        payload = message[PC_SIZE:]
        waiting = self.buffers.pop(pc, None)
        if isinstance(waiting, asyncio.Future):
            waiting.set_result(payload)
        else:
            self.buffers[pc] = payload

    def _take_bye(self) -> None:
        self._bye_received = True
        if self._bye_sent:
            # Our goodbye's answer: the peer has all we sent, we have all
            # it sent; nothing more is in flight either way.
            self.stream.reset()
        else:
            self.close_connection()
        self.runtime.unset_protocol(self.peer_pid)

    def _broken(self, what: str) -> None:
        error = ConnectionError(f"party {self.peer_pid} ({self.peer_id}) sent {what}")
        self.stream.reset(RESET_BAD_FRAMING)
        self._reset(error)

    def _reset(self, error: Exception) -> None:  # on_reset: a StreamReset
        """The stream ended: fine after the goodbye; else what waits for
        the peer fails (a run must not hang), and later sends and receives
        fail too.

        Said in the log unless nothing was waiting and the end was a close
        (``CANCELLED``: our node stopping, or the peer's after its program
        ended without ``mpc.shutdown()``), as MPyC's ``connection_lost`` is
        quiet about a TCP close.
        """
        if self._bye_received or self._error is not None:
            return
        closed = isinstance(error, StreamReset) and error.code == ResetCode.CANCELLED
        if not isinstance(error, ConnectionError):
            text = f"the stream to party {self.peer_pid} ({self.peer_id}) ended"
            error = ConnectionError(f"{text}: {error}")
        self._error = error
        waiting = [
            pc
            for pc, item in self.buffers.items()
            if isinstance(item, asyncio.Future) and not item.done()
        ]
        for pc in waiting:
            self.buffers.pop(pc).set_exception(error)
        own = self.runtime.parties[self.runtime.pid].protocol
        # (A stream opened ahead for the next start has no say in this one.)
        if self._begun and isinstance(own, asyncio.Future) and not own.done():
            waiting.append(self.peer_pid)
            own.set_exception(error)
        if waiting or not closed:
            logging.error(str(error))


def install(runtime: Any, node: Node, parties: Sequence[PeerId]) -> None:
    """Make ``runtime.start()`` connect the parties over ``node``'s streams.

    ``parties[i]`` is the peer id of MPyC party ``i`` (``runtime.pid`` is
    ours).  Only this runtime object changes; links to the peers are the
    caller's (a stream does not dial).  The streams of the next
    ``mpc.start()`` are opened ahead (now, and at each start), so that
    what a faster party sends before this one's program gets there waits
    in the exchangers, not as unclaimed streams with a timeout.
    """
    generation = 0

    def open_next() -> list[StreamExchanger]:
        name = stream_name(parties, generation + 1)
        return [
            StreamExchanger(runtime, peer.pid, node, parties[peer.pid], name)
            for peer in runtime.parties
            if peer.pid != runtime.pid
        ]

    m = len(runtime.parties)
    if m != len(parties):
        raise ValueError(f"{m} MPyC parties but {len(parties)} peer ids")
    ahead = open_next() if m > 1 else []

    async def start() -> None:
        # Runtime.start's contract: log, set every Party.protocol, resolve
        # our own Party's Future once every peer is there, set start_time.
        nonlocal generation, ahead
        logging.info(f"Start MPyC runtime v{runtime.version}")
        if m == 1:
            runtime.start_time = time.time()
            return
        loop = runtime._loop
        for peer in runtime.parties:
            peer.protocol = (
                asyncio.Future(loop=loop) if peer.pid == runtime.pid else None
            )
        exchangers = ahead
        generation += 1
        ahead = open_next()
        for exchanger in exchangers:
            exchanger.begin()
        await runtime.parties[runtime.pid].protocol
        logging.info(f"All {m} parties connected.")
        runtime.start_time = time.time()

    runtime.start = start
