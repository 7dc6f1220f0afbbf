"""``twistd blueprint``: run a node.

Layer: ops (the operator surface).

Every option has a working default, so ``twistd -n blueprint`` alone runs a
node on loopback with its key and ban database in ``./blueprint-data``.  The
options are made from :data:`blueprint_net.config.SETTINGS`; ``--config``
reads the same settings from an INI file, which the command line overrides.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from twisted.application.service import IService
from twisted.python import usage

from blueprint_net._adapters import tls
from blueprint_net._adapters.banstore import BanDatabaseError, SqliteBanStore
from blueprint_net._adapters.dialer import require_tls
from blueprint_net._adapters.mdns_zeroconf import (
    MdnsUnavailable,
    check_local,
    require_zeroconf,
)
from blueprint_net._adapters.node import Node
from blueprint_net._core.errors import KeyFileError, PlaintextRefused
from blueprint_net._core.gossip_mesh import check_topic
from blueprint_net._core.gossip_settings import DEFAULTS as GOSSIP_DEFAULTS
from blueprint_net._core.gossip_settings import GossipSettings
from blueprint_net._core.identity import PeerId
from blueprint_net._core.records import check_addresses
from blueprint_net._ops import config, loglevel
from blueprint_net._ops.handlers import BUILTINS, HandlerError, load
from blueprint_net._ops.keyfiles import load_or_create_identity
from blueprint_net._ops.permit_file import PERMITS_FILE, PermitSources
from blueprint_net._ops.service import ListenError, NodeService
from blueprint_net._ops.status import VERSION
from blueprint_net._ops.topic_log import TopicLog
from blueprint_net._policy.addresses import parse_network
from blueprint_net._policy.bans import BanRegistry
from blueprint_net._policy.discovery import DiscoverySettings
from blueprint_net._policy.limits import ConnectionLimits
from blueprint_net._policy.mdns import MdnsSettings, check_interface, default_interfaces
from blueprint_net._policy.permits import PermitListError
from blueprint_net._policy.scores import Policy, PolicySettings
from blueprint_net._policy.settings import Settings


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a blueprint-net node. Every option has a working default; "
        "--config FILE reads any of them from an INI file's [blueprint] "
        "section, and the command line overrides the file. "
        "See docs/operations.md."
    )

    optParameters = [
        ["config", "c", None, "INI file of settings (a [blueprint] section)."],
        ["data-dir", "d", "blueprint-data", "Directory for the key and ban database."],
        [
            "key-file",
            "k",
            None,
            "Ed25519 key (PKCS#8 PEM) [default: DATA-DIR/node.key].",
        ],
        [
            "status",
            None,
            config.DEFAULT_STATUS,
            "Status endpoint (strports), or 'none'.",
        ],
        [
            "permit-file",
            None,
            None,
            "Permissioned mode: a file of permitted peer ids, one a line"
            " (re-read on SIGHUP).",
        ],
        [
            "topic-log",
            None,
            None,
            "Append each message delivered to a --topic to this file, one JSON"
            " line each, at most --topic-log-rate (re-opened on SIGHUP)"
            " [default: a log event, its data cut short].",
        ],
        [
            "log-level",
            None,
            loglevel.DEFAULT,
            "Log events at this level and above: " + ", ".join(loglevel.LEVELS) + ".",
            loglevel.option,
        ],
    ] + [
        # The default is shown as typed (the help prints it); postOptions
        # parses a default left unparsed.
        [s.name, None, s.shown, s.help, config.coercer(s.name)]
        for s in config.SETTINGS
        if not s.flag
    ]
    optFlags = [
        ["no-builtins", None, "Do not serve the built-in echo and ping protocols."],
    ] + [[s.name, None, s.help] for s in config.SETTINGS if s.flag]

    def __init__(self) -> None:
        super().__init__()
        for name in config.LISTS:
            self[name] = []
        self._from_file: dict[str, list[str]] = {}

    def opt_listen(self, description: str) -> None:
        """Endpoint to accept peers on (strports; repeatable; TLS unless
        --allow-plaintext). [default: p2ptls:7010:interface=127.0.0.1]"""
        self["listen"].append(description)

    def opt_peer(self, spec: str) -> None:
        """A peer to keep connected: PEERID@p2ptls:HOST:PORT (repeatable)."""
        self["peer"].append(spec)

    def opt_handler(self, spec: str) -> None:
        """A request handler: NAME=package.module.attribute (repeatable)."""
        self["handler"].append(spec)

    def opt_allow_peer(self, peer_id: str) -> None:
        """A peer id never banned automatically (repeatable)."""
        self["allow-peer"].append(peer_id)

    def opt_allow_network(self, network: str) -> None:
        """An address or network never banned automatically (repeatable)."""
        self["allow-network"].append(network)

    def opt_permit_peer(self, peer_id: str) -> None:
        """Permissioned mode: only these peer ids may connect (repeatable)."""
        self["permit-peer"].append(peer_id)

    def opt_bootstrap(self, description: str) -> None:
        """An endpoint to learn peers from: p2ptls:HOST:PORT (repeatable;
        dialed while the node has few outbound peers; its id need not be
        known)."""
        self["bootstrap"].append(description)

    def opt_advertise(self, address: str) -> None:
        """An address for our peer record, HOST:PORT or [V6]:PORT (repeatable;
        default: the --listen addresses, never a wildcard; loopback only when
        every listener is loopback)."""
        self["advertise"].append(address)

    def opt_topic(self, topic: str) -> None:
        """A gossip topic to join (repeatable); see --topic-log."""
        self["topic"].append(topic)

    def opt_mdns_interface(self, address: str) -> None:
        """With --mdns: an IPv4 address of this machine whose interface LAN
        discovery runs on (repeatable; default: the private or loopback IPv4
        addresses the node advertises)."""
        self["mdns-interface"].append(address)

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        """A bad option ends the process with one line naming it: twistd
        would print its whole usage text (~90 lines) above a UsageError."""
        try:
            self._parse(options)
        except usage.UsageError as error:
            # usage.Options prefixes a coerce error with a phrase of its own.
            message = str(error).removeprefix("Parameter type enforcement failed: ")
            raise SystemExit(f"blueprint: {message}") from None

    def _parse(self, options: Optional[Sequence[str]]) -> None:
        """Read ``--config`` first, so the command line overrides it."""
        path = _config_path(list(options) if options is not None else [])
        if path is not None:
            try:
                values = config.read_file(path)
            except config.ConfigError as error:
                raise usage.UsageError(str(error)) from None
            for name, value in values.items():
                if name in config.LISTS:
                    self._from_file[name] = value
                elif name == "no-builtins":
                    self["no-builtins"] = int(value)  # already a bool, checked
                else:
                    self[name] = value
        super().parseOptions(options)

    def postOptions(self) -> None:
        for setting in config.SETTINGS:
            value = self.get(setting.name)
            if not setting.flag and value is not None and value == setting.shown:
                self[setting.name] = setting.default  # left at its shown default
        for name in config.LISTS:
            if not self[name]:
                self[name] = list(self._from_file.get(name, []))
        if not self["listen"]:
            self["listen"] = [config.DEFAULT_LISTEN]
        self["peers"] = [_peer(spec) for spec in self["peer"]]
        if self["status"] in ("none", ""):
            self["status"] = None
        for option, check, description in [
            *(("--listen", tls.check_server, text) for text in self["listen"]),
            *(("--peer", tls.check_client, endpoint) for _, endpoint in self["peers"]),
            *(("--bootstrap", tls.check_client, text) for text in self["bootstrap"]),
            *(("--status", tls.check_server, s) for s in [self["status"]] if s),
        ]:
            problem = config.not_utf8(description)
            if problem is not None:
                raise usage.UsageError(f"{option} {problem}")
            try:
                check(description)
            except tls.EndpointError as error:
                raise usage.UsageError(f"{option} {error}") from None
        settings = Settings(allow_plaintext=bool(self["allow-plaintext"]))
        for option, description in [
            *(("--listen", text) for text in self["listen"]),
            *(("--peer", endpoint) for _, endpoint in self["peers"]),
            *(("--bootstrap", text) for text in self["bootstrap"]),
        ]:
            try:
                require_tls(description, settings)
            except PlaintextRefused as error:
                raise usage.UsageError(f"{option} {error}") from None
        try:
            check_addresses(self["advertise"])
        except ValueError as error:
            raise usage.UsageError(f"--advertise {error}") from None
        _check_topics(self["topic"], self["topic-log"])
        for name in ("allow-peer", "permit-peer"):
            self[name] = [_peer_id(f"--{name}", text) for text in self[name]]
        for text in self["allow-network"]:
            try:
                parse_network(text)
            except ValueError:
                raise usage.UsageError(
                    f"--allow-network {text!r} is not an address or network"
                ) from None
        self._check_mdns()
        handlers: dict[str, Any] = {} if self["no-builtins"] else dict(BUILTINS)
        for spec in self["handler"]:
            try:
                name, handler = load(spec)
            except HandlerError as error:
                raise usage.UsageError(str(error)) from None
            handlers[name] = handler
        self["handlers"] = handlers

    def _check_mdns(self) -> None:
        """``--mdns`` without zeroconf is one line saying how to install it;
        an interface must be one of this machine's IPv4 addresses."""
        if self["mdns-interface"] and not self["mdns"]:
            raise usage.UsageError("--mdns-interface is for --mdns, which is off")
        if not self["mdns"]:
            return
        try:
            require_zeroconf()
            for address in self["mdns-interface"]:
                check_local(check_interface(address))
        except ValueError as error:
            raise usage.UsageError(f"--mdns-interface {error}") from None
        except MdnsUnavailable as error:
            raise usage.UsageError(str(error)) from None

    def opt_version(self) -> None:
        """Print the versions of blueprint-net and Twisted, and exit."""
        print(version_line())
        raise SystemExit(0)


