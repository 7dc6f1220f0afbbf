"""Addresses, networks and ban targets, parsed one way for every policy, and
an address written one way (``host:port``, ``[v6]:port``) for records and logs.

Layer: policy (pure decisions; no Twisted).

Bans, connection limits and misbehaviour scores all turn a connection's host
into a network; doing it in one place means an IPv4-mapped IPv6 address, a
scoped address or a non-IP host is treated alike by all three.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Optional, Union

from blueprint_net._core.identity import PeerId

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
#: What a ban applies to: a proven peer id, or an address or network.
Target = Union[PeerId, Network]


def parse_network(text: str) -> Network:
    """An address or CIDR network; a bare address is a /32 or /128.

    IPv4-mapped IPv6 addresses are taken as the IPv4 address they carry, so
    ``::ffff:192.0.2.1`` cannot slip past a ban on ``192.0.2.1``.
    """
    network = ipaddress.ip_network(text.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def parse_address(host: str) -> Address:
    """A connection's host; IPv4-mapped IPv6 becomes IPv4, a scope is dropped."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def parse_target(text: str) -> Target:
    """A peer id (``12D3KooW...``) or an address/network; ``ValueError``."""
    text = text.strip()
    if text.startswith("12D3KooW"):
        return PeerId.from_string(text)
    try:
        return parse_network(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a peer id nor an IP address or network"
        ) from None


@functools.lru_cache(maxsize=4096)
def subnet(
    host: str, ipv4_prefix: int, ipv6_prefix: int, exempt_loopback: bool = False
) -> Optional[Network]:
    """The network of ``host`` at the prefix of its family; None for a host
    that is not an IP address, or for loopback when ``exempt_loopback``.

    Cached: parsing an address costs more than the rest of admission, and
    peers come back from the same hosts.
    """
    try:
        address = parse_address(host)
    except ValueError:
        return None
    if address.is_loopback and exempt_loopback:
        return None
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    return ipaddress.ip_network((address, prefix), strict=False)


def format_address(host: str, port: int) -> str:
    """``host:port``, or ``[v6]:port``: a record's form."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def where(address: object) -> str:
    """A connection's address (a Twisted ``IAddress``) as log and status
    text: ``127.0.0.1:7010``, ``[::1]:7010``, or the address's own text."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None or port is None:
        return str(address)
    return format_address(host, port)
