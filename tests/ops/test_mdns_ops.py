"""``twistd blueprint --mdns``: its options, its one-line errors (the extra
missing among them), and a real twistd node found on loopback over mDNS by
a node in the test, which then connects to it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from blueprint_net import Identity, Node
from blueprint_net._adapters.mdns_zeroconf import INSTALL_HINT
from blueprint_net._ops import config
from blueprint_net._ops.keyfiles import load_identity
from blueprint_net._ops.service import NodeService
from blueprint_net._ops.tap import Options
from blueprint_net._policy.mdns import MdnsSettings
from blueprint_net._policy.settings import Settings
from tests.helpers import tree_env, until

#: twistd's entry point, run with zeroconf made unimportable.
WITHOUT_ZEROCONF = textwrap.dedent(
    """
    import sys
    sys.modules["zeroconf"] = None  # import zeroconf: ImportError
    from twisted.scripts.twistd import run
    sys.argv = ["twistd", *sys.argv[1:]]
    run()
    """
)


def _twistd(*args: str, cwd: Path, code: str = "") -> subprocess.CompletedProcess[str]:
    program = code or "from twisted.scripts.twistd import run; run()"
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        env=tree_env(),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_mdns_is_off_by_default() -> None:
    options = Options()
    options.parseOptions([])
    assert not options["mdns"] and options["mdns-interface"] == []
    assert config.split({**Options().defaults, **options})["mdns"] == {"enabled": False}


def test_mdns_and_its_interfaces() -> None:
    options = Options()
    options.parseOptions(["--mdns", "--mdns-interface", "127.0.0.1"])
    assert options["mdns"] and options["mdns-interface"] == ["127.0.0.1"]
    assert config.split({**Options().defaults, **options})["mdns"] == {"enabled": True}


def test_mdns_from_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "node.ini"
    path.write_text("[blueprint]\nmdns = yes\nmdns-interface = 127.0.0.1\n")
    options = Options()
    options.parseOptions(["--config", str(path)])
    assert options["mdns"] and options["mdns-interface"] == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--mdns-interface", "127.0.0.1"], "--mdns-interface is for --mdns"),
        (["--mdns", "--mdns-interface", "eth0"], "'eth0' is not an IP address"),
        (["--mdns", "--mdns-interface", "::1"], "only IPv4 interfaces"),
        (["--mdns", "--mdns-interface", "0.0.0.0"], "not one interface's address"),
        # TEST-NET-3: an address no interface here has (a bind, no packet).
        (["--mdns", "--mdns-interface", "203.0.113.77"], "not an address of this"),
    ],
)
def test_bad_mdns_options_are_one_line(arguments: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as caught:
        Options().parseOptions(arguments)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_mdns_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    result = _twistd("-n", "blueprint", "--mdns", cwd=tmp_path, code=WITHOUT_ZEROCONF)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == [f"blueprint: {INSTALL_HINT}"], lines
    assert "pip install 'blueprint-net[mdns]'" in INSTALL_HINT
    # Without --mdns, a missing zeroconf is nobody's concern.
    result = _twistd("blueprint", "--help", cwd=tmp_path, code=WITHOUT_ZEROCONF)
    assert result.returncode == 0, result.stderr


def test_mdns_with_no_local_address_to_run_on_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("zeroconf", reason="the mdns extra is not installed")
    result = _twistd(
        *("-n", "--pidfile=", "blueprint", "--mdns", "--status", "none"),
        *("--listen", "p2ptls:0:interface=127.0.0.1"),
        *("--advertise", "203.0.113.5:7010", "--data-dir", str(tmp_path / "d")),
        cwd=tmp_path,
    )
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "--mdns: the node advertises no private" in lines[0]


@pytest_twisted.ensureDeferred
def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def test_a_twistd_node_with_mdns_is_found_on_loopback(tmp_path: Path) -> None:
    """The default interface of a node on loopback is loopback: twistd
    announces there, the test's node finds it, verifies, dials."""
    pytest.importorskip("zeroconf", reason="the mdns extra is not installed")
    log = tmp_path / "twistd.log"
    key = tmp_path / "node.key"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            *("-n", "--pidfile=", f"--logfile={log}", "blueprint", "--mdns"),
            *("--listen", "p2ptls:0:interface=127.0.0.1", "--status", "none"),
            *("--key-file", str(key), "--data-dir", str(tmp_path / "data")),
        ],
        cwd=tmp_path,
        env=tree_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    node = Node(Identity.generate(), reactor=reactor, settings=Settings())
    service = NodeService(
        node,
        None,
        listen=["p2ptls:0:interface=127.0.0.1"],
        peers=[],
        status=None,
        mdns=MdnsSettings(interfaces=("127.0.0.1",)),
    )
    try:
        # The log line comes once the key is written whole (a key read as
        # soon as its file exists may be half-written).
        await until(lambda: "LAN discovery (mDNS) on" in _text(log), timeout=30)
        server_id = load_identity(key).peer_id
        service.startService()
        # No bootstrap, no --peer on either side: only mDNS can have told
        # one of them of the other (whichever dialed first; the other may
        # then have had the record from that link before mDNS brought it).
        await until(lambda: node.peer(server_id) is not None, timeout=30)
        heard = ("mdns.records.kept", "mdns.records.stale")
        await until(lambda: sum(node.counters[k] for k in heard) >= 1, timeout=30)
    finally:
        await service.stopService()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) in (0, -signal.SIGTERM)
    logged = log.read_text()
    assert "LAN discovery (mDNS) on 127.0.0.1" in logged, logged
    assert "Traceback" not in logged, logged
