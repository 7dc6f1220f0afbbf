"""Banned peers and networks, checked in memory against the clock.

Layer: policy (pure decisions; no Twisted).

The original system kept a ban list it never enforced on connections and whose
check ignored expiry.  Here every check is against the clock (a ban stops
applying the moment it expires, with nothing to purge first), and bans by
address cover single hosts and CIDR networks of either family.

Checks never touch storage: :class:`BanRegistry` holds every ban in memory and
tells an :class:`IBanStore`, if it has one, of each change.  Storing is the
adapters' business (``_adapters/banstore.py`` keeps an SQLite file); another
store, one shared by a fleet say, is another module providing the interface,
with no change here.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import Any, Callable, Optional, Union

import attrs
from zope.interface import Attribute, Interface

from blueprint_net._core.clock import TimeSource
from blueprint_net._core.identity import PeerId
from blueprint_net._policy.addresses import (
    Target,
    parse_address,
    parse_network,
    parse_target,
)

#: Automatic bans kept at most; past it the oldest automatic ban goes first
#: (never a manual one).  Bitcoin Core's unbounded list was a DoS bug.
DEFAULT_MAX_AUTOMATIC = 10_000
#: Expired bans are dropped from memory and storage at most this often (s).
PURGE_INTERVAL = 60.0


class Origin(enum.Enum):
    MANUAL = "manual"
    AUTOMATIC = "automatic"


@attrs.frozen
class Ban:
    target: Target
    reason: str
    created: float
    origin: Origin
    #: When the ban stops applying (seconds since the epoch); None: never.
    expires: Optional[float] = None

    def active(self, now: float) -> bool:
        return self.expires is None or now < self.expires

    @property
    def kind(self) -> str:
        return "peer" if isinstance(self.target, PeerId) else "network"


#: Hands a store's whole list of bans to the registry; how many changed.
Reconcile = Callable[[Iterable[Ban]], int]


class IBanStore(Interface):
    """Where a :class:`BanRegistry` keeps its bans beyond the process.

    The registry answers every check from memory; a store only hears of
    changes, so it may be as slow (a disk, a network) as it likes.
    """

    unsaved = Attribute("Changes heard of but not yet stored (an int).")

    def attach(reconcile: Reconcile) -> Iterable[Ban]:
        """Called once, by the registry this store serves: every ban stored
        now.  Whenever the stored bans change under the store (another
        process, another node of a fleet), it calls ``reconcile`` with all
        of them; that returns how many bans it changed in memory."""

    def put(ban: Ban) -> None:
        """A ban was made or replaced (one per target and kind)."""

    def delete(ban: Ban) -> None:
        """The ban on ``ban.target`` was lifted (or expired and purged)."""


class BanRegistry:
    """Every ban, with lookups by peer id and by address.

    With a ``store`` the bans it holds are loaded now and every change is
    handed to it; without one they are kept in memory only.  ``on_ban``
    callbacks hear of each new ban (the node disconnects whoever it covers);
    ``on_change`` callbacks hear of each ban made or lifted here (the node
    logs them).
    """

    def __init__(
        self,
        clock: TimeSource,
        store: Optional[IBanStore] = None,
        *,
        max_automatic: int = DEFAULT_MAX_AUTOMATIC,
    ) -> None:
        self.clock = clock
        self.store = store
        self.max_automatic = max_automatic
        self._peers: dict[PeerId, Ban] = {}
        #: (version, prefix length) -> network address -> ban.
        self._networks: dict[tuple[int, int], dict[int, Ban]] = {}
        self._callbacks: list[Callable[[Ban], Any]] = []
        self._changed: list[Callable[[Ban, bool], Any]] = []
        self._purged = float("-inf")
        if store is not None:
            for ban in store.attach(self.reconcile):
                self._index(ban)

    # -- queries ------------------------------------------------------------

    def peer_ban(self, peer_id: PeerId) -> Optional[Ban]:
        """The ban on this peer id, if one applies now."""
        ban = self._peers.get(peer_id)
        return ban if ban is not None and ban.active(self.clock.seconds()) else None

    def address_ban(self, host: str) -> Optional[Ban]:
        """The ban covering this address, if one applies now."""
        if not self._networks:
            return None  # the common case: no address bans to parse for
        try:
            address = parse_address(host)
        except ValueError:
            return None  # not an IP address (a UNIX socket, say)
        value, version = int(address), address.version
        bits = address.max_prefixlen
        now = self.clock.seconds()
        for (family, prefix), bans in self._networks.items():
            if family == version:
                ban = bans.get(value >> (bits - prefix) << (bits - prefix))
                if ban is not None and ban.active(now):
                    return ban
        return None

    def bans(self) -> list[Ban]:
        """Every ban that applies now, oldest first."""
        now = self.clock.seconds()
        active = (ban for ban in self._every() if ban.active(now))
        return sorted(active, key=lambda ban: ban.created)

    @property
    def unsaved(self) -> int:
        """Changes the store has not stored yet (0 without a store)."""
        return 0 if self.store is None else int(self.store.unsaved)

    def on_ban(self, callback: Callable[[Ban], Any]) -> None:
        self._callbacks.append(callback)

    def on_change(self, callback: Callable[[Ban, bool], Any]) -> None:
        """``callback(ban, lifted)`` for each ban made (``lifted`` False) or
        lifted here; not for changes taken from the store.  A callback
        registered twice is called once (two nodes may share a registry)."""
        if callback not in self._changed:
            self._changed.append(callback)

    # -- changes ------------------------------------------------------------

    def ban(
        self,
        target: Union[Target, str],
        reason: str,
        *,
        duration: Optional[float] = None,
        origin: Origin = Origin.MANUAL,
    ) -> Ban:
        """Ban a peer id or network (a string is parsed) now, for
        ``duration`` seconds or for good; replaces any ban on that target.

        A NaN duration would compare false with every clock reading (a
        permanent ban by accident), an infinite one overflows whoever
        formats it, a negative one is expired before it is made: each is a
        ``ValueError``.  For good is ``duration=None``.
        """
        if duration is not None and not (math.isfinite(duration) and duration >= 0):
            raise ValueError(
                f"a ban's duration must be finite and not negative, not {duration!r}"
            )
        if isinstance(target, str):
            target = parse_target(target)
        elif not isinstance(target, PeerId):
            target = parse_network(str(target))
        now = self.clock.seconds()
        ban = Ban(
            target, reason, now, origin, None if duration is None else now + duration
        )
        if now - self._purged >= PURGE_INTERVAL:
            self.purge()
        if origin is Origin.AUTOMATIC:
            self._bound_automatic()
        self._index(ban)
        if self.store is not None:
            self.store.put(ban)
        for changed in self._changed:
            changed(ban, False)
        for callback in self._callbacks:
            callback(ban)
        return ban

    def unban(self, target: Union[Target, str]) -> bool:
        """Lift the ban on exactly this target; whether there was one."""
        if isinstance(target, str):
            target = parse_target(target)
        ban = self._unindex(target)
        if ban is None:
            return False
        if self.store is not None:
            self.store.delete(ban)
        for changed in self._changed:
            changed(ban, True)
        return True

    def purge(self) -> int:
        """Forget expired bans, here and in the store; how many.  (They
        stopped applying when they expired; this only reclaims their space.)"""
        self._purged = now = self.clock.seconds()
        expired = [ban for ban in self._every() if not ban.active(now)]
        for ban in expired:
            self.unban(ban.target)
        return len(expired)

    def reconcile(self, stored: Iterable[Ban]) -> int:
        """Make memory hold exactly ``stored`` (the store's every ban, after
        another writer changed them); how many bans changed.  New bans that
        apply now are announced like any other; nothing is handed back to the
        store, which has them already."""
        wanted = {(ban.kind, str(ban.target)): ban for ban in stored}
        have = {(ban.kind, str(ban.target)): ban for ban in self._every()}
        changed = 0
        for key, ban in have.items():
            if key not in wanted:
                self._unindex(ban.target)
                changed += 1
        for key, ban in wanted.items():
            if have.get(key) != ban:
                self._index(ban)
                changed += 1
                if ban.active(self.clock.seconds()):
                    for callback in self._callbacks:
                        callback(ban)
        return changed

    def _bound_automatic(self) -> None:
        automatic = [b for b in self.bans() if b.origin is Origin.AUTOMATIC]
        for ban in automatic[: max(0, len(automatic) - self.max_automatic + 1)]:
            self.unban(ban.target)  # oldest first

    def _every(self) -> list[Ban]:
        every = [*self._peers.values()]
        for bans in self._networks.values():
            every.extend(bans.values())
        return every

    def _index(self, ban: Ban) -> None:
        target = ban.target
        if isinstance(target, PeerId):
            self._peers[target] = ban
        else:
            key = (target.version, target.prefixlen)
            self._networks.setdefault(key, {})[int(target.network_address)] = ban

    def _unindex(self, target: Target) -> Optional[Ban]:
        if isinstance(target, PeerId):
            return self._peers.pop(target, None)
        target = parse_network(str(target))
        key = (target.version, target.prefixlen)
        bans = self._networks.get(key, {})
        ban = bans.pop(int(target.network_address), None)
        if not bans:
            self._networks.pop(key, None)
        return ban
