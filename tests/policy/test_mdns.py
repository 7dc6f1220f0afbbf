"""Where LAN discovery may run (``_policy/mdns.py``)."""

from __future__ import annotations

import pytest

from blueprint_net._policy.mdns import MdnsSettings, check_interface, default_interfaces


def test_the_default_is_the_private_and_loopback_ipv4_hosts_advertised() -> None:
    addresses = [
        "203.0.113.5:7010",  # public: never by default
        "192.168.1.5:7010",
        "192.168.1.5:7011",
        "127.0.0.1:7010",
        "[fd00::5]:7010",  # IPv6: not supported
        "node.example:7010",  # a name
        "169.254.1.1:7010",  # link-local
    ]
    assert default_interfaces(addresses) == ["192.168.1.5", "127.0.0.1"]
    assert default_interfaces(["203.0.113.5:7010"]) == []
    assert default_interfaces([]) == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("eth0", "is not an IP address"),
        ("::1", "only IPv4"),
        ("0.0.0.0", "not one interface"),
        ("224.0.0.251", "not one interface"),
    ],
)
def test_an_interface_is_one_ipv4_address(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_interface(text)


def test_settings_take_any_iterable_of_interfaces() -> None:
    assert MdnsSettings(interfaces=["127.0.0.1"]).interfaces == ("127.0.0.1",)
    assert MdnsSettings().interfaces is None


def test_an_address_that_is_not_an_interface_is_skipped_not_the_end() -> None:
    """Names and IPv6 addresses before an IPv4 one do not hide it."""
    addresses = ["node.example:7010", "[fd00::5]:7010", "192.168.1.5:7010"]
    assert default_interfaces(addresses) == ["192.168.1.5"]
