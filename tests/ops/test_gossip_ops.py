"""Gossip for operators: twistd ``--topic`` and ``--topic-log``, and
``blueprint-net publish`` / ``subscribe``, as real processes on loopback.

Waits poll for a behaviour (a status page, a file, a process's exit); none
asserts a duration.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from zope.interface import provider

from blueprint_net._adapters.gossip import GossipMessage
from blueprint_net._core.identity import Identity
from blueprint_net._ops import config
from blueprint_net._ops.cli import USAGE, main
from blueprint_net._ops.tap import Options
from blueprint_net._ops.topic_log import LOG_PREVIEW, TopicLog
from tests.helpers import interruptible, tree_env
from tests.ops.test_operations import (
    CLI,
    TwistdNode,
    _cli,
    _keygen,
    _status,
    _until,
)

pytestmark = [pytest.mark.usefixtures("clean_reactor"), pytest.mark.timeout(120)]

#: A message of some size: the log shows its first LOG_PREVIEW bytes only.
BIG = "x" * 5000


def _topic(status: dict[str, Any], topic: str) -> dict[str, Any]:
    topics: dict[str, dict[str, Any]] = status.get("gossip", {}).get("topics", {})
    return topics.get(topic, {})


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest_twisted.ensureDeferred
async def test_twistd_topics_with_cli_publish_subscribe_and_status(
    tmp_path: Path,
) -> None:
    a = TwistdNode(tmp_path / "a", await _keygen(tmp_path / "a"))
    b = TwistdNode(tmp_path / "b", await _keygen(tmp_path / "b"))
    topic_log = tmp_path / "b-news.jsonl"
    a.start(b, extra=["--topic", "news", "--topic", "quiet"])
    b.start(a, extra=["--topic", "news", "--topic-log", str(topic_log)])
    at_a, at_b = f"p2ptls:127.0.0.1:{a.port}", f"p2ptls:127.0.0.1:{b.port}"
    try:
        # The status JSON lists the topics, each mesh by peer, and discovery.
        async def meshed() -> Any:
            sa = await _status(a)
            known = sa.get("discovery", {}).get("known", [])
            return (
                _topic(sa, "news").get("mesh_peers") == [b.peer_id]
                and [(k["peer_id"], k["connected"]) for k in known]
                == [(b.peer_id, True)]
                and sa
            )

        sa = await _until(meshed, "A meshes with B on news and holds B's record")
        assert _topic(sa, "quiet")["subscribed"] and _topic(sa, "quiet")["mesh"] == 0
        assert sa["discovery"]["connected_peers"] == 1
        assert sa["discovery"]["known_peers"] == 1
        code, out, err = await _cli("status", "--url", a.url, cwd=tmp_path)
        assert code == 0, err
        assert "known     1 peer records, 1 connected" in out
        assert f"'news'  mesh 1, delivered 0, published 0\n    {b.peer_id}" in out

        # Published into A, delivered at A (logged) and passed on to B
        # (written to B's topic log).
        code, out, err = await _cli(
            "publish", at_a, "news", "hello", "--peer-id", a.peer_id, cwd=tmp_path
        )
        assert code == 0 and "published 5 bytes to 'news'" in out, err
        code, out, err = await _cli(
            "publish", "--json", at_a, "news", BIG, cwd=tmp_path
        )
        assert code == 0, err
        big_id = json.loads(out)["message_id"]

        async def written() -> list[dict[str, Any]]:
            lines = _lines(topic_log)
            return lines if len(lines) >= 2 else []

        lines = await _until(written, "B writes both messages to its topic log")
        assert [line["data"] for line in lines] == ["hello", BIG]
        assert lines[1]["message_id"] == big_id and lines[1]["topic"] == "news"
        assert lines[0]["origin"] != lines[1]["origin"]  # each command's own key
        assert all(isinstance(line["seqno"], int) for line in lines)
        assert stat.S_IMODE(topic_log.stat().st_mode) == 0o600

        async def logged() -> str:
            text = a.log.read_text()
            return text if text.count("topic 'news':") >= 2 else ""

        log = await _until(logged, "A logs both messages")
        assert "5 bytes from" in log and "'hello'" in log
        assert f"({len(BIG) - LOG_PREVIEW} more bytes)" in log and BIG not in log

        # A topic the node did not join: refused in words, not published.
        code, _, err = await _cli("publish", at_b, "quiet", "lost", cwd=tmp_path)
        assert code == 1 and "has not joined topic 'quiet'" in err

        # subscribe through B receives what is published into A.
        subscribing = defer.ensureDeferred(
            _cli(
                "subscribe",
                "--json",
                at_b,
                "news",
                "--count",
                "1",
                "--timeout",
                "100",
                cwd=tmp_path,
            )
        )

        async def grafted() -> bool:
            return len(_topic(await _status(b), "news").get("mesh_peers", [])) == 2

        await _until(grafted, "B grafts the subscribing command into its mesh")
        # DATA "-": the bytes from standard input, here not UTF-8.
        binary = b"\xff\x00binary"
        published = await threads.deferToThread(
            subprocess.run,
            [CLI, "publish", at_a, "news", "-"],
            input=binary,
            capture_output=True,
            env=tree_env(),
            timeout=60,
        )
        assert published.returncode == 0, published.stderr
        code, out, err = await subscribing
        assert code == 0, err
        [line] = [json.loads(text) for text in out.splitlines()]
        assert line["topic"] == "news"
        assert base64.b64decode(line["data_base64"]) == binary

        # Unbounded, it streams until stopped: Ctrl-C ends it quietly.
        streaming = subprocess.Popen(
            [CLI, "subscribe", at_b, "news"],
            env=tree_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=interruptible,  # noqa: PLW1509 (one signal() call)
        )
        await _until(grafted, "B grafts the second subscribing command")
        code, _, err = await _cli("publish", at_a, "news", "streamed", cwd=tmp_path)
        assert code == 0, err
        assert streaming.stdout is not None
        assert await threads.deferToThread(streaming.stdout.readline) == b"streamed\n"
        streaming.send_signal(signal.SIGINT)
        out_bytes, err_bytes = await threads.deferToThread(
            streaming.communicate, timeout=60
        )
        assert (streaming.returncode, out_bytes, err_bytes) == (0, b"", b"")
    finally:
        for node in (a, b):
            if node.process is not None and node.process.poll() is None:
                node.terminate()


@pytest_twisted.ensureDeferred
async def test_a_command_stopped_by_a_signal_exits_130_in_one_line(
    tmp_path: Path,
) -> None:
    """SIGINT while the command's reactor runs (here: a TLS handshake with a
    listener that never answers) is exit 130 and one line; it was an
    IndexError traceback."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        silent.settimeout(60)
        port = silent.getsockname()[1]
        process = subprocess.Popen(
            [CLI, "request", f"p2ptls:127.0.0.1:{port}", "echo", "--timeout", "100"],
            env=tree_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=interruptible,  # noqa: PLW1509 (one signal() call)
        )
        connection, _ = await threads.deferToThread(silent.accept)
        with connection:
            process.send_signal(signal.SIGINT)
            out, err = await threads.deferToThread(process.communicate, timeout=60)
    assert process.returncode == 130, err
    assert err.decode().strip() == "blueprint-net request: interrupted"
    assert out == b""


