"""``blueprint-net healthcheck``, the container's HEALTHCHECK: a real process
against a running node's status page, a node that is not listening, and a
closed port; the address from ``$BLUEPRINT_NET_STATUS_URL`` or ``--url``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue

from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import Identity
from blueprint_net._ops.cli import FAILED, OK, UNREACHABLE
from blueprint_net._ops.service import NodeService
from tests.helpers import ROOT, free_port, tree_env

pytestmark = pytest.mark.usefixtures("clean_reactor")

CLI = str(Path(sys.executable).with_name("blueprint-net"))
VARIABLE = "BLUEPRINT_NET_STATUS_URL"


async def _healthcheck(
    *argv: str, env: dict[str, str] | None = None
) -> tuple[str, str, int]:
    out, err, code = await getProcessOutputAndValue(
        CLI, ("healthcheck", *argv), env=tree_env(env or {})
    )
    return out.decode(), err.decode(), code


def _started(node: Node, listen: list[str]) -> NodeService:
    service = NodeService(
        node, None, listen=listen, peers=[], status="tcp:0:interface=127.0.0.1"
    )
    service.startService()
    return service


def _url(service: NodeService) -> str:
    assert service.status is not None and service.status.port is not None
    return f"http://127.0.0.1:{service.status.port.getHost().port}"


@pytest_twisted.ensureDeferred
async def test_healthy_node_from_the_environment(alice: Identity) -> None:
    service = _started(Node(alice), ["p2ptls:0:interface=127.0.0.1"])
    try:
        port = service.listeners[0].port.getHost().port  # type: ignore[union-attr]
        # The address comes from the environment: no --url, and not 7080.
        out, err, code = await _healthcheck(env={VARIABLE: _url(service)})
        assert (code, err) == (OK, ""), err
        assert out == f"ok: listening on 127.0.0.1:{port}; 0 peers\n"
        out, err, code = await _healthcheck("--json", env={VARIABLE: _url(service)})
        assert code == OK and json.loads(out)["healthy"] is True, err
        # --url wins over the environment.
        closed = f"http://127.0.0.1:{free_port()}"
        out, err, code = await _healthcheck(
            "--url", _url(service), env={VARIABLE: closed}
        )
        assert code == OK, err
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_node_that_does_not_listen_is_unhealthy(alice: Identity) -> None:
    service = _started(Node(alice), [])
    try:
        out, err, code = await _healthcheck("--url", _url(service))
        assert (code, out) == (FAILED, "")
        assert err == (
            f"blueprint-net healthcheck: {_url(service)}: unhealthy (503):"
            " not listening; 0 peers\n"
        )
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_closed_port_is_one_line_and_non_zero() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out, err, code = await _healthcheck(env={VARIABLE: url})
    assert (code, out) == (UNREACHABLE, "")
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"blueprint-net healthcheck: {url}: ") and "refused" in err


def test_the_container_asks_the_configured_address() -> None:
    """Issue 23 item 5: the HEALTHCHECK hard-coded 127.0.0.1:7080 in a
    Python one-liner; it runs the command, which reads the variable the
    image sets (and ``docker run -e`` overrides)."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    check = re.search(r"^HEALTHCHECK .*?CMD (.*)$", dockerfile, re.M)
    assert check is not None
    assert json.loads(check.group(1)) == ["blueprint-net", "healthcheck"]
    assert f"ENV {VARIABLE}=http://127.0.0.1:7080" in dockerfile


# -- servers that are not a healthy blueprint-net node ----------------------

_OK = b"ok: listening on 127.0.0.1:7010; 0 peers\n"
_HEALTHY = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(_OK), _OK)


class _Canned(Protocol):
    """Answers any request with ``answer`` and closes; with ``pace``, one
    byte every ``pace`` seconds (a slow or hostile server)."""

    def __init__(self, answer: bytes, pace: float | None) -> None:
        self.answer, self.pace = answer, pace
        self.loop: task.LoopingCall | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.loop is not None or self.transport is None:
            return
        if self.pace is None:
            self.transport.write(self.answer)
            self.transport.loseConnection()
            return
        self.loop = task.LoopingCall(self._trickle)
        self.loop.start(self.pace)

    def _trickle(self) -> None:
        assert self.transport is not None and self.loop is not None
        if not self.answer:
            self.loop.stop()
            self.transport.loseConnection()
            return
        self.transport.write(self.answer[:1])
        self.answer = self.answer[1:]

    def connectionLost(self, reason: object = None) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()


async def _against(answer: bytes, *argv: str, pace: float | None = None) -> Any:
    factory = Factory()
    factory.protocol = lambda: _Canned(answer, pace)
    port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{port.getHost().port}"
    try:
        return url, *(await _healthcheck("--url", url, *argv))
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_the_timeout_bounds_the_whole_command_not_each_read() -> None:
    """A server trickling a healthy answer, a byte every 50 ms (5 s in all),
    is not waited on past ``--timeout`` 0.5: each read came within it."""
    url, out, err, code = await _against(_HEALTHY, "--timeout", "0.5", pace=0.05)
    assert (code, out) == (UNREACHABLE, ""), err
    assert err == (
        f"blueprint-net healthcheck: {url}: no answer within 0.5 s (--timeout)\n"
    )


@pytest_twisted.ensureDeferred
async def test_a_server_closing_inside_the_headers_is_not_healthy() -> None:
    url, out, err, code = await _against(b"HTTP/1.0 200 OK\r\nContent-Type: te")
    assert (code, out) == (UNREACHABLE, ""), out
    assert err == (
        f"blueprint-net healthcheck: {url}: the connection closed before a"
        " whole answer\n"
    )


@pytest_twisted.ensureDeferred
async def test_a_wrong_path_is_not_a_status_endpoint_not_an_unhealthy_node() -> None:
    answer = b"HTTP/1.0 404 Not Found\r\nContent-Length: 10\r\n\r\nNot Found\n"
    url, out, err, code = await _against(answer)
    assert (code, out) == (UNREACHABLE, ""), out
    assert err == (
        f"blueprint-net healthcheck: {url}: not a blueprint-net status endpoint"
        " (HTTP 404)\n"
    )
    # A 200 whose body is not the node's either.
    url, out, err, code = await _against(
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert code == UNREACHABLE and "not a blueprint-net status endpoint" in err
