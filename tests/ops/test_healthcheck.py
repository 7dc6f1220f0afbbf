"""``blueprint-net healthcheck``, the container's HEALTHCHECK: a real process
against a running node's status page, a node that is not listening, and a
closed port; the address from ``$BLUEPRINT_NET_STATUS_URL`` or ``--url``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import pytest_twisted
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
