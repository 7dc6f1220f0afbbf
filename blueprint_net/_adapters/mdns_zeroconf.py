"""LAN discovery's transport: zeroconf, restricted to the interfaces it is
given, announcing our TXT record and handing each one heard to the reactor.

Layer: adapters (used by ``mdns.py``'s service; the tests drive that
service with a transport in memory, and this one on loopback).

In: interfaces, a service type, our TXT RDATA to announce.  Out: each TXT
RDATA heard (``found``, on the reactor), with counts of the names dropped
unread since the last one (``busy``: more than ``max_pending`` waited;
``malformed``: a name or record zeroconf refused).

What a peer's packets can cost here is bounded: zeroconf's browser thread
runs :meth:`ZeroconfTransport._changed`, which never blocks and never
raises (an exception there would end zeroconf's thread, and LAN discovery
with it); a service whose records are in zeroconf's cache is handed over at
once, the others wait (at most ``max_pending`` names, each once) for one
lookup thread of ours, each lookup at most ``lookup_timeout`` seconds.

``zeroconf`` (the ``blueprint-net[mdns]`` extra) runs its own thread and
asyncio loop; its blocking calls (start, register, close) run in a short
thread of ours, and every result comes back with ``callFromThread``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from blueprint_net._core.errors import ConfigurationError

#: What ``--mdns`` without the extra says.
INSTALL_HINT = (
    "LAN discovery (--mdns) needs zeroconf: pip install 'blueprint-net[mdns]'"
)

#: Told, on the reactor, of each TXT record found (None: none), and how
#: many names were dropped unread since the last call, by outcome (``busy``,
#: ``malformed``).
Found = Callable[[Optional[bytes], Mapping[str, int]], None]


class MdnsUnavailable(ConfigurationError):
    """LAN discovery cannot run here: zeroconf is missing, or an interface
    is not this machine's."""


def require_zeroconf() -> None:
    """:class:`MdnsUnavailable` with :data:`INSTALL_HINT` if zeroconf is
    not installed."""
    try:
        import zeroconf  # noqa: F401
    except ImportError:
        raise MdnsUnavailable(INSTALL_HINT) from None


