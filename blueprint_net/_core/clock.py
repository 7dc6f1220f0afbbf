"""What the pure layers need of a clock: the time now, nothing to schedule.

Layer: core (sans-IO; imports nothing from Twisted).

A ``typing.Protocol`` rather than Twisted's ``IReactorTime``, so the policy
code can be typed without importing Twisted; the reactor and
``twisted.internet.task.Clock`` satisfy it as they are.
"""

from __future__ import annotations

from typing import Protocol


class TimeSource(Protocol):
    """Anything with ``seconds()``: the reactor, ``task.Clock``, a test fake."""

    def seconds(self) -> float:
        """The time now, in seconds since the epoch (or any fixed origin)."""
        ...
