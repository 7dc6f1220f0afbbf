"""Messages of streams the application has not opened (*unclaimed*), held
for a while, within bounds, and reset with ``UNCLAIMED`` past them.

Layer: adapters (Twisted: logs; the clock is read, never scheduled here).

In: each message the machine delivered for a stream nobody opened
(:meth:`Unclaimed.hold`); the application claiming one
(:meth:`Unclaimed.claim`, from ``StreamHost.open``); a stream ending
(:meth:`Unclaimed.drop_unclaimed`); the one timer's tick
(:meth:`Unclaimed.expire`).  Out: the messages kept in each peer's
``StreamPeer.unclaimed`` (at most ``max_unclaimed_streams`` streams and
``max_unclaimed_bytes`` per peer, within the memory budget, for
``unclaimed_timeout`` seconds); past any bound the stream reset with
``UNCLAIMED`` on the peer's machine (so the sender learns it: nothing is
lost silently), its frames written and the bytes charged through the
``StreamHost``'s callables, counted (``streams.unclaimed_resets``).
:meth:`Unclaimed.deadline` says when the oldest held stream times out.

States, per stream name: not held, held (since the first message), then
claimed (handed to its ``StreamLife``) or refused (reset).  The peers
holding any are :attr:`Unclaimed.holding`.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from blueprint_net._adapters.stream_objects import (
    StreamPeer,
    UnclaimedMessages,
    reset_label,
)
from blueprint_net._core.stream_states import StreamSettings
from blueprint_net._core.stream_wire import ResetCode
from blueprint_net._core.telemetry import STREAM_RESETS, STREAM_UNCLAIMED_RESETS
from blueprint_net._policy.resources import MemoryBudget

#: What the stream host does for a peer: write its frames, charge its bytes.
PeerAction = Callable[[StreamPeer], None]


class Unclaimed:
    """Every peer's unclaimed streams; see the module."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        settings: StreamSettings,
        memory: MemoryBudget,
        counters: Counter[str],
        *,
        write: PeerAction,
        charge: PeerAction,
        arm: Callable[[], None],
    ) -> None:
        self.clock, self.settings = clock, settings
        self.memory, self.counters = memory, counters
        self.write, self.charge, self.arm = write, charge, arm
        #: Peers with unclaimed streams: what the one timer looks at.
        self.holding: dict[StreamPeer, None] = {}

    def hold(self, state: StreamPeer, name: bytes, payload: bytes) -> None:
        """Keep a message of stream ``name`` nobody opened, or reset the
        stream if a bound says no."""
        settings = self.settings
        held = state.unclaimed.get(name)
        size = len(payload)
        reason = None
        if held is None and len(state.unclaimed) >= settings.max_unclaimed_streams:
            reason = "streams"
        elif state.unclaimed_bytes + size > settings.max_unclaimed_bytes:
            reason = "bytes"
        elif not self.memory.fits(size):
            self.memory.refuse("unclaimed")
            reason = "memory"
        if reason is not None:
            self.refuse_unclaimed(state, name, reason)
            return
        if held is None:
            held = state.unclaimed[name] = UnclaimedMessages(self.clock.seconds())
            if state not in self.holding:
                self.holding[state] = None
                self.arm()
        held.messages.append(payload)
        held.size += size
        state.unclaimed_bytes += size

    def claim(self, state: StreamPeer, name: bytes) -> Optional[UnclaimedMessages]:
        """What was held for ``name``, now the application's (its bytes
        move to ``state.handed`` until handed over); None if nothing."""
        held = state.unclaimed.pop(name, None)
        if held is not None:
            if not state.unclaimed:
                self.holding.pop(state, None)
            state.unclaimed_bytes -= held.size
            state.handed += held.size
        return held

    def refuse_unclaimed(self, state: StreamPeer, name: bytes, reason: str) -> None:
        """Reset stream ``name`` with ``UNCLAIMED`` (``reason``: the bound
        it passed) and let go of what it held."""
        self.counters[STREAM_UNCLAIMED_RESETS.key_for(reason)] += 1
        self.counters[STREAM_RESETS.key_for(reset_label(ResetCode.UNCLAIMED))] += 1
        self.log.info(
            "stream {stream!r} of {peer_id} reset: unclaimed ({reason})",
            stream=name,
            peer_id=str(state.peer_id),
            reason=reason,
        )
        state.machine.reset(name, ResetCode.UNCLAIMED)
        if name in state.unclaimed:
            self.drop_unclaimed(state, name)
        self.write(state)

    def drop_unclaimed(self, state: StreamPeer, name: bytes) -> None:
        """Let go of what stream ``name`` held (it ended)."""
        held = state.unclaimed.pop(name)
        state.unclaimed_bytes -= held.size
        if not state.unclaimed:
            self.holding.pop(state, None)
        self.charge(state)

    def deadline(self) -> Optional[float]:
        """When the oldest held stream times out; None if none is held."""
        timeout = self.settings.unclaimed_timeout
        due = [
            min(h.since for h in s.unclaimed.values()) + timeout for s in self.holding
        ]
        return min(due, default=None)

    def expire(self, now: float) -> None:
        """Reset the streams held for ``unclaimed_timeout`` by ``now``."""
        timeout = self.settings.unclaimed_timeout
        for state in list(self.holding):
            for name, held in list(state.unclaimed.items()):
                if now >= held.since + timeout:
                    self.refuse_unclaimed(state, name, "timeout")