def test_topics_from_the_command_line_and_the_config_file(tmp_path: Path) -> None:
    ini = tmp_path / "node.ini"
    ini.write_text("[blueprint]\ntopic =\n    news\n    blocks\ntopic-log = t.jsonl\n")
    options = Options()
    options.parseOptions(["--config", str(ini)])
    assert options["topic"] == ["news", "blocks"]
    assert options["topic-log"] == "t.jsonl"
    options = Options()
    options.parseOptions(["--config", str(ini), "--topic", "chat"])
    assert options["topic"] == ["chat"]  # the command line replaces the list
    assert "topic" in config.LISTS
    for bad, why in (("", "not 1 to 255 bytes"), ("x" * 256, "not 1 to 255 bytes")):
        with pytest.raises(SystemExit) as refused:
            Options().parseOptions(["--topic", bad])
        assert str(refused.value).startswith("blueprint: --topic ")
        assert why in str(refused.value)
    with pytest.raises(SystemExit) as refused:
        Options().parseOptions(["--topic", os.fsdecode(b"\xff")])
    assert "not valid UTF-8" in str(refused.value)


def _message(data: bytes) -> GossipMessage:
    origin = Identity(bytes(32)).peer_id
    return GossipMessage(origin, "news", data, 7, b"\x01" * 32)


def test_the_topic_log_writes_json_lines_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "topic.jsonl"
    log = TopicLog(str(path))
    log.deliver(_message(b"text"))
    log.deliver(_message(b"\xff\xfe"))
    assert [line.get("data", line.get("data_base64")) for line in _lines(path)] == [
        "text",
        base64.b64encode(b"\xff\xfe").decode(),
    ]
    assert _lines(path)[0]["seqno"] == 7 and _lines(path)[0]["topic"] == "news"
    path.rename(tmp_path / "topic.jsonl.1")  # rotated, then SIGHUP
    log.reopen()
    log.deliver(_message(b"after"))
    log.close()
    assert [line["data"] for line in _lines(path)] == ["after"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_default_log_event_is_bounded_and_escaped() -> None:
    events: list[dict[str, Any]] = []

    @provider(ILogObserver)
    def observer(event: dict[str, Any]) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        TopicLog().deliver(_message(b"line\nforged [critical] " + b"y" * 10_000))
    finally:
        globalLogPublisher.removeObserver(observer)
    [event] = [e for e in events if e.get("topic") == "news"]
    assert event["log_level"] is LogLevel.info
    assert event["size"] == 10_000 + len(b"line\nforged [critical] ")
    assert "\n" not in event["data"] and "\\n" in event["data"]
    assert len(event["data"]) < LOG_PREVIEW + 50


@pytest.mark.parametrize(
    "argv, why",
    [
        (["publish", "p2ptls:127.0.0.1:9", "", "x"], "not 1 to 255 bytes"),
        (["subscribe", "p2ptls:127.0.0.1:9", "t" * 256], "not 1 to 255 bytes"),
        (["subscribe", "p2ptls:127.0.0.1:9", "t", "--count", "0"], "at least 1"),
        (["subscribe", "tcp:127.0.0.1:9", "t"], "--allow-plaintext"),
        (["publish", "p2ptls:127.0.0.1:9", "t"], "required: data"),
    ],
)
def test_gossip_usage_errors_are_one_line_exit_2(
    argv: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    _, err = capsys.readouterr()
    assert done.value.code == USAGE, err
    assert why in err and len(err.strip().splitlines()) == 1
