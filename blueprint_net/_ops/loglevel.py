"""``--log-level``: which of the node's log events an operator sees.

Layer: ops (the operator surface).

In: a level's name (``debug``, ``info``, ``warn``, ``error``,
``critical``).  Out: the observers twistd (or the command line) logs to,
behind a filter that drops events below that level.  Without it twistd
writes every event, ``debug`` included: a discovery dial that failed, each
of the first few failed handshakes of a minute.  The default is ``info``.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogBeginner,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
)

#: The names ``--log-level`` takes, quietest last.
LEVELS = ("debug", "info", "warn", "error", "critical")
DEFAULT = "info"


def parse(text: str) -> LogLevel:
    """A level by name; ``ValueError`` says which names there are."""
    name = str(text).strip().lower()
    if name == "warning":
        name = "warn"
    if name not in LEVELS:
        raise ValueError(f"wants one of {', '.join(LEVELS)}, not {text!r}")
    level: LogLevel = LogLevel.levelWithName(name)
    return level


def option(text: str) -> str:
    """For ``usage.Options``: the name, checked; the error names the option."""
    try:
        parse(text)
    except ValueError as error:
        raise ValueError(f"--log-level {error}") from None
    return text


option.coerceDoc = ""  # type: ignore[attr-defined]  # the help lists the levels


def filtered(observer: ILogObserver, level: LogLevel) -> ILogObserver:
    """``observer``, seeing only events at ``level`` or above."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    return FilteringLogObserver(observer, [predicate])


def filter_when_logging_begins(
    level: LogLevel, beginner: LogBeginner = globalLogBeginner
) -> None:
    """Filter the observers that ``beginner`` is given later: twistd builds
    its own (``--logfile``, ``--logger``, syslog) only after the plugin's
    ``makeService`` has run, so the filter waits for them there."""
    begin: Callable[..., Any] = beginner.beginLoggingTo

    def begin_filtered(observers: Any, *args: Any, **kwargs: Any) -> Any:
        return begin([filtered(o, level) for o in observers], *args, **kwargs)

    beginner.beginLoggingTo = begin_filtered  # type: ignore[method-assign]
