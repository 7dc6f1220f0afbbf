"""Reading a Deferred's outcome at once, for :class:`MemoryNetwork` and
:class:`StubNode` (``blueprint_net.testing``).

In: a Deferred.  Out: what it fired with, or its exception raised (as
``await`` would); :class:`NoResult` while it still waits.
"""

from __future__ import annotations

from typing import TypeVar, Union

from twisted.internet import defer
from twisted.python.failure import Failure

_T = TypeVar("_T")


class NoResult(AssertionError):
    """``MemoryNetwork.result`` or ``StubNode.result`` found the Deferred
    still waiting.

    An ``AssertionError``, so a test framework reports it as a failed
    assertion: usually a missing :meth:`~MemoryNetwork.advance`, or a
    handler whose Deferred nobody fired.
    """


def fired(deferred: defer.Deferred[_T]) -> _T:
    """What ``deferred`` fired with, or its exception raised as ``await``
    would; :class:`NoResult` if it has not fired."""
    outcome: list[Union[_T, Failure]] = []

    def seen(result: Union[_T, Failure]) -> Union[_T, Failure]:
        outcome.append(result)
        return result  # a failure that fires later stays unhandled

    deferred.addBoth(seen)
    if not outcome:
        raise NoResult(f"{deferred!r} has not fired (advance the clock?)")
    [result] = outcome
    if isinstance(result, Failure):
        deferred.addErrback(lambda failure: None)  # handled: raised here
        result.raiseException()
    return result
