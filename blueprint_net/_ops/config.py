"""Every operator setting, once: the twistd options, the config file and
``docs/operations.md`` are all made from the table below.

Layer: ops (the operator surface).

A config file is INI with one ``[blueprint]`` section whose keys are the long
option names; a repeatable option takes one value per line.  The command line
overrides the file: a plain option replaces the file's value, and a repeatable
option given on the command line replaces the file's whole list.
"""

from __future__ import annotations

import configparser
import math
import os
from typing import Any, Callable, Optional

import attrs

from blueprint_net._core.errors import ConfigurationError
from blueprint_net._ops.topic_log import DEFAULT_RATE as TOPIC_LOG_RATE
from blueprint_net._policy.discovery import DEFAULTS as DISCOVERY
from blueprint_net._policy.limits import ConnectionLimits
from blueprint_net._policy.scores import PolicySettings
from blueprint_net._policy.settings import DEFAULTS

DEFAULT_LISTEN = "p2ptls:7010:interface=127.0.0.1"
DEFAULT_STATUS = "tcp:7080:interface=127.0.0.1"
SECTION = "blueprint"

_LIMITS = ConnectionLimits()
_POLICY = PolicySettings()


@attrs.frozen
class Setting:
    """One option: its name, how to parse it, its default, where it goes."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    #: Where it goes (a key of :func:`split`'s answer), and the attribute.
    target: tuple[str, str]
    #: A bare ``--name`` on the command line (off by default), ``yes``/``no``
    #: in the config file.
    flag: bool = False

    @property
    def shown(self) -> Optional[str]:
        """The default as an operator would type it (``3600``, ``yes``), not
        as Python prints it (``3600.0``, ``True``)."""
        if self.default is None:
            return None
        if isinstance(self.default, bool):
            return "yes" if self.default else "no"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


def _number(
    kind: type, minimum: float, strict: bool, maximum: Optional[float] = None
) -> Callable[[str], Any]:
    """A parser that names what it wanted; the option name is added later.

    ``float()`` accepts ``nan`` and ``inf``: a NaN compares false with every
    bound and so slips past them, and an infinite timeout or duration
    overflows later, far from the option that caused it.  Both are refused
    here, with the range.
    """

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise ValueError(f"wants {noun}, not {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"wants a finite number, not {text!r}")
        if value < minimum or (strict and value == minimum):
            bound = "more than" if strict else "at least"
            raise ValueError(f"must be {bound} {minimum:g}, not {text}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum:g}, not {text}")
        return value

    return parse


def _flag(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"wants yes or no, not {text!r}")


def _size_or_off(text: str) -> Optional[int]:
    """A size in bytes, or ``off`` (``None``)."""
    if str(text).strip().lower() in ("off", "none", "no"):
        return None
    try:
        value: int = _number(int, 0, strict=False)(text)
    except ValueError:
        raise ValueError(f"wants a size in bytes or off, not {text!r}") from None
    return value


positive = _number(float, 0, strict=True)
non_negative = _number(float, 0, strict=False)
count = _number(int, 1, strict=False)

SETTINGS = [
    Setting(
        "allow-plaintext",
        _flag,
        DEFAULTS.allow_plaintext,
        "Allow links without TLS (trusted networks only; logged).",
        ("settings", "allow_plaintext"),
        flag=True,
    ),
    Setting(
        "handshake-timeout",
        positive,
        DEFAULTS.handshake_timeout,
        "Seconds a peer has to complete the handshake.",
        ("settings", "handshake_timeout"),
    ),
    Setting(
        "first-frame-timeout",
        positive,
        DEFAULTS.first_frame_timeout,
        "Seconds a new connection has to send its first frame.",
        ("settings", "first_frame_timeout"),
    ),
    Setting(
        "request-timeout",
        positive,
        DEFAULTS.request_timeout,
        "Seconds a request waits for its response.",
        ("settings", "request_timeout"),
    ),
    Setting(
        "keepalive-interval",
        non_negative,
        DEFAULTS.keepalive_interval,
        "Ping a peer quiet this long; drop it after another (0: off).",
        ("settings", "keepalive_interval"),
    ),
    Setting(
        "max-frame",
        _number(int, 4096, strict=False),
        DEFAULTS.max_frame,
        "Largest frame accepted after the handshake, in bytes.",
        ("settings", "max_frame"),
    ),
    Setting(
        "max-send-queue",
        count,
        DEFAULTS.max_send_queue,
        "Bytes held for a peer that is not reading.",
        ("settings", "max_send_queue"),
    ),
    Setting(
        "memory-budget",
        count,
        DEFAULTS.memory_budget,
        "Bytes held for all peers together (frames in and out).",
        ("settings", "memory_budget"),
    ),
    Setting(
        "max-concurrent-requests",
        count,
        DEFAULTS.max_concurrent_requests,
        "One peer's requests processed at once.",
        ("settings", "max_concurrent_requests"),
    ),
    Setting(
        "max-connections",
        count,
        _LIMITS.max_connections,
        "Open connections at once, both directions.",
        ("limits", "max_connections"),
    ),
    Setting(
        "max-per-subnet",
        count,
        _LIMITS.max_per_subnet,
        "Connections from one subnet at once.",
        ("limits", "max_per_subnet"),
    ),
    Setting(
        "ipv4-prefix",
        _number(int, 8, strict=False, maximum=32),
        _LIMITS.ipv4_prefix,
        "IPv4 prefix length of a subnet, for the limits.",
        ("limits", "ipv4_prefix"),
    ),
    Setting(
        "ipv6-prefix",
        _number(int, 16, strict=False, maximum=128),
        _LIMITS.ipv6_prefix,
        "IPv6 prefix length of a subnet, for the limits.",
        ("limits", "ipv6_prefix"),
    ),
    Setting(
        "exempt-loopback",
        _flag,
        _LIMITS.exempt_loopback,
        "Exempt loopback from the per-subnet limits (yes/no).",
        ("limits", "exempt_loopback"),
    ),
    Setting(
        "connect-rate",
        positive,
        _LIMITS.connect_rate,
        "New inbound connections per second from one subnet.",
        ("limits", "connect_rate"),
    ),
    Setting(
        "connect-burst",
        count,
        _LIMITS.connect_burst,
        "Burst allowed above connect-rate.",
        ("limits", "connect_burst"),
    ),
    Setting(
        "max-handshaking",
        count,
        _LIMITS.max_handshaking,
        "Connections still in their handshake at once.",
        ("limits", "max_handshaking"),
    ),
    Setting(
        "max-handshaking-per-subnet",
        count,
        _LIMITS.max_handshaking_per_subnet,
        "Connections from one subnet still in their handshake.",
        ("limits", "max_handshaking_per_subnet"),
    ),
    Setting(
        "max-per-peer",
        count,
        _LIMITS.max_per_peer,
        "Connections to one peer id.",
        ("limits", "max_per_peer"),
    ),
    Setting(
        "request-rate",
        non_negative,
        _LIMITS.request_rate,
        "Requests per second from one peer (0: unlimited).",
        ("limits", "request_rate"),
    ),
    Setting(
        "request-burst",
        count,
        _LIMITS.request_burst,
        "Burst allowed above request-rate.",
        ("limits", "request_burst"),
    ),
    Setting(
        "remembered-budgets",
        _number(int, 0, strict=False),
        _LIMITS.remembered_budgets,
        "Request budgets kept for peers that disconnected.",
        ("limits", "remembered_budgets"),
    ),
    Setting(
        "ban-threshold",
        positive,
        _POLICY.ban_threshold,
        "Misbehaviour points that earn an automatic ban.",
        ("policy", "ban_threshold"),
    ),
    Setting(
        "score-half-life",
        positive,
        _POLICY.score_half_life,
        "Seconds for a misbehaviour score to halve.",
        ("policy", "score_half_life"),
    ),
    Setting(
        "ban-duration",
        positive,
        _POLICY.ban_duration,
        "Seconds of a first automatic ban (doubled for repeats).",
        ("policy", "ban_duration"),
    ),
    Setting(
        "max-ban-duration",
        positive,
        _POLICY.max_ban_duration,
        "Longest automatic ban, in seconds.",
        ("policy", "max_ban_duration"),
    ),
    Setting(
        "ban-loopback",
        _flag,
        _POLICY.ban_loopback,
        "Score and ban loopback addresses automatically too (yes/no).",
        ("policy", "ban_loopback"),
    ),
    Setting(
        "target-peers",
        _number(int, 0, strict=False),
        DISCOVERY.target_peers,
        "Outbound peers the connection manager keeps (0: dial only --peer).",
        ("discovery", "target_peers"),
    ),
    Setting(
        "give-up-after",
        count,
        DISCOVERY.give_up_after,
        "Failed dials in a row after which a peer learned by record is forgotten.",
        ("discovery", "give_up_after"),
    ),
    Setting(
        "mdns",
        _flag,
        False,
        "LAN discovery: announce this node's record and find peers with mDNS"
        " (needs blueprint-net[mdns]).",
        ("mdns", "enabled"),
        flag=True,
    ),
    Setting(
        "idontwant-threshold",
        _size_or_off,
        None,
        "Tell the mesh we have each message of this many bytes or more"
        " (gossipsub v1.2's IDontWant); off by default: a node older than"
        " this version closes the link on it.",
        ("gossip", "idontwant_threshold"),
    ),
    Setting(
        "topic-log-rate",
        count,
        TOPIC_LOG_RATE,
        "Bytes a second --topic-log writes at most (a quarter for one origin);"
        " the rest is counted, not written.",
        ("topic_log", "rate"),
    ),
    Setting(
        "max-automatic-bans",
        count,
        10_000,
        "Automatic bans kept (the oldest go first).",
        ("registry", "max_automatic"),
    ),
]

#: Repeatable options (their help is the docstring of ``Options.opt_<name>``).
LISTS = (
    "listen",
    "peer",
    "handler",
    "allow-peer",
    "allow-network",
    "permit-peer",
    "bootstrap",
    "advertise",
    "topic",
    "mdns-interface",
)

BY_NAME = {setting.name: setting for setting in SETTINGS}


def not_utf8(text: str) -> Optional[str]:
    """Why ``text`` cannot be used as text, if it cannot: Python hands an
    argument's bytes that are not UTF-8 over as lone surrogates, which no
    encoder takes (a traceback later, far from the option that held them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{os.fsencode(text)!r} is not valid UTF-8"
    return None


class ConfigError(ConfigurationError):
    """A bad value in a config file or option: one line, naming the option."""


def read_file(path: str) -> dict[str, Any]:
    """The settings in a config file, parsed and checked."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as error:
        raise ConfigError(f"--config {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"--config {path}: not UTF-8 text (byte 0x{error.object[error.start]:02x}"
            f" at offset {error.start})"
        ) from None
    except configparser.Error as error:
        first = str(error).splitlines()[0]
        raise ConfigError(f"--config {path}: {first}") from None
    if not parser.has_section(SECTION):
        raise ConfigError(f"--config {path}: no [{SECTION}] section")
    values: dict[str, Any] = {}
    plain = {
        "key-file",
        "data-dir",
        "status",
        "no-builtins",
        "permit-file",
        "topic-log",
    }
    for key, text in parser.items(SECTION):
        if key in LISTS:
            values[key] = [line.strip() for line in text.splitlines() if line.strip()]
        elif key in BY_NAME:
            values[key] = parse(key, text)
        elif key in plain:
            values[key] = _plain(key, text)
        else:
            raise ConfigError(f"--config {path}: unknown setting {key!r}")
    return values


def _plain(key: str, text: str) -> Any:
    if key != "no-builtins":
        return text.strip()
    try:
        return _flag(text)
    except ValueError as error:
        raise ConfigError(f"--{key} {error}") from None


def parse(name: str, text: str) -> Any:
    try:
        return BY_NAME[name].parse(text)
    except ValueError as error:
        raise ConfigError(f"--{name} {error}") from None


def coercer(name: str) -> Callable[[str], Any]:
    """For ``usage.Options``: a parse whose error names the option."""

    def coerce(text: str) -> Any:
        try:
            return BY_NAME[name].parse(text)
        except ValueError as error:
            raise ValueError(f"--{name} {error}") from None

    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


def split(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Settings by where they go: ``settings``, ``limits``, ``policy``,
    ``registry``, ``discovery``, ``mdns``, ``topic_log``, ``gossip``."""
    parts: dict[str, dict[str, Any]] = {
        where: {}
        for where in (
            "settings",
            "limits",
            "policy",
            "registry",
            "discovery",
            "mdns",
            "topic_log",
            "gossip",
        )
    }
    for setting in SETTINGS:
        where, attribute = setting.target
        value = values[setting.name]
        parts[where][attribute] = bool(value) if setting.flag else value
    return parts