def check_local(address: str) -> None:
    """:class:`MdnsUnavailable` unless ``address`` is one of this machine's
    (a UDP bind to it, port 0: nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as error:
            raise MdnsUnavailable(
                f"{address} is not an address of this machine ({error.strerror})"
            ) from None


class IMdnsTransport(Interface):
    """Where the service announces and hears records (zeroconf, or a test's)."""

    def start(
        interfaces: Sequence[str], service_type: str, found: Found
    ) -> defer.Deferred[None]:
        """Run on ``interfaces`` and browse for ``service_type``; ``found``
        is called on the reactor with each service's TXT RDATA."""

    def announce(
        name: str, server: str, txt: bytes, addresses: Sequence[str], port: int
    ) -> defer.Deferred[None]:
        """Register instance ``name`` (or update it) with this TXT RDATA."""

    def stop() -> defer.Deferred[None]:
        """Say goodbye and stop: no thread of its own is left running."""


@implementer(IMdnsTransport)
class ZeroconfTransport:
    """:class:`IMdnsTransport` with ``zeroconf``, restricted to the given
    interfaces (never zeroconf's default of every interface).

    Its calls run one after another, each in a thread of ours that ends with
    it; names found wait for the lookup thread (see the module).
    """

    def __init__(
        self, reactor: Any, *, max_pending: int = 16, lookup_timeout: float = 1.0
    ) -> None:
        self.reactor = reactor
        self.max_pending = max_pending
        self.lookup_timeout = lookup_timeout
        self._lock = threading.Condition()
        #: Names to look up, oldest first, with their service type.
        self._waiting: dict[str, str] = {}
        #: Names waiting, being looked up, or on their way to the reactor:
        #: each at most once, at most ``max_pending`` of them.
        self._held: set[str] = set()
        self._dropped: dict[str, int] = {}
        self._flush_due = False
        self._closing = False
        self._lookup_thread: Optional[threading.Thread] = None
        self._found: Optional[Found] = None
        self._service_type = ""
        self._zeroconf: Any = None
        self._browser: Any = None
        self._registered = False
        self._tail: defer.Deferred[Any] = defer.succeed(None)

    # -- IMdnsTransport (on the reactor) -------------------------------------

    def start(
        self, interfaces: Sequence[str], service_type: str, found: Found
    ) -> defer.Deferred[None]:
        self._found, self._service_type = found, service_type
        return self._serial(self._start, list(interfaces))

    def announce(
        self, name: str, server: str, txt: bytes, addresses: Sequence[str], port: int
    ) -> defer.Deferred[None]:
        return self._serial(self._announce, name, server, txt, list(addresses), port)

    def stop(self) -> defer.Deferred[None]:
        self._found = None
        return self._serial(self._stop)

    # -- in a thread of ours -------------------------------------------------

    def _start(self, interfaces: list[str]) -> None:
        from zeroconf import ServiceBrowser, Zeroconf

        for address in interfaces:
            check_local(address)
        # Made here, where no asyncio loop runs: zeroconf then starts its own
        # thread and loop (in the reactor's thread, under Twisted's asyncio
        # reactor, it would attach to the reactor's loop instead).
        self._zeroconf = Zeroconf(interfaces=interfaces)
        with self._lock:
            self._closing = False
        self._lookup_thread = threading.Thread(
            target=self._lookups, args=(self._zeroconf,), name="blueprint-mdns-lookup"
        )
        self._lookup_thread.start()
        self._browser = ServiceBrowser(
            self._zeroconf, self._service_type, handlers=[self._changed]
        )

    def _announce(
        self, name: str, server: str, txt: bytes, addresses: list[str], port: int
    ) -> None:
        from zeroconf import ServiceInfo

        if self._zeroconf is None:
            return  # not started (or its start failed)
        info = ServiceInfo(
            self._service_type,
            name,
            port=port,
            properties=txt,
            server=server,
            parsed_addresses=addresses,
        )
        if self._registered:
            self._zeroconf.update_service(info)
        else:
            self._zeroconf.register_service(info)
            self._registered = True

    def _stop(self) -> None:
        browser, zeroconf = self._browser, self._zeroconf
        self._browser = self._zeroconf = None
        self._registered = False
        if browser is not None:
            browser.cancel()  # joins its thread
        with self._lock:
            self._closing = True
            self._waiting.clear()
            self._held.clear()
            self._lock.notify_all()
        if self._lookup_thread is not None:
            self._lookup_thread.join()  # within one lookup_timeout
            self._lookup_thread = None
        if zeroconf is not None:
            zeroconf.close()  # goodbyes, then joins its loop's thread

    # -- in zeroconf's browser thread ----------------------------------------

    def _changed(
        self, zeroconf: Any, service_type: str, name: str, state_change: Any
    ) -> None:
        """A service added or updated: handed over, or queued for a lookup.
        Never blocks, never raises: an exception here would end zeroconf's
        browser thread, and LAN discovery with it."""
        try:
            if getattr(state_change, "name", "") == "Removed":
                return  # a goodbye is unsigned: records are forgotten by dials
            self._admit(zeroconf, service_type, name)
        except Exception:  # a name or record zeroconf refuses (a peer's word)
            self._drop("malformed")

    def _admit(self, zeroconf: Any, service_type: str, name: str) -> None:
        with self._lock:
            if name in self._held:
                return  # already on its way
            if len(self._held) >= self.max_pending:
                busy = True
            else:
                busy = False
                self._held.add(name)
        if busy:
            self._drop("busy")
            return
        try:
            txt = self._cached(zeroconf, service_type, name)
        except BaseException:
            with self._lock:
                self._held.discard(name)
            raise
        if txt is not None:
            self.reactor.callFromThread(self._deliver, name, txt)
            return
        with self._lock:
            if self._closing:
                self._held.discard(name)
                return
            self._waiting[name] = service_type
            self._lock.notify()

    def _cached(self, zeroconf: Any, service_type: str, name: str) -> Optional[bytes]:
        """The TXT RDATA of ``name`` if its records are all in zeroconf's
        cache (an announcement brings them in one packet), without asking."""
        from zeroconf import ServiceInfo

        info = ServiceInfo(service_type, name)
        return info.text if info.load_from_cache(zeroconf) else None

    def _drop(self, outcome: str) -> None:
        """Count a name dropped unread; the count reaches the reactor with
        the next find, or by itself soon."""
        with self._lock:
            self._dropped[outcome] = self._dropped.get(outcome, 0) + 1
            flush, self._flush_due = not self._flush_due, True
        if flush:
            self.reactor.callFromThread(self._deliver, None, None)

    # -- in our lookup thread --------------------------------------------------

    def _lookups(self, zeroconf: Any) -> None:
        """Look up the names waiting, one at a time, until stopped."""
        while True:
            with self._lock:
                while not self._waiting and not self._closing:
                    self._lock.wait()
                if self._closing:
                    return
                name = next(iter(self._waiting))
                service_type = self._waiting.pop(name)
            self._look_up(zeroconf, service_type, name)

    def _look_up(self, zeroconf: Any, service_type: str, name: str) -> None:
        txt: Optional[bytes] = None
        try:
            info = zeroconf.get_service_info(
                service_type, name, timeout=int(self.lookup_timeout * 1000)
            )
            txt = None if info is None else info.text
        except Exception:
            self._drop("malformed")
        self.reactor.callFromThread(self._deliver, name, txt)

    # -- back on the reactor -------------------------------------------------

    def _deliver(self, name: Optional[str], txt: Optional[bytes]) -> None:
        with self._lock:
            if name is not None:
                self._held.discard(name)
            dropped, self._dropped = self._dropped, {}
            self._flush_due = False
        if self._found is not None and (txt is not None or dropped):
            self._found(txt, dropped)

    def _serial(self, call: Callable[..., None], *args: Any) -> defer.Deferred[None]:
        """Run ``call(*args)`` in a new thread once the previous call ended;
        its outcome comes back on the reactor, after the thread has ended."""
        done: defer.Deferred[None] = defer.Deferred()
        previous, self._tail = self._tail, defer.Deferred()
        tail = self._tail

        def run(_: object) -> None:
            threading.Thread(
                target=self._run, args=(done, tail, call, args), name="blueprint-mdns"
            ).start()

        previous.addCallback(run)
        return done

    def _run(
        self,
        done: defer.Deferred[None],
        tail: defer.Deferred[None],
        call: Callable[..., None],
        args: Any,
    ) -> None:
        outcome: Optional[Failure] = None
        try:
            call(*args)
        except BaseException:
            outcome = Failure()  # type: ignore[no-untyped-call]
        self.reactor.callFromThread(
            self._finish, threading.current_thread(), done, tail, outcome
        )

    def _finish(
        self,
        thread: threading.Thread,
        done: defer.Deferred[None],
        tail: defer.Deferred[None],
        outcome: Optional[Failure],
    ) -> None:
        thread.join()  # it has handed its outcome over and is ending
        if outcome is None:
            done.callback(None)
        else:
            done.errback(outcome)
        tail.callback(None)  # the next call may run
