"""The twistd plugin: discovery, options, and a real twistd process."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Optional

import pytest
import pytest_twisted

from blueprint_net._adapters.node import Node
from blueprint_net._core.identity import Identity
from blueprint_net._ops import config, handlers, loglevel, tap
from blueprint_net._ops.config import DEFAULT_LISTEN
from blueprint_net._ops.keyfiles import load_identity
from blueprint_net._ops.service import NodeService
from blueprint_net._ops.tap import Options
from blueprint_net._policy.settings import Settings
from tests.helpers import free_port, tree_env

pytestmark = pytest.mark.usefixtures("clean_reactor")


#: The twistd script installed beside this interpreter.
TWISTD = str(Path(sys.executable).with_name("twistd"))
PEER = Identity(bytes(32)).peer_id


def _twistd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Outside the source tree, with the tree under test on PYTHONPATH: the
    # plugin is found on sys.path as an installed one would be.
    return subprocess.run(
        [TWISTD, *args],
        env=tree_env(),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_twistd_lists_the_plugin(tmp_path: Path) -> None:
    result = _twistd("--help", cwd=tmp_path)
    assert "blueprint" in result.stdout, result.stdout + result.stderr


def test_plugin_help_documents_every_option(tmp_path: Path) -> None:
    result = _twistd("blueprint", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [s.name for s in config.SETTINGS] + list(config.LISTS)
    names += ["config", "data-dir", "key-file", "status", "no-builtins"]
    for name in names:
        assert f"--{name}" in result.stdout, name


def test_a_bad_value_is_one_line_naming_the_option(tmp_path: Path) -> None:
    result = _twistd("blueprint", "--max-connections", "0", cwd=tmp_path)
    assert result.returncode != 0
    assert (
        "--max-connections must be at least 1, not 0" in result.stdout + result.stderr
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_options_defaults() -> None:
    options = Options()
    options.parseOptions([])
    assert options["listen"] == [DEFAULT_LISTEN]
    assert DEFAULT_LISTEN.startswith("p2ptls:") and not options["allow-plaintext"]
    assert options["status"] == config.DEFAULT_STATUS
    assert sorted(options["handlers"]) == ["echo", "ping"]
    assert options["peers"] == [] and options["permit-peer"] == []
    assert options["max-frame"] == 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--handshake-timeout", "0"], "--handshake-timeout must be more than 0"),
        (["--handshake-timeout", "soon"], "--handshake-timeout wants a number"),
        (["--max-connections", "1.5"], "--max-connections wants an integer"),
        (["--exempt-loopback", "maybe"], "--exempt-loopback wants yes or no"),
        (["--request-timeout", "nan"], "--request-timeout wants a finite number"),
        (["--ban-duration", "inf"], "--ban-duration wants a finite number"),
        (["--keepalive-interval", "-inf"], "--keepalive-interval wants a finite"),
        (["--ipv4-prefix", "40"], "--ipv4-prefix must be at most 32, not 40"),
        (["--ipv6-prefix", "129"], "--ipv6-prefix must be at most 128, not 129"),
        (["--peer", "tcp:127.0.0.1:7011"], "--peer 'tcp:127.0.0.1:7011': want PEERID@"),
        (["--peer", "12D3KooWnope@tcp:127.0.0.1:1"], "--peer invalid peer id"),
        (["--permit-peer", "x"], "--permit-peer invalid peer id"),
        (["--listen", "tcp:7010"], "--listen 'tcp:7010' is plaintext"),
        ([f"--peer={PEER}@tcp:127.0.0.1:1"], "--peer 'tcp:127.0.0.1:1' is plaintext"),
        (["--listen", "unix:/tmp/x"], "allow_plaintext / --allow-plaintext"),
        (["--allow-network", "10.0.0.0/33"], "--allow-network '10.0.0.0/33'"),
        (["--handler", "echo"], "want NAME=package.module.attribute"),
        (["--bootstrap", "tcp:127.0.0.1:1"], "--bootstrap 'tcp:127.0.0.1:1' is plain"),
        (["--bootstrap", "p2ptls:127.0.0.1"], "--bootstrap 'p2ptls:127.0.0.1': miss"),
        (["--bootstrap", "bogus:1"], "--bootstrap 'bogus:1': Unknown endpoint"),
        (["--advertise", "nowhere"], "--advertise address 'nowhere' is not host:"),
        (["--advertise", "127.0.0.1:0"], "--advertise address '127.0.0.1:0': port"),
        (["--target-peers", "-1"], "--target-peers must be at least 0, not -1"),
        (["--give-up-after", "0"], "--give-up-after must be at least 1, not 0"),
        (
            ["--idontwant-threshold", "-1"],
            "--idontwant-threshold wants a size in bytes or off, not '-1'",
        ),
        (
            ["--idontwant-threshold", "big"],
            "--idontwant-threshold wants a size in bytes or off, not 'big'",
        ),
        (["--handler", "x=no.such.module"], "cannot import no.such"),
        (["--handler", "x=blueprint_net._ops.handlers.nope"], "has no 'nope'"),
    ],
)
def test_bad_values_name_their_option(arguments: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as caught:
        Options().parseOptions(arguments)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_discovery_options() -> None:
    options = Options()
    options.parseOptions(
        [
            *("--bootstrap", "p2ptls:192.0.2.1:7010"),
            *("--bootstrap", "p2ptls:192.0.2.2:7010"),
            *("--advertise", "[2001:db8::1]:7010", "--target-peers", "3"),
            *("--give-up-after", "20"),
        ]
    )
    assert options["bootstrap"] == ["p2ptls:192.0.2.1:7010", "p2ptls:192.0.2.2:7010"]
    assert options["advertise"] == ["[2001:db8::1]:7010"]
    assert config.split({**Options().defaults, **options})["discovery"] == {
        "target_peers": 3,
        "give_up_after": 20,
    }


@pytest.mark.parametrize(
    ("given", "threshold"), [([], None), (["1024"], 1024), (["off"], None), (["0"], 0)]
)
@pytest_twisted.ensureDeferred
async def test_idontwant_is_off_unless_a_threshold_is_given(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    given: list[str],
    threshold: Optional[int],
) -> None:
    """``--idontwant-threshold`` reaches the node's gossip settings; off
    (older nodes close the link on IDontWant) unless given."""
    # makeService's log filter waits for twistd's logging: not in a test.
    monkeypatch.setattr(loglevel, "filter_when_logging_begins", lambda _: None)
    options = Options()
    options.parseOptions(
        [
            *("--data-dir", str(tmp_path), "--status", "none"),
            *("--listen", "p2ptls:0:interface=127.0.0.1"),
            *(a for g in given for a in ("--idontwant-threshold", g)),
        ]
    )
    assert options["idontwant-threshold"] == threshold
    service = tap.makeService(options)
    assert isinstance(service, NodeService)
    service.startService()
    try:
        assert service.node.gossip.router.settings.idontwant_threshold == threshold
    finally:
        await service.stopService()


def test_a_handler_by_dotted_name() -> None:
    options = Options()
    options.parseOptions(
        ["--no-builtins", "--handler", "shout=blueprint_net._ops.handlers.echo"]
    )
    assert options["handlers"] == {"shout": handlers.echo}


def _ini(tmp_path: Path, text: str) -> str:
    path = tmp_path / "node.ini"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_config_file_and_the_command_line_over_it(tmp_path: Path) -> None:
    path = _ini(
        tmp_path,
        """
        [blueprint]
        max-connections = 50
        request-rate = 2.5
        exempt-loopback = no
        allow-plaintext = yes
        status = none
        listen =
            tcp:7101:interface=127.0.0.1
            tcp:7102:interface=127.0.0.1
        allow-network = 10.0.0.0/8
        """,
    )
    options = Options()
    options.parseOptions(["--config", path, "--request-rate", "7"])
    assert options["max-connections"] == 50  # from the file
    assert options["request-rate"] == 7.0  # the command line wins
    assert options["exempt-loopback"] is False
    assert options["allow-plaintext"] is True  # so the tcp: listeners are accepted
    assert options["status"] is None
    assert options["listen"] == [
        "tcp:7101:interface=127.0.0.1",
        "tcp:7102:interface=127.0.0.1",
    ]
    assert options["allow-network"] == ["10.0.0.0/8"]
    overridden = Options()
    overridden.parseOptions([f"--config={path}", "--listen", "tcp:7200"])
    assert overridden["listen"] == ["tcp:7200"]  # a list given replaces the file's


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[other]\nx = 1\n", "no [blueprint] section"),
        ("[blueprint]\nmax-conections = 5\n", "unknown setting 'max-conections'"),
        ("[blueprint]\nmax-connections = lots\n", "--max-connections wants an integer"),
        ("not ini at all", "File contains no section headers"),
    ],
)
def test_config_file_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SystemExit, match=re.escape(message)):
        Options().parseOptions(["-c", _ini(tmp_path, text)])


def test_a_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="No such file"):
        Options().parseOptions(["--config", str(tmp_path / "none.ini")])


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"twistd exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("twistd did not start listening")


@pytest_twisted.ensureDeferred
async def test_real_twistd_node_handshakes(tmp_path: Path, alice) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    key = tmp_path / "node.key"
    log = tmp_path / "twistd.log"
    process = subprocess.Popen(
        [
            TWISTD,
            "-n",
            "--pidfile=",
            f"--logfile={log}",
            "blueprint",
            "--allow-plaintext",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--key-file",
            str(key),
            "--data-dir",
            str(tmp_path / "data"),
            "--status",
            "none",
        ],
        cwd=tmp_path,
        env=tree_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    node = Node(alice, settings=Settings(allow_plaintext=True))
    try:
        _wait_for_port(port, process)
        server_id = load_identity(key).peer_id  # created by twistd on first run
        peer = await node.connect(f"tcp:127.0.0.1:{port}", peer_id=server_id)
        assert peer.peer_id == server_id
    finally:
        await node.stop()
        process.send_signal(signal.SIGTERM)
        # twistd re-raises the signal it stopped for, so its status reports it.
        assert process.wait(timeout=10) in (0, -signal.SIGTERM)
    logged = log.read_text()
    assert logged.count("plaintext links allowed (allow_plaintext)") == 1, logged
    assert "Received SIGTERM, shutting down." in logged
    assert "Server Shut Down." in logged
    assert "Traceback" not in logged


def test_operations_doc_covers_every_option() -> None:
    """docs/operations.md documents every option, with the code's default."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for setting in config.SETTINGS:
        default = setting.default
        if isinstance(default, bool):
            shown = "yes" if default else "no"
        elif default is None:
            shown = "off"
        else:
            shown = f"{int(default):,}" if float(default).is_integer() else str(default)
        assert f"| `--{setting.name}` | {shown} |" in doc, setting.name
    for name in (*config.LISTS, "config", "data-dir", "key-file", "status"):
        assert f"`--{name}" in doc, name


def test_defaults_are_shown_as_typed_and_used_as_values() -> None:
    """``--help`` shows ``[default: 3600]`` and ``[default: yes]``, as an
    operator would type them; a default left alone is the setting's value,
    of its type; a bad value is one line without Twisted's prefix."""
    shown = re.findall(r"\[default: ([^]]*)\]", Options().getUsage())
    assert shown and not [d for d in shown if re.fullmatch(r"-?\d+\.0|True|False", d)]
    assert "3600" in shown and "yes" in shown
    options = Options()
    options.parseOptions([])
    for setting in config.SETTINGS:
        assert options[setting.name] == setting.default, setting.name
        if not setting.flag:  # (a flag is usage.Options' 0 or 1)
            assert type(options[setting.name]) is type(setting.default), setting.name
    with pytest.raises(SystemExit) as refused:
        Options().parseOptions(["--max-connections", "x"])
    assert (
        str(refused.value) == "blueprint: --max-connections wants an integer, not 'x'"
    )
