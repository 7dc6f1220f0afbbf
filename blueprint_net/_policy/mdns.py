"""LAN discovery's knobs and decisions: where mDNS may run, and how much a
local network may make the node hold or verify.

Layer: policy (pure values and decisions; no Twisted).

mDNS multicasts on whatever interfaces it is given, so the default is
narrow: the interfaces of the private or loopback IPv4 addresses the node
itself advertises in its record (:func:`default_interfaces`), never every
interface of the machine and never one with a public address unless the
operator names it.  Everything heard is a stranger's word until its
signature verifies, and even a verified record may be a Sybil's: the
adapter holds at most ``max_records`` of them and verifies at most
``rate`` a second (``burst`` at once).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Optional

import attrs

from blueprint_net._core.records import parse_address
from blueprint_net._policy.discovery import Scope, scope

#: The DNS-SD service type a node registers and browses for.
SERVICE_TYPE = "_blueprint._tcp.local."


def _optional_tuple(value: Optional[Iterable[str]]) -> Optional[tuple[str, ...]]:
    return None if value is None else tuple(value)


@attrs.frozen
class MdnsSettings:
    """How a node announces itself and listens on the local network."""

    #: IPv4 addresses of this machine whose interfaces mDNS runs on; None:
    #: :func:`default_interfaces` of the node's record.
    interfaces: Optional[tuple[str, ...]] = attrs.field(
        default=None, converter=_optional_tuple
    )
    service_type: str = SERVICE_TYPE
    #: Records learned on the LAN held at once (the oldest go first).
    max_records: int = 64
    #: Records found verified per second, and at once: a LAN full of
    #: announcements costs this many signature checks, no more.
    rate: float = 2.0
    burst: int = 16
    #: Records heard over ``rate``, held to verify when it allows: past
    #: it, a random one goes (counted ``rate_limited``).
    max_waiting: int = 256
    #: Names found and not yet looked up or taken by the reactor (each
    #: once): past it, new ones are dropped (counted ``busy``).
    max_pending: int = 16
    #: Seconds to wait for a found service's TXT record when zeroconf's
    #: cache does not hold it: names wait for one lookup at a time.
    lookup_timeout: float = 1.0


def check_interface(text: str) -> str:
    """``text`` as an IPv4 address (zeroconf joins IPv4 groups by address);
    ``ValueError`` naming what is wrong."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if address.version != 4:
        raise ValueError(f"{text!r}: only IPv4 interfaces are supported")
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{text!r} is not one interface's address")
    return str(address)


def default_interfaces(addresses: Iterable[str]) -> list[str]:
    """The interfaces to run mDNS on for a node advertising ``addresses``:
    each private or loopback IPv4 host among them (a public address is
    never the default: mDNS belongs to a local network)."""
    hosts: list[str] = []
    for text in addresses:
        try:
            host, _ = parse_address(text)
            host = check_interface(host)
        except ValueError:
            continue
        if scope(host) in (Scope.PRIVATE, Scope.LOOPBACK) and host not in hosts:
            hosts.append(host)
    return hosts


#: Every default.
DEFAULTS = MdnsSettings()