def _config_path(arguments: list[str]) -> Optional[str]:
    for index, argument in enumerate(arguments):
        if argument in ("--config", "-c") and index + 1 < len(arguments):
            return arguments[index + 1]
        if argument.startswith("--config="):
            return argument.split("=", 1)[1]
        if argument.startswith("-c") and len(argument) > 2:
            return argument[2:]
    return None


def _peer_id(option: str, text: str) -> PeerId:
    try:
        return PeerId.from_string(text)
    except ValueError as error:
        raise usage.UsageError(f"{option} {error}") from None


def _check_topics(topics: list[str], topic_log: Optional[str]) -> None:
    """Each topic a name; no more of them than a node may join (a peer
    takes at most that many of one node's); a topic log only for topics."""
    for topic in topics:
        problem = config.not_utf8(topic)
        if problem is not None:
            raise usage.UsageError(f"--topic {problem}")
        try:
            check_topic(topic)
        except ValueError as error:
            raise usage.UsageError(f"--topic {error}") from None
    limit = GOSSIP_DEFAULTS.max_topics_per_peer
    if len(set(topics)) > limit:
        raise usage.UsageError(
            f"--topic given {len(set(topics))} topics; a node joins at most {limit}"
        )
    if topic_log is not None and not topics:
        raise usage.UsageError("--topic-log is for --topic, and none is given")


