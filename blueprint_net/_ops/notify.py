"""Readiness for systemd (``Type=notify``): one datagram to
``$NOTIFY_SOCKET`` once the node listens, another when it stops.

Layer: ops (the operator surface).

The protocol is a newline-separated ``KEY=value`` datagram over an AF_UNIX
socket (``sd_notify(3)``); an address starting with ``@`` is in the abstract
namespace.  Nothing to install: no ``libsystemd`` binding for one sendto.
Without ``NOTIFY_SOCKET`` (not run by systemd) it does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Optional

from twisted.logger import Logger

_log = Logger()


def notify(message: str, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Send ``message`` (``READY=1``, ``STOPPING=1``...) to the service
    manager; whether there was one to send it to.  A failure is logged,
    never raised: a node must not die because its supervisor went away."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not address or not hasattr(socket, "AF_UNIX"):
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as error:
        _log.warn(
            "could not notify the service manager at {address}: {error}",
            address=address.replace("\0", "@"),
            error=error.strerror or str(error),
        )
        return False
    return True
