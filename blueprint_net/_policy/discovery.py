"""Peer discovery's decisions: which addresses to advertise, which of a
record's addresses to dial, when to retry a peer, and which candidates to
prefer.

Layer: policy (pure values and decisions; no Twisted).

A record's addresses come from the network, so nothing in one is trusted:
each is parsed with :func:`~blueprint_net._core.records.parse_address`
(``host:port`` only, never an endpoint description), wildcards are never
dialed, and loopback only by a node that is itself on loopback only (else a
stranger's record could point our dials at our own machine's services).
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Optional, TypeVar

import attrs

from blueprint_net._core.records import PeerRecord, parse_address
from blueprint_net._policy.addresses import subnet

K = TypeVar("K", bound=Hashable)


@attrs.frozen
class DiscoverySettings:
    """How a node keeps itself connected (the connection manager's knobs)."""

    #: Outbound peers the manager keeps (``--target-peers``).
    target_peers: int = 8
    #: Inbound peers kept past ``inbound_grace``; the excess is closed, at
    #: random, after the newcomers have had time to learn other records.
    #: ``None``: three times ``target_peers``.
    max_inbound: Optional[int] = None
    inbound_grace: float = 10.0
    #: Seconds between the manager's rounds.
    interval: float = 1.0
    #: Dials in flight at once.
    max_dialing: int = 4
    #: A failed peer or bootstrap waits this long, doubled per failure up to
    #: ``backoff_max``, times a random factor in 0.5..1.5 (so a network that
    #: lost a popular node does not redial it in step).
    backoff_initial: float = 1.0
    backoff_max: float = 300.0

    @property
    def inbound_cap(self) -> int:
        return 3 * self.target_peers if self.max_inbound is None else self.max_inbound


def _is(host: str, test: str) -> bool:
    try:
        return bool(getattr(ipaddress.ip_address(host), test))
    except ValueError:
        return False


def format_address(host: str, port: int) -> str:
    """``host:port``, or ``[v6]:port``: a record's form."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def advertised(listening: Iterable[tuple[str, int]]) -> list[str]:
    """The default record addresses for these bound (host, port) pairs.

    Wildcards (``0.0.0.0``, ``::``) are never advertised: which of the
    machine's addresses a peer can reach is the operator's to say
    (``--advertise``).  Loopback is advertised only by a node listening on
    loopback alone (a test or benchmark network on one machine): a node
    that also listens elsewhere tells peers only the other addresses.
    """
    pairs = [(h, p) for h, p in listening if not _is(h, "is_unspecified")]
    outside = [(h, p) for h, p in pairs if not _is(h, "is_loopback")]
    chosen = outside or pairs
    return list(dict.fromkeys(format_address(h, p) for h, p in chosen))[:8]


def loopback_only(addresses: Iterable[str]) -> bool:
    """Whether every one of our advertised addresses is loopback (or there
    are none): only such a node dials loopback addresses from records."""
    for text in addresses:
        try:
            host, _ = parse_address(text)
        except ValueError:
            continue
        if not _is(host, "is_loopback"):
            return False
    return True


def dial_targets(record: PeerRecord, *, loopback: bool) -> list[tuple[str, int]]:
    """The (host, port) pairs of ``record`` worth dialing, in its order:
    parsed, no wildcard, loopback only if ``loopback``."""
    targets = []
    for text in record.addresses:
        try:
            host, port = parse_address(text)
        except ValueError:
            continue
        if _is(host, "is_unspecified") or (_is(host, "is_loopback") and not loopback):
            continue
        targets.append((host, port))
    return targets


def description(host: str, port: int) -> str:
    """The ``p2ptls:`` client description for a parsed address."""
    return f"p2ptls:host={host.replace(':', chr(92) + ':')}:port={port}"


class Backoff:
    """When each key (a peer id, a bootstrap address) may be dialed again:
    exponential, jittered, and forgotten on success; at most ``limit``
    keys held (the oldest go)."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        rng: random.Random,
        limit: int = 4096,
    ) -> None:
        self.initial, self.maximum, self.rng, self.limit = initial, maximum, rng, limit
        self._failures: dict[Hashable, tuple[int, float]] = {}

    def ready(self, key: Hashable, now: float) -> bool:
        entry = self._failures.get(key)
        return entry is None or entry[1] <= now

    def failed(self, key: Hashable, now: float) -> float:
        """Note a failure; the delay before the next attempt."""
        count = self._failures.pop(key, (0, 0.0))[0] + 1
        delay: float = min(self.maximum, self.initial * 2 ** min(count - 1, 30))
        delay *= 0.5 + self.rng.random()
        self._failures[key] = (count, now + delay)
        while len(self._failures) > self.limit:
            del self._failures[next(iter(self._failures))]
        return delay

    def succeeded(self, key: Hashable) -> None:
        self._failures.pop(key, None)


def prefer_diverse(
    candidates: Sequence[tuple[K, str]],
    connected_hosts: Iterable[str],
    count: int,
    rng: random.Random,
    *,
    ipv4_prefix: int = 24,
    ipv6_prefix: int = 48,
) -> list[K]:
    """Up to ``count`` keys of ``candidates`` ((key, host) pairs), taking
    first those whose subnet holds the fewest of our peers (and of those
    already chosen), at random among equals: no one subnet fills the
    outbound set while others are on offer."""

    def net(host: str) -> object:
        return subnet(host, ipv4_prefix, ipv6_prefix) or host

    held = Counter(net(host) for host in connected_hosts)
    pool = list(candidates)
    rng.shuffle(pool)
    chosen: list[K] = []
    while pool and len(chosen) < count:
        best = min(range(len(pool)), key=lambda i: held[net(pool[i][1])])
        key, host = pool.pop(best)
        chosen.append(key)
        held[net(host)] += 1
    return chosen


#: Every default.
DEFAULTS = DiscoverySettings()
