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
import importlib.util
import json
import logging
import os
import runpy
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Optional

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


def _main(options: argparse.Namespace) -> int:
    program, args = options.program, list(options.args)
    if importlib.util.find_spec("mpyc") is None:
        raise UsageError(
            "MPyC is not installed: pip install 'blueprint-net[mpyc]'"
            " (Python 3.10 or later)"
        )
    if not Path(program).is_file():
        raise UsageError(f"{program}: no such program")
    if options.control is not None:
        return _child(options, program, args)
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


def _run_program(program: str, args: list[str], set_argv: bool = True) -> int:
    """Run ``program`` as ``__main__`` (as ``python PROGRAM.py`` would)."""
    if set_argv:
        sys.argv = [program, *args]
    sys.path[0] = str(Path(program).resolve().parent)
    try:
        runpy.run_path(program, run_name="__main__")
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    finally:
        sys.stdout.flush()
    return 0


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


def _coordinate(
    options: argparse.Namespace, program: str, args: list[str], m: int, to_file: bool
) -> int:
    """Party 0 of ``-M m``: start parties 1..m-1, trade the party list."""
    listen = options.listen or "127.0.0.1:0"
    children: list[tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]] = []
    logs: list[IO[bytes]] = []
    try:
        for i in range(1, m):
            from_parent, to_child = os.pipe()
            from_child, to_parent = os.pipe()
            command = [
                sys.executable,
                "-m",
                "blueprint_net.mpyc",
                "--control",
                f"{from_parent},{to_parent}",
                "--index",
                str(i),
                "--listen",
                f"{split_address(listen)[0]}:0",
                program,
                *args,
            ]
            output: Any = subprocess.DEVNULL
            if to_file:
                output = open(f"party{m}_{i}.log", "ab")  # noqa: SIM115
                logs.append(output)
            child = subprocess.Popen(
                command,
                stdout=output,
                pass_fds=(from_parent, to_parent),
                env=_same_package(),
            )
            os.close(from_parent)
            os.close(to_parent)
            children.append(
                (child, os.fdopen(to_child, "wb"), os.fdopen(from_child, "rb"))
            )
        party = Party(Identity.generate(), listen)
        members = [party.me(), *_hellos(children, options.start_timeout)]
        roster = json.dumps([m.describe() for m in members]).encode() + b"\n"
        for _, to_child_file, _ in children:
            to_child_file.write(roster)
            to_child_file.flush()
        _announce(party, 0, m)
        _watch(party, children)
        code = party.run(members, 0, program, [*args, "-I", "0"])
        return _reap(children, code)
    finally:
        for child, to_child_file, from_child_file in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            to_child_file.close()
            from_child_file.close()
        for log in logs:
            log.close()


def _same_package() -> dict[str, str]:
    """The environment for a party: it imports this very blueprint_net
    (not another copy installed elsewhere)."""
    import blueprint_net

    root = str(Path(blueprint_net.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, env.get("PYTHONPATH", "")) if p
    )
    return env


def _hellos(
    children: Sequence[tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]],
    timeout: float,
) -> list[Member]:
    """Each child's peer id and port, in index order, within ``timeout``."""
    deadline = time.monotonic() + timeout
    found: dict[int, Member] = {}
    with selectors.DefaultSelector() as selector:
        for i, (_, _, from_child) in enumerate(children, 1):
            selector.register(from_child, selectors.EVENT_READ, i)
        while len(found) < len(children):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(range(1, len(children) + 1)) - set(found))
                raise UsageError(f"parties {missing} did not start in {timeout:g} s")
            for key, _ in selector.select(left):
                i = key.data
                line = key.fileobj.readline()  # type: ignore[union-attr]
                selector.unregister(key.fileobj)
                if not line:
                    code = children[i - 1][0].wait()
                    raise UsageError(
                        f"party {i} exited (status {code}) before starting"
                    )
                found[i] = parse_member(json.loads(line)["member"])
    return [found[i] for i in sorted(found)]


def _watch(
    party: Party,
    children: Sequence[tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]],
) -> None:
    """End the run at once when another party fails (exits with a status
    other than 0) while this one runs: the rest would wait for it for ever.
    (A party that ends well may end first: its last step is an answer.)"""

    def failed(i: int, status: int) -> None:
        print(
            f"blueprint_net.mpyc: party {i} failed (status {status}); stopping",
            file=sys.stderr,
            flush=True,
        )
        for child, _, _ in children:
            if child.poll() is None:
                child.kill()
        sys.stdout.flush()
        os._exit(1)

    def wait(i: int, child: subprocess.Popen[bytes]) -> None:
        status = child.wait()
        if status:
            party.loop.call_soon_threadsafe(failed, i, status)

    for i, (child, _, _) in enumerate(children, 1):
        threading.Thread(target=wait, args=(i, child), daemon=True).start()


def _reap(
    children: Sequence[tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]], code: int
) -> int:
    """Wait for the other parties (bounded); the first failure is ours."""
    deadline = time.monotonic() + EXIT_TIMEOUT
    for i, (child, _, _) in enumerate(children, 1):
        try:
            status = child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"blueprint_net.mpyc: party {i} did not exit", file=sys.stderr)
            status = 1
        if status and not code:
            code = status
    return code


def _child(options: argparse.Namespace, program: str, args: list[str]) -> int:
    """Party ``--index`` of ``-M``: say who we are, take the list, run."""
    read_fd, write_fd = (int(fd) for fd in options.control.split(","))
    index = options.index
    args = [*args, "-I", str(index)]
    mpyc_options(program, args)
    party = Party(Identity.generate(), options.listen)
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
