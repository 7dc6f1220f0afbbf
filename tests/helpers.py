"""Test doubles shared by the protocol and node tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from blueprint_net._adapters.node import Node
from blueprint_net._adapters.protocol import IConnectionHost, PeerProtocol
from blueprint_net._core import framing, wire
from blueprint_net._core.connection_events import ConnectionFailed, GossipReceived
from blueprint_net._core.errors import HandshakeFailed
from blueprint_net._core.identity import PeerId
from blueprint_net._policy.settings import Settings

#: The ``make_node`` fixture: ``make_node(identity, **options)`` is a
#: :class:`Node` that is stopped when the test ends, whether it passed or not.
MakeNode = Callable[..., Node]

#: The settings of a bare PeerProtocol on a StringTransport or ``iosim``: not
#: TLS, so it opts in to plaintext (or it closes before its handshake).
PLAINTEXT = Settings(allow_plaintext=True)

#: The tree under test.
ROOT = Path(__file__).resolve().parent.parent


def tree_env(base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``base`` with the tree under test first on ``PYTHONPATH``: a CLI,
    twistd or example subprocess then runs this code, not whatever version
    is installed (``tests/test_packaging.py`` is the one that tests that)."""
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    return env


def run_module(module: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGUMENTS`` from the tree, its exit status kept
    (a minute at most)."""
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        capture_output=True,
        check=False,
        text=True,
        cwd=ROOT,
        env=tree_env(),
        timeout=60,
    )


@implementer(IConnectionHost)
class RecordingHost:
    """An IConnectionHost that writes down what it is told."""

    def __init__(self, refuse: Optional[HandshakeFailed] = None) -> None:
        self.refuse = refuse
        self.opened: list[PeerProtocol] = []
        self.verified: list[PeerProtocol] = []
        self.failed: list[ConnectionFailed] = []
        self.closed: list[Failure] = []
        self.requests: list[wire.Request] = []
        self.gossip: list[GossipReceived] = []
        self.streams: list[bytes] = []

    def authorize(self, peer_id: PeerId) -> None:
        if self.refuse is not None:
            raise self.refuse

    def connection_opened(self, protocol: PeerProtocol) -> None:
        self.opened.append(protocol)

    def peer_verified(self, protocol: PeerProtocol) -> None:
        self.verified.append(protocol)

    def connection_failed(
        self, protocol: PeerProtocol, event: ConnectionFailed
    ) -> None:
        self.failed.append(event)

    def connection_closed(self, protocol: PeerProtocol, reason: Failure) -> None:
        self.closed.append(reason)

    def request_received(self, protocol: PeerProtocol, request: wire.Request) -> None:
        self.requests.append(request)

    def gossip_received(self, protocol: PeerProtocol, event: GossipReceived) -> None:
        self.gossip.append(event)

    def stream_received(self, protocol: PeerProtocol, bodies: list[bytes]) -> None:
        self.streams += bodies


def decode_frames(data: bytes) -> list[wire.Message]:
    framer = framing.FrameDecoder(wire.DEFAULT_MAX_FRAME)
    return [wire.decode(body) for body in framer.feed(data)]


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll the real reactor until ``condition()`` holds (for events a test
    on loopback TCP cannot await directly, such as the far end's close)."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await deferLater(reactor, 0.01)
    raise AssertionError("condition not met in time")


#: Where the kernel picks the local ports of outgoing connections (and of
#: a bind to port 0): Linux's file, or its default range.
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Ports :func:`free_port` gave this process (never given twice).
_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nobody uses now, for a subprocess to bind later.

    It is chosen below the kernel's ephemeral range: a port the kernel
    hands out can be taken meanwhile by any outgoing connection of a test
    running in parallel, and the subprocess then cannot listen (a twistd
    node in CI did exactly that, once in a few runs).  Where the range
    leaves fewer than 1,000 ports below it, the kernel chooses."""
    try:
        low = int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    choose = random.SystemRandom()
    for _ in range(1000):
        wanted = choose.randrange(10000, low) if low > 11000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", wanted))
            except OSError:
                continue
            port: int = sock.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise RuntimeError(f"no free loopback port below {low}")


def send_and_read(port: int, data: bytes, *, limit: float = 10.0) -> bytes:
    """Connect from 127.0.0.1, send ``data``, read until the node closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            received += chunk
        return received


def mutated(body: bytes, data: Any) -> bytes:
    """``body`` with one to four random flips, cuts, appends and inserts,
    drawn from a hypothesis ``st.data()`` (for the decoders' fuzz tests)."""
    from hypothesis import strategies as st

    changed = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "append", "insert"]))
        position = data.draw(st.integers(0, len(changed)))
        if action == "flip" and changed:
            changed[min(position, len(changed) - 1)] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del changed[position:]
        elif action == "append":
            changed += data.draw(st.binary(min_size=1, max_size=8))
        else:
            changed[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    return bytes(changed)


class Idle(protocol.Protocol):
    """A raw TCP client that sends ``opening`` (nothing, by default), then
    only listens: what the peer sends it is ``received``; ``closed`` fires
    when the connection ends."""

    def __init__(self, opening: bytes = b"") -> None:
        self.opening = opening
        self.received = b""
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.opening:
            self.transport.write(self.opening)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)


def interruptible() -> None:
    """A child's ``preexec_fn``: SIGINT as a terminal sends it (a suite
    started in the background by a non-interactive shell hands its children
    SIGINT ignored, and Twisted then leaves it ignored: Ctrl-C tests hang)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fed_without_end(argv: list[str], data: bytes) -> tuple[int, str]:
    """Run ``argv`` with ``data`` on a standard input kept open (it never
    ends); its exit status and standard error, once it exits by itself."""
    process = subprocess.Popen(
        argv,
        env=tree_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdin is not None and process.stderr is not None
        process.stdin.write(data)
        process.stdin.flush()
        status = process.wait(timeout=60)  # stdin still open
        return status, process.stderr.read().decode()
    finally:
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
