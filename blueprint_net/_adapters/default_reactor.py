"""The global reactor, picked when first needed rather than on import or
when a node is built.

Layer: adapters (Twisted).

In: a node built without a ``reactor`` or ``clock``.  Out: the clock its
parts share (:class:`DefaultClock`) and, on the first dial or listen, the
reactor itself (:func:`default_reactor`).  Importing
``twisted.internet.reactor`` installs the default reactor, and an
application that constructs its nodes before it installs the reactor it
wants (asyncio's, say) must still get that one: so nothing here imports it
until a timer is set or an endpoint is made.

States: unresolved, until a timer is asked for (or a reactor was
installed meanwhile); then resolved for good.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.runtime import seconds as runtime_seconds
from zope.interface import implementer


def default_reactor() -> Any:
    """The global reactor (installing the default one if none is yet)."""
    from twisted.internet import reactor

    return reactor


@implementer(IReactorTime)
class DefaultClock:
    """The global reactor's clock, resolved on first use; see the module."""

    def __init__(self) -> None:
        self._reactor: Optional[IReactorTime] = None

    def _resolved(self) -> IReactorTime:
        if self._reactor is None:
            self._reactor = default_reactor()
        return self._reactor

    def seconds(self) -> float:
        """The reactor's time; before any reactor is installed, the same
        clock every Twisted reactor reads (``runtime.seconds``), so asking
        the time picks no reactor."""
        if self._reactor is None and "twisted.internet.reactor" not in sys.modules:
            return runtime_seconds()
        return self._resolved().seconds()

    def callLater(
        self,
        delay: float,
        callable: Callable[..., Any],
        *args: object,
        **kwargs: object,
    ) -> IDelayedCall:
        return self._resolved().callLater(delay, callable, *args, **kwargs)

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        return self._resolved().getDelayedCalls()
