"""Repeated events logged as one line per interval, with a count per reason.

Layer: adapters (Twisted).

Refused connections and failed handshakes are what a flood is made of: one
log line each let one address write 1.3 MB of log in five seconds.  An
:class:`EventSummary` counts them instead and logs one ``info`` line per
interval (only when something happened); the first few of each interval are
also logged in detail at ``debug``, with the peer's text already quoted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

#: Seconds between summary lines.
SUMMARY_INTERVAL = 60.0
#: Events per interval also logged one by one (at debug).
DETAILS_PER_INTERVAL = 10


class EventSummary:
    """Counts events of one kind (``what``) by reason; see the module."""

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        what: str,
        *,
        interval: float = SUMMARY_INTERVAL,
        details: int = DETAILS_PER_INTERVAL,
    ) -> None:
        self.clock, self.what = clock, what
        self.interval, self.details = interval, details
        self._counts: Counter[str] = Counter()
        self._detailed = 0
        self._due: Optional[IDelayedCall] = None

    def record(
        self,
        reason: str,
        detail: Optional[str] = None,
        *,
        notable: bool = False,
        **fields: Any,
    ) -> None:
        """Count one event; ``detail`` (a log format) is logged at debug
        (``notable``: at info, an operator's mistake to see at once) for the
        first few of the interval.  ``fields`` must be str or int."""
        self._counts[reason] += 1
        if detail is not None and self._detailed < self.details:
            self._detailed += 1
            log = self._log.info if notable else self._log.debug
            log(detail, reason=reason, **fields)
        if self._due is None:
            self._due = self.clock.callLater(self.interval, self.flush)

    def flush(self) -> None:
        """Log what was counted since the last line (if anything); the timer
        stops until the next event (so an idle node keeps no timer)."""
        if self._due is not None and self._due.active():
            self._due.cancel()
        self._due = None
        if not self._counts:
            return
        counts, self._counts, self._detailed = dict(self._counts), Counter(), 0
        self._log.info(
            "{total} {what} in the last {interval:g} s: {by_reason}",
            total=sum(counts.values()),
            what=self.what,
            interval=self.interval,
            by_reason=", ".join(f"{r} {n}" for r, n in sorted(counts.items())),
            counts=counts,
        )