def _peer(spec: str) -> tuple[PeerId, str]:
    peer_id, sep, endpoint = spec.partition("@")
    if not sep or not endpoint:
        raise usage.UsageError(f"--peer {spec!r}: want PEERID@ENDPOINT")
    return _peer_id("--peer", peer_id), endpoint


def _refuse_writable_by_others(data_dir: Path) -> None:
    """A data directory others may write to lets them replace the key or the
    ban database: refused (as ssh refuses such a home), never fixed behind
    the operator's back."""
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SystemExit(
            f"blueprint: --data-dir {data_dir}: writable by group or others"
            f" (mode {mode:04o}); run: chmod 700 {data_dir}"
        )


def _refuse_self_dial(peers: list[tuple[PeerId, str]], own: PeerId) -> None:
    """A ``--peer`` naming this node's own id would dial itself forever (and
    once scored itself into a ban of 127.0.0.1): a configuration error."""
    for peer_id, endpoint in peers:
        if peer_id == own:
            raise SystemExit(
                f"blueprint: --peer {peer_id}@{endpoint}: that is this node's"
                " own id (it would dial itself)"
            )


def makeService(options: dict[str, Any]) -> IService:
    from twisted.internet import reactor  # installed by twistd by now

    loglevel.filter_when_logging_begins(loglevel.parse(options["log-level"]))

    values = {s.name: options[s.name] for s in config.SETTINGS}
    parts = config.split(values)
    data_dir = Path(options["data-dir"])
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(
            f"blueprint: --data-dir {data_dir}: {error.strerror}"
        ) from None
    _refuse_writable_by_others(data_dir)
    key_file = (
        Path(options["key-file"]) if options["key-file"] else data_dir / "node.key"
    )
    try:
        identity = load_or_create_identity(key_file)
    except KeyFileError as error:
        raise SystemExit(f"blueprint: --key-file: {error}") from None
    _refuse_self_dial(options["peers"], identity.peer_id)
    try:
        store = SqliteBanStore(data_dir / "bans.sqlite")
    except BanDatabaseError as error:
        raise SystemExit(f"blueprint: ban database: {error}") from None
    registry = BanRegistry(reactor, store, **parts["registry"])
    policy = Policy(
        registry,
        PolicySettings(**parts["policy"]),
        allowed_peers=options["allow-peer"],
        allowed_networks=options["allow-network"],
        permitted_peers=options["permit-peer"] or None,
    )
    node = Node(
        identity,
        reactor=reactor,
        handlers=options["handlers"],
        policy=policy,
        limits=ConnectionLimits(**parts["limits"]),
        settings=Settings(**parts["settings"]),
        gossip=GossipSettings(**parts["gossip"]),
    )
    topic_log = _topic_log(options["topic-log"], node, **parts["topic_log"])
    for topic in dict.fromkeys(options["topic"]):  # each once, in order
        node.subscribe(topic, topic_log.deliver)
    try:
        permits = PermitSources(
            node,
            peers=options["permit-peer"],
            file=Path(options["permit-file"]) if options["permit-file"] else None,
            data_dir_file=data_dir / PERMITS_FILE,
        )
    except PermitListError as error:
        raise SystemExit(f"blueprint: allow-list: {error}") from None
    service = NodeService(
        node,
        store,
        listen=options["listen"],
        peers=options["peers"],
        status=options["status"],
        discovery=DiscoverySettings(**parts["discovery"]),
        bootstrap=options["bootstrap"],
        advertise=options["advertise"] or None,
        mdns=MdnsSettings(interfaces=options["mdns-interface"] or None)
        if parts["mdns"]["enabled"]
        else None,
        permits=permits,
        topic_log=topic_log,
        sighup=True,
        ready=True,
    )
    try:
        # Now, before twistd starts logging and daemonizing: a port in use
        # is then one line on the terminal, not a traceback in the log.
        service.bind()
    except ListenError as error:
        raise SystemExit(f"blueprint: {error}") from None
    if service.mdns is not None and service.mdns.settings.interfaces is None:
        interfaces = default_interfaces(service.manager.addresses())
        if not interfaces:
            raise SystemExit(
                "blueprint: --mdns: the node advertises no private or loopback"
                " IPv4 address to run mDNS on: give --mdns-interface ADDRESS"
                " (and --advertise ADDRESS:PORT if it listens on 0.0.0.0)"
            )
    return service


def _topic_log(path: Optional[str], node: Node, rate: int) -> TopicLog:
    try:
        return TopicLog(
            path, rate=rate, counters=node.counters, clock=node.reactor.seconds
        )
    except OSError as error:
        raise SystemExit(f"blueprint: --topic-log {path}: {error.strerror}") from None


def version_line() -> str:
    """``blueprint-net X (Twisted Y, Python Z)``, for ``--version``."""
    import platform

    import twisted

    return (
        f"blueprint-net {VERSION} (Twisted {twisted.__version__},"
        f" Python {platform.python_version()})"
    )
