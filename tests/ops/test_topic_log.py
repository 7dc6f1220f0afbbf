"""The bounds of ``--topic-log`` and of the gossip commands' input, against
what one verified peer (or a careless operator) can do: a line never grows
past base64, a rate bounds the file, a file that cannot be written costs a
counter and one line a minute, and bad options are one line at start-up.

Waits poll for a behaviour (a status page, a log line); none asserts a
duration.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from zope.interface import provider

from blueprint_net._adapters.gossip import GossipMessage
from blueprint_net._core.identity import Identity
from blueprint_net._ops.cli.common import FAILED
from blueprint_net._ops.tap import Options
from blueprint_net._ops.topic_log import TopicLog
from tests.helpers import fed_without_end
from tests.ops.test_operations import (
    CLI,
    TwistdNode,
    _cli,
    _keygen,
    _status,
    _until,
)

pytestmark = [pytest.mark.usefixtures("clean_reactor"), pytest.mark.timeout(120)]


def _message(data: bytes, origin: int = 0) -> GossipMessage:
    peer = Identity(bytes([origin]) * 32).peer_id
    return GossipMessage(peer, "news", data, 7, b"\x01" * 32)


def _line(directory: Path, data: bytes) -> bytes:
    """What ``--topic-log`` writes for ``data``."""
    path = directory / "one.jsonl"
    path.unlink(missing_ok=True)
    log = TopicLog(str(path))
    log.deliver(_message(data))
    log.close()
    return path.read_bytes()


@pytest.mark.parametrize(
    "data",
    [
        b"\x01" * 65536,  # each a \u0001 escape: 6 bytes for 1
        "é".encode() * 32768,  # \u00e9: 6 bytes for 2
        b'"' * 65536,  # \": 2 bytes for 1
        b"\x1b[31m red" * 4096,  # a terminal escape, shown as text before
    ],
)
def test_a_line_is_never_much_longer_than_base64(data: bytes, tmp_path: Path) -> None:
    line = _line(tmp_path, data)
    assert len(line) <= len(base64.b64encode(data)) + 300
    shown = json.loads(line)
    if "data" in shown:
        assert shown["data"] == data.decode()
    else:
        assert base64.b64decode(shown["data_base64"]) == data


def test_text_stays_text(tmp_path: Path) -> None:
    for text in ("hello world", "two\nlines\tand a tab", "naïve café ✓"):
        assert json.loads(_line(tmp_path, text.encode()))["data"] == text


class _Events:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> list[dict[str, Any]]:
        @provider(ILogObserver)
        def observer(event: dict[str, Any]) -> None:
            self.events.append(event)

        self.observer = observer
        globalLogPublisher.addObserver(observer)
        return self.events

    def __exit__(self, *exc: Any) -> None:
        globalLogPublisher.removeObserver(self.observer)


def test_the_rate_bounds_the_file_per_origin_and_in_all(tmp_path: Path) -> None:
    path, now, counters = tmp_path / "t.jsonl", [1000.0], Counter[str]()
    log = TopicLog(str(path), rate=40_000, counters=counters, clock=lambda: now[0])
    data = b"x" * 1000
    with _Events() as events:
        for _ in range(100):  # one origin: its quarter, 10 kB/s, 1 s of burst
            log.deliver(_message(data, origin=1))
        one = len(path.read_text().splitlines())
        assert 5 <= one <= 15
        for origin in range(2, 40):  # many origins: the total, 40 kB/s
            for _ in range(100):
                log.deliver(_message(data, origin=origin))
    written = len(path.read_text().splitlines())
    assert one < written <= 60
    assert counters["topic_log.dropped.rate"] == 3900 - written
    warned = [e for e in events if e.get("reason") == "rate"]
    assert len(warned) == 1 and warned[0]["log_level"] is LogLevel.warn
    now[0] += 61  # the budget refills; the next drop is said again
    log.deliver(_message(data, origin=1))
    assert len(path.read_text().splitlines()) == written + 1
    log.close()


def test_a_full_disk_is_counted_and_said_once_a_minute() -> None:
    counters, now = Counter[str](), [0.0]
    log = TopicLog("/dev/full", counters=counters, clock=lambda: now[0])
    with _Events() as events:
        for _ in range(5):
            log.deliver(_message(b"lost"))
        now[0] += 61
        log.deliver(_message(b"lost"))
    log.close()
    assert counters["topic_log.dropped.error"] == 6
    said = [e for e in events if e.get("reason") == "error"]
    assert [e["count"] for e in said] == [1, 5]
    assert all(e["log_level"] is LogLevel.error for e in said)
    assert not [e for e in events if e.get("log_failure") is not None]


def test_a_fifo_without_a_reader_is_refused_not_waited_for(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as refused:
        TopicLog(str(fifo))
    assert refused.value.strerror == "a FIFO without a reader"


def test_topic_options_are_refused_in_one_line() -> None:
    many = [arg for n in range(257) for arg in ("--topic", f"t{n}")]
    Options().parseOptions(many[:-2])  # 256 topics: a node may join them
    for argv, why in [
        (many, "--topic given 257 topics; a node joins at most 256"),
        (["--topic-log", "t.jsonl"], "--topic-log is for --topic, and none"),
        (["--topic", "t", "--topic-log-rate", "0"], "--topic-log-rate must be at"),
    ]:
        with pytest.raises(SystemExit) as refused:
            Options().parseOptions(argv)
        assert str(refused.value).startswith(f"blueprint: {why}"), refused.value


def test_publish_reads_standard_input_up_to_the_cap() -> None:
    """A standard input that does not end (here: a pipe kept open, past the
    cap) is refused at cap + 1 bytes; all of it was read first (``/dev/zero``:
    a MemoryError)."""
    argv = [CLI, "publish", "p2ptls:127.0.0.1:9", "news", "-"]
    status, err = fed_without_end(argv, bytes(65537))
    assert status == FAILED
    assert err.strip() == (
        "blueprint-net publish: standard input: more than 65536 bytes,"
        " the size cap for 'news'"
    )


async def _publish(node: TwistdNode, count: int, directory: Path) -> None:
    """``count`` publications into ``node``, each a new origin (retried
    until the node listens)."""
    at = f"p2ptls:127.0.0.1:{node.port}"
    for n in range(count):

        async def published(n: int = n) -> bool:
            code, _, _ = await _cli("publish", at, "news", f"m{n}", cwd=directory)
            return code == 0

        await _until(published, f"publication {n}")


async def _dropped(node: TwistdNode, key: str, count: int) -> None:
    async def counted() -> bool:
        dropped: int = (await _status(node)).get("counters", {}).get(key, 0)
        return dropped == count

    await _until(counted, f"{count} counted in {key}")


@pytest_twisted.ensureDeferred
async def test_a_node_bounds_its_topic_log_by_rate(tmp_path: Path) -> None:
    """A real node at 1 byte a second: the first line spends it for
    minutes, so the next two are counted, not written, and said once; the
    SIGHUP line names the topic log."""
    node = TwistdNode(tmp_path / "a", await _keygen(tmp_path / "a"))
    topic_log = tmp_path / "a.jsonl"
    node.start(
        extra=[
            *("--topic", "news", "--topic-log", str(topic_log)),
            *("--topic-log-rate", "1"),
        ]
    )
    try:
        await _publish(node, 3, tmp_path)
        await _dropped(node, "topic_log.dropped.rate", 2)
        lines = topic_log.read_text().splitlines()
        assert [json.loads(line)["data"] for line in lines] == ["m0"]
        node.process.send_signal(signal.SIGHUP)

        async def reopened() -> bool:
            return f"reopening --topic-log {topic_log}" in node.log.read_text()

        await _until(reopened, "the SIGHUP line names the topic log")
        text = node.log.read_text()
        assert text.count("over --topic-log-rate") == 1 and "Traceback" not in text
    finally:
        if node.process is not None and node.process.poll() is None:
            node.terminate()


@pytest_twisted.ensureDeferred
async def test_a_node_survives_a_topic_log_it_cannot_write(tmp_path: Path) -> None:
    """A real node writing to /dev/full: each message is counted, one error
    line says so, and no traceback (there was one per message)."""
    node = TwistdNode(tmp_path / "b", await _keygen(tmp_path / "b"))
    node.start(extra=["--topic", "news", "--topic-log", "/dev/full"])
    try:
        await _publish(node, 3, tmp_path)
        await _dropped(node, "topic_log.dropped.error", 3)
        text = node.log.read_text()
        assert text.count("cannot write") == 1 and "Traceback" not in text, text
    finally:
        if node.process is not None and node.process.poll() is None:
            node.terminate()
