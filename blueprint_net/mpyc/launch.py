"""``python -m blueprint_net.mpyc``: run an unchanged MPyC program over
blueprint-net.

Layer: surface (processes, pipes and the command line).

In: ``[--key FILE] [--listen HOST:PORT] [--party ID@HOST:PORT ...] PROGRAM.py
[MPyC options and program arguments]`` (read by
:mod:`blueprint_net.mpyc.options`).  Out: the program's run, as MPyC
would make it, each party a node with its own Ed25519 identity, every pair
of parties linked by TLS and speaking over durable streams
(:mod:`blueprint_net.mpyc.exchanger`).

Two forms (``docs/mpyc.md``):

- ``-M N`` without ``--party``: this process is party 0 and starts parties
  1..N-1 as children (as MPyC's own ``-M N`` does; their output is
  discarded, or appended to ``partyN_i.log`` with ``--output-file``).  Each
  child makes a fresh identity, listens on a port the kernel picks and
  tells party 0 its peer id and port over a pipe; party 0 sends everyone
  the list.  No key leaves its process.
- ``--party`` given once per party, the same list in the same order on
  every machine: the party's index is the place of its own peer id there.

Each party runs Twisted's asyncio reactor on MPyC's event loop, permits
only the listed peers, and keeps a link to each party with a higher index
(as MPyC's parties connect to the higher ones).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import gc
import importlib.util
import io
import json
import logging
import os
import runpy
import selectors
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, Optional

from blueprint_net import Identity
from blueprint_net.mpyc.options import (
    Member,
    UsageError,
    escape_host,
    mpyc_options,
    parse_member,
    parser,
    split_address,
)

#: How long party 0 waits for the other parties to exit after its run.
EXIT_TIMEOUT = 30.0
#: How long a party waits for its links to close when it is done.
STOP_TIMEOUT = 10.0


def main(argv: Optional[Sequence[str]] = None) -> int:
    options = parser().parse_args(argv)
    try:
        return _main(options)
    except UsageError as error:
        print(f"blueprint_net.mpyc: {error}", file=sys.stderr)
        return 2


def exit_now(code: int) -> NoReturn:
    """End the process as soon as what the program did is safe.

    First what Python does first at exit: wait for the program's
    non-daemon threads (``threading._shutdown``, as ``Py_FinalizeEx``
    does), then run the exit handlers.  Then every file the program left
    open is flushed (Python would flush it as it tears the modules down),
    objects in reference cycles are collected (their finalisers run) and
    the standard streams are flushed; then the process ends without that
    teardown, which took about 100 ms of a short program's 400 on a small
    machine.  A forked party ends the same way.
    """
    try:
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        atexit._run_exitfuncs()
        # Only what was made since ``Party.run`` froze the rest: the
        # program's own objects, a few thousand, not the imports.
        for thing in gc.get_objects():
            if isinstance(thing, io.IOBase):
                with contextlib.suppress(Exception):  # detached, closed...
                    if not thing.closed:
                        thing.flush()
        gc.collect()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # None, closed...
                stream.flush()
    finally:
        os._exit(code)


def _main(options: argparse.Namespace) -> int:
    program, args = options.program, list(options.args)
    if importlib.util.find_spec("mpyc") is None:
        raise UsageError(
            "MPyC is not installed: pip install 'blueprint-net[mpyc]'"
            " (Python 3.10 or later)"
        )
    if not Path(program).is_file():
        raise UsageError(f"{program}: no such program")
    mpc_options = mpyc_options(program, args)
    for flag, value in (("-I", mpc_options.index), ("-P", mpc_options.parties)):
        if value is not None:
            raise UsageError(f"{flag} is set by blueprint_net.mpyc; use --party")
    if mpc_options.config is not None:
        raise UsageError("-C is replaced by --party (peer ids and addresses)")
    if options.party:
        return _listed(options, program, args, mpc_options)
    m = mpc_options.M or 1
    if m == 1 or mpc_options.VERSION or mpc_options.HELP:
        # One party has no links: MPyC runs it alone.
        return _run_program(program, args)
    if not hasattr(os, "fork"):
        raise UsageError(
            "-M N forks the parties, which this system cannot;"
            " start each party with --party (docs/mpyc.md)"
        )
    return _coordinate(options, program, args, m, mpc_options.output_file)


# -- the parties' processes ------------------------------------------------


class Party:
    """One party's process: an event loop shared by MPyC and Twisted, a
    node, and the program."""

    def __init__(self, identity: Identity, listen: str) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        from twisted.internet import asyncioreactor

        asyncioreactor.install(self.loop)  # type: ignore[no-untyped-call]
        from twisted.internet import reactor
        from twisted.logger import (
            FilteringLogObserver,
            LogLevel,
            LogLevelFilterPredicate,
            globalLogBeginner,
            textFileLogObserver,
        )

        # blueprint-net's warnings and errors on stderr (MPyC's log is stdout).
        globalLogBeginner.beginLoggingTo(
            [
                FilteringLogObserver(
                    textFileLogObserver(sys.stderr),
                    [LogLevelFilterPredicate(LogLevel.warn)],
                )
            ],
            redirectStandardIO=False,
        )
        # Twisted's start-up (its thread pool, triggers) without its loop:
        # MPyC's run_until_complete drives the shared loop.
        reactor.startRunning(installSignalHandlers=False)  # type: ignore[attr-defined]
        from blueprint_net.node import Node

        self.identity = identity
        self.node = Node(identity)
        self.reactor = reactor
        self._keepers: list[Any] = []
        host, port = split_address(listen)
        self.wait(self.node.listen(f"p2ptls:{port}:interface={escape_host(host)}"))
        self.host = host
        self.port = self.node.listening_addresses[0][1]

    def wait(self, deferred: Any, timeout: Optional[float] = None) -> Any:
        future = deferred.asFuture(self.loop)
        if timeout is not None:
            future = asyncio.wait_for(future, timeout)
        return self.loop.run_until_complete(future)

    def me(self) -> Member:
        return Member(self.identity.peer_id, self.host, self.port)

    def run(
        self, members: Sequence[Member], index: int, program: str, args: list[str]
    ) -> int:
        """Link to the others, run the program as MPyC party ``index``."""
        from blueprint_net.discovery import PeerKeeper
        from blueprint_net.mpyc.exchanger import install

        ids = [member.peer_id for member in members]
        self.node.set_permitted([i for i in ids if i != self.identity.peer_id])
        for member in members[index + 1 :]:
            keeper = PeerKeeper(
                self.node, member.peer_id, member.endpoint(), address=member.describe()
            )
            keeper.startService()
            self._keepers.append(keeper)
        sys.argv = [program, *args]
        import mpyc.runtime

        runtime = mpyc.runtime.mpc
        if runtime.pid != index or len(runtime.parties) != len(members):
            raise UsageError("MPyC's runtime did not take the party list")
        install(runtime, self.node, ids)
        # What exists now (imports, the node) lives until the process
        # ends: the collector skips it from here on, and ``exit_now``
        # looks only at what the program made.
        gc.freeze()
        code = _run_program(program, args, set_argv=False)
        self.stop()
        return code

    def stop(self) -> None:
        for keeper in self._keepers:
            keeper.stopService()
        try:
            self.wait(self.node.stop(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            logging.warning("blueprint-net: links did not close in time")
        # The reactor never runs its shutdown (MPyC's loop drives it), so
        # its thread pool, if a name lookup started one, is stopped here:
        # ``exit_now`` waits for every non-daemon thread.
        pool = getattr(self.reactor, "threadpool", None)
        if pool is not None:
            pool.stop()


def _run_program(program: str, args: list[str], set_argv: bool = True) -> int:
    """Run ``program`` as ``__main__`` (as ``python PROGRAM.py`` would)."""
    if set_argv:
        sys.argv = [program, *args]
    sys.path[0] = str(Path(program).resolve().parent)
    try:
        runpy.run_path(program, run_name="__main__")
    except SystemExit as done:
        return _status(done)
    finally:
        sys.stdout.flush()
    return 0


def _status(done: SystemExit) -> int:
    """The exit status ``sys.exit(code)`` gives (a message: said, then 1)."""
    if done.code is None or isinstance(done.code, int):
        return done.code or 0
    print(done.code, file=sys.stderr)
    return 1


def _listed(
    options: argparse.Namespace, program: str, args: list[str], mpc_options: Any
) -> int:
    """The multi-machine form: ``--party`` once per party."""
    members = [parse_member(text) for text in options.party]
    if len({m.peer_id for m in members}) != len(members):
        raise UsageError("a peer id is listed twice in --party")
    if len(members) < 2:
        raise UsageError("--party lists every party, at least two")
    if mpc_options.M is not None and len(members) != mpc_options.M:
        raise UsageError(f"-M {mpc_options.M} but {len(members)} --party")
    from blueprint_net import load_or_create_identity

    identity = (
        load_or_create_identity(options.key) if options.key else Identity.generate()
    )
    ids = [m.peer_id for m in members]
    if identity.peer_id not in ids:
        raise UsageError(f"this party's peer id {identity.peer_id} is not in --party")
    index = ids.index(identity.peer_id)
    own = members[index]
    # By default, exactly the address the others dial.
    listen = options.listen or f"[{own.host}]:{own.port}"
    args = [*args, "-M", str(len(members)), "-I", str(index)]
    sys.argv = [program, *args]
    party = Party(identity, listen)
    _announce(party, index, len(members))
    return party.run(members, index, program, args)


def _announce(party: Party, index: int, m: int) -> None:
    print(
        f"blueprint_net.mpyc: party {index} of {m} is {party.me().describe()} (TLS)",
        file=sys.stderr,
        flush=True,
    )


# -- -M N: party 0 starts the others ----------------------------------------

#: What every party imports, imported once by party 0 before it forks the
#: others, so that N parties do not each pay for it (on a small machine
#: the imports were most of a short program's wall time).  Not
#: ``mpyc.runtime``: importing it reads ``sys.argv``, which differs per
#: party; nor ``twisted.internet.reactor``, which each party installs.
SHARED_IMPORTS = (
    "twisted.internet.asyncioreactor",
    "twisted.logger",
    "blueprint_net.node",
    "blueprint_net.discovery",
    "blueprint_net.mpyc.exchanger",
    "mpyc.finfields",
    "mpyc.sectypes",
    "mpyc.seclists",
    "mpyc.secgroups",
    "mpyc.statistics",
    "mpyc.mpctools",
)


class Child:
    """One party that party 0 forked: its process id, its pipes, and its
    exit status.

    One thread per child collects the status (nothing else waits for the
    process, so two waits never race); ``on_failure`` is called from that
    thread when the party ends with a status other than 0.
    """

    def __init__(
        self, index: int, pid: int, to_child: IO[bytes], from_child: IO[bytes]
    ):
        self.index = index
        self.pid = pid
        self.to_child = to_child
        self.from_child = from_child
        self.status: Optional[int] = None
        self._exited = threading.Event()
        self._lock = threading.Lock()
        self._on_failure: Optional[Callable[[int, int], None]] = None
        self._collecting = False

    def collect(self) -> None:
        """Start the thread that waits for the process (once)."""
        if not self._collecting:
            self._collecting = True
            threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        try:
            _, wait_status = os.waitpid(self.pid, 0)
            status = os.waitstatus_to_exitcode(wait_status)
        except ChildProcessError:  # reaped elsewhere: its status is lost
            status = 1
        with self._lock:
            self.status = status
            self._exited.set()
            hook = self._on_failure
        if self.status and hook is not None:
            hook(self.index, self.status)

    def on_failure(self, hook: Callable[[int, int], None]) -> None:
        with self._lock:
            self._on_failure = hook
            status = self.status
        if status:
            hook(self.index, status)

    def wait(self, timeout: float) -> Optional[int]:
        """The exit status, or None if the party still runs after ``timeout``."""
        return self.status if self._exited.wait(timeout) else None

    def kill(self) -> None:
        if not self._exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        self.to_child.close()
        self.from_child.close()


def _coordinate(
    options: argparse.Namespace, program: str, args: list[str], m: int, to_file: bool
) -> int:
    """Party 0 of ``-M m``: fork parties 1..m-1, trade the party list."""
    listen = options.listen or "127.0.0.1:0"
    child_listen = f"{split_address(listen)[0]}:0"
    for name in SHARED_IMPORTS:
        importlib.import_module(name)
    children: list[Child] = []
    try:
        for i in range(1, m):
            children.append(
                _fork(i, m, children, child_listen, program, args, options, to_file)
            )
        # Threads only now: forking a process with threads is unsafe.
        for child in children:
            child.collect()
        party = Party(Identity.generate(), listen)
        members = [party.me(), *_hellos(children, options.start_timeout)]
        roster = json.dumps([m.describe() for m in members]).encode() + b"\n"
        for child in children:
            try:
                child.to_child.write(roster)
                child.to_child.flush()
            except BrokenPipeError:
                raise UsageError(
                    f"party {child.index} exited before the start"
                ) from None
        _announce(party, 0, m)
        _watch(party, children)
        code = party.run(members, 0, program, [*args, "-I", "0"])
        return _reap(children, code)
    finally:
        for child in children:
            child.collect()
            child.kill()
            child.wait(EXIT_TIMEOUT)
            child.close()


def _fork(
    index: int,
    m: int,
    earlier: Sequence[Child],
    listen: str,
    program: str,
    args: list[str],
    options: argparse.Namespace,
    to_file: bool,
) -> Child:
    """Fork party ``index``; in the child, run it and exit."""
    from_parent, to_child = os.pipe()
    from_child, to_parent = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    # Ctrl-C or a TERM between the fork and the child's ``try`` would
    # unwind into party 0's frames in the child: held until then.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.close(from_parent)
        os.close(to_parent)
        return Child(index, pid, os.fdopen(to_child, "wb"), os.fdopen(from_child, "rb"))
    # The child: only its own ends of its own pipes, so that it sees party
    # 0 go away (end of file) and the others see it go away.
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        # Exit handlers registered before the fork are party 0's (or its
        # caller's): a party runs only those its own program registers.
        atexit._clear()
        os.close(to_child)
        os.close(from_child)
        for child in earlier:
            child.close()  # (their buffers are empty: nothing is written)
        output = f"party{m}_{index}.log" if to_file else os.devnull
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
        code = _child(index, from_parent, to_parent, listen, program, args, options)
    except UsageError as error:
        print(f"blueprint_net.mpyc: {error}", file=sys.stderr)
        code = 2
    except SystemExit as done:
        code = _status(done)
    except BaseException:
        traceback.print_exc()
    finally:
        # None of party 0's own code (its ``finally`` blocks) runs here.
        exit_now(code)


def _hellos(children: Sequence[Child], timeout: float) -> list[Member]:
    """Each child's peer id and port, in index order, within ``timeout``."""
    deadline = time.monotonic() + timeout
    found: dict[int, Member] = {}
    with selectors.DefaultSelector() as selector:
        for child in children:
            selector.register(child.from_child, selectors.EVENT_READ, child)
        while len(found) < len(children):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(range(1, len(children) + 1)) - set(found))
                raise UsageError(f"parties {missing} did not start in {timeout:g} s")
            for key, _ in selector.select(left):
                child = key.data
                line = child.from_child.readline()
                selector.unregister(child.from_child)
                if not line:
                    status = child.wait(EXIT_TIMEOUT)
                    raise UsageError(
                        f"party {child.index} exited (status {status}) before starting"
                    )
                found[child.index] = parse_member(json.loads(line)["member"])
    return [found[i] for i in sorted(found)]


