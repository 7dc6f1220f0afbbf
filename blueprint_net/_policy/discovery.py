"""Peer discovery's decisions: which addresses to advertise, which of a
record's addresses to dial, when to retry a peer, and which candidates to
prefer.

Layer: policy (pure values and decisions; no Twisted).

A record's addresses come from the network, so nothing in one is trusted:
each is parsed with :func:`~blueprint_net._core.records.parse_address`
(``host:port`` only, never an endpoint description) and classified by
:func:`scope`.  Names are never dialed (a stranger's name could resolve to
anything, ``localhost`` or a cloud metadata service included), nor
wildcards, link-local or metadata addresses; private and loopback addresses
only by a node that itself listens or advertises in that scope (else a
stranger's record could aim our dials at our own machine or network); and
:class:`DialRate` bounds the dials to one host across every record id.

Against eclipse at start-up (Bitcoin Core's outbound/inbound separation and
netgroup eviction): :func:`bootstrap_due` dials the bootstrap whenever the
node has too few outbound peers, and :func:`evict_inbound` trims inbound
peers from the most crowded netgroup first.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import random
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Optional, TypeVar

import attrs

from blueprint_net._core.records import PeerRecord, parse_address
from blueprint_net._policy.addresses import format_address, subnet
from blueprint_net._policy.addresses import parse_address as parse_ip

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
    #: ``backoff_max``, cut by up to half at random (so a network that lost
    #: a popular node does not redial it in step; ``_policy/backoff.py``).
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    #: A peer known by its record whose dials failed this many times in a
    #: row (some 4 minutes of back-off) has left: its record is forgotten,
    #: so it is neither dialed again nor passed on.  Its back-off is kept,
    #: so the same record learned again waits the longest delay.
    give_up_after: int = 8
    #: The bootstrap is dialed whenever fewer outbound peers than this are
    #: connected (and we are below ``target_peers``); ``None``: half the
    #: target, at least 1.  Not only with no peers at all: inbound Sybils
    #: must not stop a node from asking the one source it chose itself.
    bootstrap_below: Optional[int] = None
    #: Dials by record to one host (IP, any port, any id) per
    #: ``dial_window`` seconds.  An honest host needs one dial (two if the
    #: first failed); more are what records aimed at a third party buy.
    dials_per_host: int = 2
    dial_window: float = 60.0
    #: Netgroups for diversity and inbound eviction: coarser than the
    #: admission limits' /32, since one attacker easily holds a /24's
    #: addresses (Bitcoin Core uses a /16).
    netgroup_ipv4_prefix: int = 24
    netgroup_ipv6_prefix: int = 48

    @property
    def inbound_cap(self) -> int:
        return 3 * self.target_peers if self.max_inbound is None else self.max_inbound

    @property
    def bootstrap_cap(self) -> int:
        if self.bootstrap_below is not None:
            return self.bootstrap_below
        return max(1, self.target_peers // 2)

    def netgroup(self, host: str) -> Hashable:
        """The netgroup of ``host`` (itself if it is not an IP address)."""
        return (
            subnet(host, self.netgroup_ipv4_prefix, self.netgroup_ipv6_prefix) or host
        )


def _is(host: str, test: str) -> bool:
    try:
        return bool(getattr(ipaddress.ip_address(host), test))
    except ValueError:
        return False


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


class Scope(enum.Enum):
    """Where an address leads, for the dial rules (:func:`dial_targets`)."""

    PUBLIC = "public"
    PRIVATE = "private"  # RFC 1918, fc00::/7 (ULA), 100.64/10 (CGNAT)
    LOOPBACK = "loopback"
    #: Never dialed from a record: names, wildcards, link-local and cloud
    #: metadata (169.254/16, fe80::/10, fd00:ec2::254), multicast, reserved.
    NEVER = "never"


_NEVER = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "169.254.0.0/16",  # link-local, and most clouds' metadata service
        "100.100.100.200/32",  # Alibaba Cloud's metadata (inside 100.64/10)
        "168.63.129.16/32",  # Azure's platform endpoint
        "224.0.0.0/4",
        "240.0.0.0/4",
        "fe80::/10",
        "ff00::/8",
        "fd00:ec2::254/128",  # AWS's metadata over IPv6
        # IPv6 forms that carry an IPv4 address somewhere a gateway may take
        # it (IPv4-compatible and the unspecified ::, SIIT, NAT64, 6to4):
        # their scope is the carried address's, which a record could use to
        # dress a private or metadata address as public.
        "::/96",
        "::ffff:0:0:0/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "2002::/16",
    )
)
_PRIVATE_NETS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (*_PRIVATE_NETS, "fc00::/7"))


def _scope(host: str) -> Scope:
    """The scope of ``host``: an IP literal's range; any name is
    :attr:`Scope.NEVER` (resolving a peer's name is not ours to do)."""
    try:
        address = parse_ip(host)
    except ValueError:
        return Scope.NEVER
    if address.is_loopback:  # first: ::1 is inside ::/96
        return Scope.LOOPBACK
    if any(address in net for net in _NEVER):
        return Scope.NEVER
    if any(address in net for net in _PRIVATE):
        return Scope.PRIVATE
    return Scope.PUBLIC


#: Hosts cached, as for :data:`_dial_key`: a round looks at the addresses of
#: every record held, and the same hosts come round again.  Room for a full
#: book (1,024 records of 8 addresses): a round over more would go through a
#: smaller cache in the same order each time and never hit it.  At most 8,192
#: short strings (a record's host), a few MB at worst.  Wrapped here, not
#: decorated: mutmut leaves decorated functions out of the mutation run.
scope = functools.lru_cache(maxsize=8192)(_scope)


def dial_scopes(hosts: Iterable[str]) -> frozenset[Scope]:
    """The scopes a node whose own listeners and advertised addresses are
    ``hosts`` may dial: public always; private when one of its own
    addresses is private (a node on a LAN may dial the LAN, a node on the
    Internet is not aimed at its operator's network); loopback only when
    all of them are loopback (a test or benchmark network on one machine:
    else a stranger's record could aim our dials at our own services)."""
    own = [scope(host) for host in hosts]
    scopes = {Scope.PUBLIC}
    if Scope.PRIVATE in own:
        scopes.add(Scope.PRIVATE)
    if own and all(s is Scope.LOOPBACK for s in own):
        scopes.add(Scope.LOOPBACK)
    return frozenset(scopes)


def own_hosts(
    addresses: Iterable[str], listening: Iterable[tuple[str, int]] = ()
) -> list[str]:
    """The hosts of our advertised ``addresses`` and ``listening`` pairs."""
    hosts = [host for host, _ in listening]
    for text in addresses:
        try:
            hosts.append(parse_address(text)[0])
        except ValueError:
            continue
    return hosts


def dial_targets(record: PeerRecord, scopes: frozenset[Scope]) -> list[tuple[str, int]]:
    """The (host, port) pairs of ``record`` worth dialing, in its order: IP
    literals only (names are skipped), in one of ``scopes``."""
    targets = []
    for text in record.addresses:
        try:
            host, port = parse_address(text)
        except ValueError:
            continue
        if scope(host) in scopes:
            targets.append((host, port))
    return targets


class DialRate:
    """At most ``count`` dials to one host (IP, any port) per ``window``
    seconds, whatever ids the records name: 480 fresh ids pointing at one
    third party buy ``count`` dials a window, not 480.  Holds at most
    ``limit`` hosts (the longest idle go; a forgotten host starts afresh,
    which a flood of distinct hosts cannot aim at any one)."""

    def __init__(self, count: int, window: float, limit: int = 4096) -> None:
        self.count, self.window, self.limit = count, window, limit
        self._dials: dict[str, list[float]] = {}

    def allows(self, host: str, now: float) -> bool:
        key = _dial_key(host)
        recent = [t for t in self._dials.get(key, ()) if now - t < self.window]
        return len(recent) < self.count

    def dialed(self, host: str, now: float) -> None:
        key = _dial_key(host)
        recent = [t for t in self._dials.pop(key, ()) if now - t < self.window]
        self._dials[key] = [*recent, now]
        while len(self._dials) > self.limit:
            del self._dials[next(iter(self._dials))]


def _dial_key_of(host: str) -> str:
    """One key per address however it is written (``::ffff:a.b.c.d`` is
    ``a.b.c.d``, IPv6 in its compressed form), so spellings share a rate."""
    try:
        return str(parse_ip(host))
    except ValueError:
        return host


#: Cached as :data:`scope` is.
_dial_key = functools.lru_cache(maxsize=8192)(_dial_key_of)


def bootstrap_due(outbound: int, settings: DiscoverySettings) -> bool:
    """Whether to dial the bootstrap addresses: below the target and with
    fewer than ``bootstrap_cap`` outbound peers, however many inbound."""
    return outbound < min(settings.target_peers, settings.bootstrap_cap)


def evict_inbound(
    inbound: Sequence[tuple[K, Hashable]], count: int, rng: random.Random
) -> list[K]:
    """``count`` keys of ``inbound`` ((key, netgroup) pairs) to close: each
    from the netgroup holding the most of those left, at random within it
    (Bitcoin Core's eviction): a peer from an under-represented netgroup
    goes last, so many Sybils from one subnet evict themselves."""
    groups: dict[Hashable, list[K]] = {}
    for key, group in inbound:
        groups.setdefault(group, []).append(key)
    chosen: list[K] = []
    while len(chosen) < count and groups:
        size = max(len(keys) for keys in groups.values())
        largest = [g for g, keys in groups.items() if len(keys) == size]
        group = rng.choice(largest)
        keys = groups[group]
        chosen.append(keys.pop(rng.randrange(len(keys))))
        if not keys:
            del groups[group]
    return chosen


def description(host: str, port: int) -> str:
    """The ``p2ptls:`` client description for a parsed address."""
    return f"p2ptls:host={host.replace(':', chr(92) + ':')}:port={port}"


def prefer_diverse(
    candidates: Sequence[tuple[K, str]],
    connected_hosts: Iterable[str],
    count: int,
    rng: random.Random,
    *,
    netgroup: Optional[Callable[[str], Hashable]] = None,
) -> list[K]:
    """Up to ``count`` keys of ``candidates`` ((key, host) pairs), taking
    first those whose netgroup (by default :data:`DEFAULTS`') holds the
    fewest of our peers (and of those already chosen), at random among
    equals: no one subnet fills the outbound set while others are on offer."""
    net = DEFAULTS.netgroup if netgroup is None else netgroup
    held = Counter(net(host) for host in connected_hosts)
    # Each candidate's netgroup once (parsing an address is the costly
    # part; a node may offer a thousand candidates a tick), not once per
    # candidate per pick.
    pool = [(key, net(host)) for key, host in candidates]
    rng.shuffle(pool)
    chosen: list[K] = []
    while pool and len(chosen) < count:
        best = min(range(len(pool)), key=lambda i: held[pool[i][1]])
        key, group = pool.pop(best)
        chosen.append(key)
        held[group] += 1
    return chosen


#: Every default.
DEFAULTS = DiscoverySettings()
