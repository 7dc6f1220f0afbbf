"""Where a twistd node's ``--topic`` messages go: a bounded log event, or a
file of JSON lines (``--topic-log``).

Layer: ops (the operator surface).

In: each :class:`~blueprint_net._adapters.gossip.GossipMessage` delivered
to a topic the node joined.  Out: one JSON object per message (the same
shape ``blueprint-net subscribe --json`` prints), appended to the file; or,
without a file, an ``info`` event whose data is cut to
:data:`LOG_PREVIEW` bytes -- a peer may publish megabytes, and the log is
not the place for them.

The file is bounded as the log is: a line is never more than a third
longer than the data's base64 (:func:`data_json`), and what is written
is held to ``--topic-log-rate`` bytes a second, each origin to a share of
it (:class:`ByteBudget`).  A message past either, or one the file would
not take (a full disk), is counted (``topic_log.dropped``), never raised:
a peer's messages must not cost the node a traceback each.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import time
from collections import Counter
from collections.abc import Hashable
from typing import Any, Callable, Optional

from twisted.logger import Logger

from blueprint_net._adapters.gossip import GossipMessage
from blueprint_net._core.telemetry import TOPIC_LOG_DROPPED

#: Bytes of a message's data shown in its log event (the rest is counted).
LOG_PREVIEW = 200
#: ``--topic-log-rate``'s default: bytes a second written to the file.
DEFAULT_RATE = 1024 * 1024
#: One origin may use this share of the rate (so one flooding origin
#: cannot keep every other origin's messages out of the file).
ORIGIN_SHARE = 0.25
#: Seconds of the rate that may be written at once.
BURST = 1.0
#: Origins whose budgets are remembered (the least recently seen go).
ORIGINS_KEPT = 4096
#: At most one "not written" line a minute for each reason.
WARN_INTERVAL = 60.0

#: Characters that make ``data`` binary for the file: control characters
#: (a JSON escape is 6 bytes for 1; in a terminal they are escapes) but tab
#: and newline, and the Unicode line separators (readers split lines on them).
_NOT_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def data_json(data: bytes) -> dict[str, str]:
    """``data`` for JSON: ``{"data": text}`` when it is UTF-8 text without
    control characters and its JSON string is no longer than its base64;
    else ``{"data_base64": ...}`` (never decoded lossily, never grown by
    more than base64 grows it)."""
    encoded = base64.b64encode(data).decode("ascii")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"data_base64": encoded}
    shown = json.dumps(text, ensure_ascii=False).encode()
    if _NOT_TEXT.search(text) is None and len(shown) <= len(encoded) + 2:
        return {"data": text}
    return {"data_base64": encoded}


def message_json(message: GossipMessage) -> dict[str, Any]:
    """One delivered message as a JSON object (a ``--topic-log`` line)."""
    return {
        "topic": message.topic,
        "origin": str(message.origin),
        "seqno": message.seqno,
        "message_id": message.message_id.hex(),
        **data_json(message.data),
    }


def json_line(message: GossipMessage) -> bytes:
    """:func:`message_json` as one UTF-8 line (text is written as UTF-8,
    not ``\\uXXXX``: an escape would triple a 2-byte character)."""
    return json.dumps(message_json(message), ensure_ascii=False).encode() + b"\n"


def preview(data: bytes) -> str:
    """At most :data:`LOG_PREVIEW` bytes of ``data``, as a Python literal
    (``'text'`` or ``b'\\x00...'``): escaped, so a message cannot forge log
    lines, and marked when cut."""
    head = data[:LOG_PREVIEW]
    try:
        shown = repr(head.decode("utf-8"))
    except UnicodeDecodeError:  # binary, or UTF-8 cut inside a character
        shown = repr(head)
    if len(data) > LOG_PREVIEW:
        shown += f" ... ({len(data) - LOG_PREVIEW} more bytes)"
    return shown


class ByteBudget:
    """``rate`` bytes a second in all, ``share`` of it for each key.

    The generic cell rate algorithm with a cost: a write is allowed while
    its key's and the total's debt are at most ``BURST`` seconds, and adds
    its size to both, so one line of any size may pass but the long-run
    rate stays ``rate`` (plus one line).  One float per key; the table
    keeps the ``ORIGINS_KEPT`` most recently seen keys.
    """

    def __init__(self, rate: float, share: float = ORIGIN_SHARE) -> None:
        self.rate, self.key_rate = float(rate), rate * share
        self._total = 0.0
        self._due: dict[Hashable, float] = {}

    def allow(self, key: Hashable, size: int, now: float) -> bool:
        total = max(self._total, now)
        due = max(self._due.pop(key, now), now)
        allowed = total - now <= BURST and due - now <= BURST
        if allowed:
            total += size / self.rate
            due += size / self.key_rate
        self._total = total
        self._due[key] = due  # now the most recently seen
        if len(self._due) > ORIGINS_KEPT:
            del self._due[next(iter(self._due))]
        return allowed


class TopicLog:
    """Records the messages delivered to the node's topics.

    With ``path``, appends one JSON line per message to that file (made
    with mode 0600: messages may be private), at most ``rate`` bytes a
    second; :meth:`reopen` (SIGHUP) starts a new file after a log rotation.
    Without, logs one bounded ``info`` event per message.  What is not
    written is counted in ``counters`` (the node's).
    """

    _log = Logger()

    def __init__(
        self,
        path: Optional[str] = None,
        *,
        rate: float = DEFAULT_RATE,
        counters: Optional[Counter[str]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.budget = ByteBudget(rate)
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.clock = clock
        self._warned: dict[str, float] = {}
        self._unreported: Counter[str] = Counter()
        self.descriptor: Optional[int] = None
        if path is not None:
            self.descriptor = self._open(path)  # OSError: the caller names it

    @staticmethod
    def _open(path: str) -> int:
        """Never blocks: a FIFO without a reader is ENXIO, not a hang (and
        a slow reader drops messages, counted, rather than stall the node)."""
        try:
            return os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o600
            )
        except OSError as error:
            if error.errno == errno.ENXIO:
                error.strerror = "a FIFO without a reader"
            raise

    def deliver(self, message: GossipMessage) -> None:
        """A topic handler: record ``message``."""
        if self.descriptor is None:
            self._log.info(
                "topic {topic!r}: {size} bytes from {origin} (seqno {seqno}): {data}",
                topic=message.topic,
                origin=str(message.origin),
                seqno=message.seqno,
                size=len(message.data),
                data=preview(message.data),
            )
            return
        line = json_line(message)
        if not self.budget.allow(message.origin, len(line), self.clock()):
            self._dropped("rate", f"over --topic-log-rate ({self.budget.rate:g} B/s)")
            return
        try:
            written = 0
            while written < len(line):
                written += os.write(self.descriptor, line[written:])
        except OSError as error:
            self._dropped("error", f"cannot write ({error.strerror})")

    def _dropped(self, reason: str, why: str) -> None:
        """Count a message not written; say so at most once a minute."""
        self.counters[TOPIC_LOG_DROPPED.key_for(reason)] += 1
        self._unreported[reason] += 1
        now = self.clock()
        last = self._warned.get(reason)
        if last is not None and now - last < WARN_INTERVAL:
            return
        self._warned[reason] = now
        emit = self._log.warn if reason == "rate" else self._log.error
        emit(
            "--topic-log {path}: {why}: {count} message(s) not written since"
            " the last such line (blueprint_topic_log_dropped_total; at most"
            " one such line a minute)",
            path=self.path,
            why=why,
            count=self._unreported.pop(reason),
            reason=reason,
        )

    def reopen(self) -> None:
        """Close the file and open it again by name (after a rotation); a
        file that cannot be opened now is logged, and the old one kept."""
        if self.path is None or self.descriptor is None:
            return
        try:
            fresh = self._open(self.path)
        except OSError as error:
            self._log.error(
                "--topic-log {path}: cannot reopen ({why}); still writing the"
                " file open before",
                path=self.path,
                why=error.strerror,
            )
            return
        os.close(self.descriptor)
        self.descriptor = fresh

    def close(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None
