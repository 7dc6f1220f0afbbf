"""Who may connect: bans, allow-lists, permissioned mode, and automatic bans
earned by misbehaviour.

Layer: policy (pure decisions; no Twisted).

Misbehaviour -- a malformed frame, a message before ``Verified``, a bad or
replayed signature, a reflected handshake -- adds points to a score that
halves every ``score_half_life`` seconds.  A score past ``ban_threshold`` bans
the offender for ``ban_duration``, doubled for each earlier automatic ban of
the same offender (up to ``max_ban_duration``).  A timeout, an incompatible
version or a policy refusal is never misbehaviour: the original system counted
handshake timeouts until honest peers on slow links were stuck banned.

Scores are kept per address (IPv6 by ``ipv6_prefix`` network, since one host
owns a whole /64) and per *proven* peer id.  An id merely claimed in a
``Hello`` is never scored: anyone can claim any id, and would otherwise get
its owner banned by sending garbage in its name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Optional, TypeVar, Union

import attrs

from blueprint_net._core.clock import TimeSource
from blueprint_net._core.errors import ErrorCode, HandshakeFailed
from blueprint_net._core.identity import PeerId
from blueprint_net._policy.addresses import (
    Network,
    Target,
    parse_address,
    parse_network,
    subnet,
)
from blueprint_net._policy.bans import Ban, BanRegistry, Origin

#: Points per misbehaviour: a failed proof is worse than a garbled frame.
POINTS = {
    ErrorCode.BAD_SIGNATURE: 50,
    ErrorCode.WRONG_KEY: 50,
    ErrorCode.SELF_CONNECTION: 50,
}
DEFAULT_POINTS = 20

V = TypeVar("V")


@attrs.define
class PolicySettings:
    ban_threshold: float = 100.0
    score_half_life: float = 600.0
    ban_duration: float = 3600.0
    max_ban_duration: float = 7 * 86400.0
    #: IPv6 offenders are scored and banned as this network.
    ipv6_prefix: int = 64
    #: Offenders tracked at once; past it the least recently scored go.
    max_tracked: int = 65536
    #: Whether loopback addresses are scored and banned automatically.  Off:
    #: on loopback the "attacker" is almost always the operator (a curl at
    #: the wrong port), and a ban locks out the local command line.
    ban_loopback: bool = False
    #: Automatic address bans inside one wider network (IPv4 /24, IPv6 /48)
    #: that turn into one ban of that network: an address range cannot fill
    #: the ban table (nor the writer thread ahead of an operator's ban).
    coalesce_after: int = 8
    coalesce_ipv4_prefix: int = 24
    coalesce_ipv6_prefix: int = 48


@attrs.define
class _Score:
    value: float
    at: float


class Policy:
    """The node's admission rules, all replaceable while it runs."""

    def __init__(
        self,
        bans: BanRegistry,
        settings: Optional[PolicySettings] = None,
        *,
        allowed_peers: Iterable[PeerId] = (),
        allowed_networks: Iterable[Union[str, Network]] = (),
        permitted_peers: Optional[Iterable[PeerId]] = None,
    ) -> None:
        self.bans = bans
        self.settings = settings or PolicySettings()
        self.clock: TimeSource = bans.clock
        self._scores: dict[Target, _Score] = {}
        self._offences: dict[Target, int] = {}
        #: Wider network -> the automatic bans inside it (see coalesce_after).
        self._clusters: dict[Target, set[Network]] = {}
        self.set_allow_list(allowed_peers, allowed_networks)
        self.set_permitted(permitted_peers)

    # -- configuration ------------------------------------------------------

    def set_allow_list(
        self, peers: Iterable[PeerId], networks: Iterable[Union[str, Network]]
    ) -> None:
        """Peers and networks that are never banned automatically."""
        self.allowed_peers = frozenset(peers)
        self.allowed_networks = tuple(parse_network(str(n)) for n in networks)

    def set_permitted(self, peers: Optional[Iterable[PeerId]]) -> None:
        """Permissioned mode: only these peer ids may become Verified;
        ``None`` turns it off (any proven peer is welcome)."""
        self.permitted = None if peers is None else frozenset(peers)

    def is_allowed(self, target: Union[PeerId, str]) -> bool:
        """Whether a peer id or host is on the allow-list."""
        if isinstance(target, PeerId):
            return target in self.allowed_peers
        try:
            address = parse_address(target)
        except ValueError:
            return False
        return any(address in network for network in self.allowed_networks)

    # -- admission ----------------------------------------------------------

    def refuse_address(self, host: str) -> Optional[Ban]:
        """The ban that refuses a connection from (or to) ``host``, if any."""
        return self.bans.address_ban(host)

    def authorize(self, peer_id: PeerId) -> None:
        """A peer proved its id: refuse it if banned or not permitted."""
        ban = self.bans.peer_ban(peer_id)
        if ban is not None:
            raise HandshakeFailed(ErrorCode.BANNED, "this peer id is banned")
        if self.permitted is not None and peer_id not in self.permitted:
            raise HandshakeFailed(ErrorCode.NOT_ALLOWED, "this node is permissioned")

    # -- misbehaviour -------------------------------------------------------

    def misbehaved(
        self, host: Optional[str], peer_id: Optional[PeerId], code: ErrorCode
    ) -> list[Ban]:
        """Score a violation against the address and the proven peer id;
        the bans it earned, if any.

        An offender already banned is not scored: the charges of one burst
        still in flight when its ban lands (a pipeline of forged messages,
        say) are the offence just punished, not new ones to double its ban.
        """
        points = POINTS.get(code, DEFAULT_POINTS)
        earned = []
        targets: list[tuple[Target, bool]] = []
        bans = self.bans
        if host is not None and bans.address_ban(host) is None:
            network = self._offender_network(host)
            if network is not None:
                targets.append((network, self.is_allowed(host)))
        if peer_id is not None and bans.peer_ban(peer_id) is None:
            targets.append((peer_id, self.is_allowed(peer_id)))
        for target, allowed in targets:
            if self._add(target, points) >= self.settings.ban_threshold and not allowed:
                earned.append(self._ban(target, code))
        return earned

    def score(self, target: Union[Target, str]) -> float:
        """The decayed score of a peer id, host or network now."""
        if isinstance(target, str):
            network = self._offender_network(target)
            if network is None:
                return 0.0
            target = network
        current = self._scores.get(target)
        return 0.0 if current is None else self._decayed(current)

    def _offender_network(self, host: str) -> Optional[Network]:
        """An IPv4 host scores alone; IPv6 by its ``ipv6_prefix`` network;
        loopback not at all unless ``ban_loopback``."""
        settings = self.settings
        return subnet(host, 32, settings.ipv6_prefix, not settings.ban_loopback)

    def _decayed(self, score: _Score) -> float:
        elapsed = self.clock.seconds() - score.at
        return score.value * math.pow(0.5, elapsed / self.settings.score_half_life)

    def _add(self, target: Target, points: float) -> float:
        previous = self._scores.pop(target, None)
        value = points + (0.0 if previous is None else self._decayed(previous))
        self._scores[target] = _Score(value, self.clock.seconds())  # now newest
        _bound(self._scores, self.settings.max_tracked)
        return value

    def _ban(self, target: Target, code: ErrorCode) -> Ban:
        self._scores.pop(target, None)
        offences = self._offences.pop(target, 0) + 1
        self._offences[target] = offences
        _bound(self._offences, self.settings.max_tracked)
        duration = min(
            self.settings.ban_duration * 2 ** (offences - 1),
            self.settings.max_ban_duration,
        )
        ban = self.bans.ban(
            target,
            f"misbehaviour, last {code.name} (offence {offences})",
            duration=duration,
            origin=Origin.AUTOMATIC,
        )
        if isinstance(target, PeerId):
            return ban
        return self._coalesce(target, code, duration) or ban

    def _coalesce(
        self, network: Network, code: ErrorCode, duration: float
    ) -> Optional[Ban]:
        """The rule: ``coalesce_after`` automatic bans inside one IPv4 /24 or
        IPv6 /48 become one automatic ban of that network, for the duration
        the last of them earned, and the single bans are lifted.  Not when an
        allow-listed network overlaps it (its hosts are never banned
        automatically)."""
        settings = self.settings
        prefix = (
            settings.coalesce_ipv4_prefix
            if network.version == 4
            else settings.coalesce_ipv6_prefix
        )
        if network.prefixlen <= prefix:
            return None
        wider = network.supernet(new_prefix=prefix)
        members = self._clusters.pop(wider, set())
        members.add(network)
        self._clusters[wider] = members  # now the most recent
        _bound(self._clusters, settings.max_tracked)
        if len(members) < settings.coalesce_after or any(
            wider.overlaps(allowed)
            for allowed in self.allowed_networks
            if allowed.version == wider.version
        ):
            return None
        del self._clusters[wider]
        ban = self.bans.ban(
            wider,
            f"misbehaviour from {len(members)} addresses, last {code.name}",
            duration=duration,
            origin=Origin.AUTOMATIC,
        )
        for member in members:
            self.bans.unban(member)
        return ban


def _bound(entries: dict[Target, V], limit: int) -> None:
    """Drop the oldest entries (dicts keep insertion order) past ``limit``."""
    while len(entries) > limit:
        del entries[next(iter(entries))]