def _watch(party: Party, children: Sequence[Child]) -> None:
    """End the run at once when another party fails (exits with a status
    other than 0) while this one runs: the rest would wait for it for ever.
    (A party that ends well may end first: its last step is an answer.)"""

    def failed(i: int, status: int) -> None:
        print(
            f"blueprint_net.mpyc: party {i} failed (status {status}); stopping",
            file=sys.stderr,
            flush=True,
        )
        for child in children:
            child.kill()
        sys.stdout.flush()
        os._exit(1)

    def report(i: int, status: int) -> None:  # on a child's thread
        party.loop.call_soon_threadsafe(failed, i, status)

    for child in children:
        child.on_failure(report)


def _reap(children: Sequence[Child], code: int) -> int:
    """Wait for the other parties (bounded); the first failure is ours."""
    deadline = time.monotonic() + EXIT_TIMEOUT
    for child in children:
        status = child.wait(max(0.0, deadline - time.monotonic()))
        if status is None:
            print(
                f"blueprint_net.mpyc: party {child.index} did not exit", file=sys.stderr
            )
            status = 1
        if status and not code:
            code = status
    return code


def _child(
    index: int,
    read_fd: int,
    write_fd: int,
    listen: str,
    program: str,
    args: list[str],
    options: argparse.Namespace,
) -> int:
    """Party ``index`` of ``-M``, forked: say who we are, take the list, run."""
    args = [*args, "-I", str(index)]
    party = Party(Identity.generate(), listen)
    with os.fdopen(write_fd, "wb") as to_parent:
        hello = {"index": index, "member": party.me().describe()}
        to_parent.write(json.dumps(hello).encode() + b"\n")
    from_parent = os.fdopen(read_fd, "rb")
    with selectors.DefaultSelector() as selector:
        selector.register(from_parent, selectors.EVENT_READ)
        if not selector.select(options.start_timeout):
            raise UsageError(f"party {index}: no party list from party 0")
    line = from_parent.readline()
    if not line:
        return 1  # party 0 ended first
    members = [parse_member(text) for text in json.loads(line)]
    _orphan_guard(party, from_parent)
    return party.run(members, index, program, args)


def _orphan_guard(party: Party, from_parent: IO[bytes]) -> None:
    """End this party if party 0 goes away (its end of the pipe closes):
    nobody would ever wait for it."""

    def readable() -> None:
        if not os.read(from_parent.fileno(), 1):
            print("blueprint_net.mpyc: party 0 is gone; stopping", file=sys.stderr)
            sys.stdout.flush()
            os._exit(1)

    party.loop.add_reader(from_parent.fileno(), readable)
