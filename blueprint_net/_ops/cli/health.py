"""``blueprint-net healthcheck``: a container's or a monitor's probe of a
running node's ``/healthz``, answered in one line and an exit status.

Layer: ops (the operator surface).

In: ``--url`` (or the environment) and ``--timeout``, a deadline for the
whole command: connecting, TLS, the request and every byte of the answer
(a server that trickles its answer a byte at a time is not waited on past
it).  Out: exit 0 and ``ok: listening on ...`` while the node listens; 1
when the node answers that it is not listening (its 503); 3 when no
blueprint-net node answers: nothing within the deadline, a connection
refused or closed before a whole answer, or an answer that is not a
blueprint-net ``/healthz`` one (a wrong path's 404, another server).
"""

from __future__ import annotations

import argparse
import re
import socket
import ssl
import time
import urllib.parse

from blueprint_net._ops.cli.common import FAILED, OK, UNREACHABLE, CommandFailed, emit

#: The most of an answer read: ``/healthz`` is one short line.
MAX_ANSWER = 16384

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r?\n")


class _Unreachable(Exception):
    """No whole answer from the server (the message says why)."""


def healthcheck(args: argparse.Namespace) -> int:
    """See the module: one line, exit 0, 1 or 3."""
    url = args.url
    try:
        code, body = _get(url, args.timeout)
    except _Unreachable as error:
        raise CommandFailed(UNREACHABLE, f"{url}: {error}") from None
    text = _line(body)
    if code == 200 and text.startswith("ok: "):
        emit(args, {"url": url, "healthy": True, "status": text}, text)
        return OK
    if code == 503 and text.startswith("not listening"):
        raise CommandFailed(FAILED, f"{url}: unhealthy ({code}): {text}")
    raise CommandFailed(
        UNREACHABLE, f"{url}: not a blueprint-net status endpoint (HTTP {code})"
    )


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    """GET ``/healthz`` under ``url``, all of it within ``timeout`` seconds:
    the status code and the body."""
    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    try:
        port = parts.port or (443 if secure else 80)
        path = parts.path.rstrip("/") + "/healthz"
        with socket.create_connection((host, port), _left(deadline)) as raw:
            conn = raw
            if secure:
                raw.settimeout(_left(deadline))
                conn = ssl.create_default_context().wrap_socket(
                    raw, server_hostname=host
                )
            request = (
                f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n"
                "Connection: close\r\n\r\n"
            )
            conn.sendall(request.encode("utf-8"))
            answer = b""
            while len(answer) < MAX_ANSWER:
                conn.settimeout(_left(deadline))
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
                if _whole(answer):
                    break
    except TimeoutError:
        raise _Unreachable(f"no answer within {timeout:g} s (--timeout)") from None
    except (OSError, ValueError, UnicodeError) as error:
        raise _Unreachable(getattr(error, "strerror", None) or str(error)) from None
    return _parse(answer)


def _left(deadline: float) -> float:
    """Seconds to the deadline; past it, :class:`TimeoutError`."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _whole(answer: bytes) -> bool:
    """Whether ``answer`` holds its headers and all its ``Content-Length``."""
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return length is not None and len(body) >= int(length.group(1))


def _parse(answer: bytes) -> tuple[int, bytes]:
    """The status and the body of a whole answer, else :class:`_Unreachable`."""
    status = _STATUS_LINE.match(answer)
    head, found, body = answer.partition(b"\r\n\r\n")
    if status is None:
        if not found and b"HTTP/1."[: len(answer)] == answer[:7]:
            raise _Unreachable("the connection closed before a whole answer")
        raise _Unreachable("not a blueprint-net status endpoint (not HTTP)")
    if not found:
        raise _Unreachable("the connection closed before a whole answer")
    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if length is not None and len(body) < int(length.group(1)):
        raise _Unreachable("the connection closed before a whole answer")
    return int(status.group(1)), body


def _line(body: bytes) -> str:
    return " ".join(body.decode("utf-8", "replace").split())
