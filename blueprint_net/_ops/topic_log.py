"""Where a twistd node's ``--topic`` messages go: a bounded log event, or a
file of JSON lines (``--topic-log``).

Layer: ops (the operator surface).

In: each :class:`~blueprint_net._adapters.gossip.GossipMessage` delivered
to a topic the node joined.  Out: one JSON object per message (the same
shape ``blueprint-net subscribe --json`` prints), appended to the file; or,
without a file, an ``info`` event whose data is cut to
:data:`LOG_PREVIEW` bytes -- a peer may publish megabytes, and the log is
not the place for them.
"""

from __future__ import annotations

import base64
import json
import os
from typing import IO, Any, Optional

from twisted.logger import Logger

from blueprint_net._adapters.gossip import GossipMessage

#: Bytes of a message's data shown in its log event (the rest is counted).
LOG_PREVIEW = 200


def data_json(data: bytes) -> dict[str, str]:
    """``data`` for JSON: ``{"data": text}`` when it is UTF-8, else
    ``{"data_base64": ...}`` (never decoded lossily)."""
    try:
        return {"data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"data_base64": base64.b64encode(data).decode("ascii")}


def message_json(message: GossipMessage) -> dict[str, Any]:
    """One delivered message as a JSON object (a ``--topic-log`` line)."""
    return {
        "topic": message.topic,
        "origin": str(message.origin),
        "seqno": message.seqno,
        "message_id": message.message_id.hex(),
        **data_json(message.data),
    }


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


class TopicLog:
    """Records the messages delivered to the node's topics.

    With ``path``, appends one JSON line per message to that file (made
    with mode 0600: messages may be private) and flushes it;
    :meth:`reopen` (SIGHUP) starts a new file after a log rotation.
    Without, logs one bounded ``info`` event per message.
    """

    _log = Logger()

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path
        self.file: Optional[IO[str]] = None
        if path is not None:
            self.file = self._open(path)  # OSError: the caller says which option

    @staticmethod
    def _open(path: str) -> IO[str]:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(descriptor, "a", encoding="utf-8")

    def deliver(self, message: GossipMessage) -> None:
        """A topic handler: record ``message``."""
        if self.file is None:
            self._log.info(
                "topic {topic!r}: {size} bytes from {origin} (seqno {seqno}): {data}",
                topic=message.topic,
                origin=str(message.origin),
                seqno=message.seqno,
                size=len(message.data),
                data=preview(message.data),
            )
            return
        self.file.write(json.dumps(message_json(message)) + "\n")
        self.file.flush()

    def reopen(self) -> None:
        """Close the file and open it again by name (after a rotation); a
        file that cannot be opened now is logged, and the old one kept."""
        if self.path is None or self.file is None:
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
        self.file.close()
        self.file = fresh

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
