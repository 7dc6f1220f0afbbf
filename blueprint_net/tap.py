"""``twistd blueprint``: run a node.

This is the first slice of the operator interface: where to listen and which
key to use.  Peers to keep connected, limits, TLS and the status page come
with the plugin issue.
"""

from __future__ import annotations

from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.python import usage

from .identity import KeyFileError, load_or_create_identity
from .node import Node
from .protocol import DEFAULT_HANDSHAKE_TIMEOUT

DEFAULT_LISTEN = "tcp:7010:interface=127.0.0.1"


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run a blueprint-net node. Every option has a working default."

    optParameters = [  # noqa: RUF012 (Twisted's declarative API)
        [
            "key-file",
            "k",
            "blueprint.key",
            "Ed25519 key (PKCS#8 PEM), created on first run.",
        ],
        [
            "handshake-timeout",
            None,
            DEFAULT_HANDSHAKE_TIMEOUT,
            "Seconds a peer has to complete the handshake.",
            float,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Endpoint to accept peers on (strports; repeatable).
        [default: tcp:7010:interface=127.0.0.1]"""
        self["listen"].append(description)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["handshake-timeout"] <= 0:
            raise usage.UsageError("--handshake-timeout must be positive")


def makeService(options: dict[str, Any]) -> IService:
    try:
        identity = load_or_create_identity(options["key-file"])
    except KeyFileError as error:
        raise SystemExit(f"blueprint: --key-file: {error}") from None
    node = Node(identity, handshake_timeout=options["handshake-timeout"])
    top = MultiService()
    node.setServiceParent(top)
    for description in options["listen"]:
        strports.service(description, node.server_factory).setServiceParent(top)
    return top
