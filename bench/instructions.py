"""Instructions per request, counted, not timed:
``python -m bench.instructions TREE [TREE ...]``.

Wall-clock rates on a shared machine move by 20% from one minute to the
next (a neighbour's load slows us and our reference alike, but not always
in the same run); a count of the instructions the process executes does
not.  Per tree, in its own process under valgrind's callgrind (each
imports ``blueprint_net`` and its benches from its tree, as
``bench.router_path`` does): the work of :data:`WORKLOADS`, run once with
one round and once with three, and the difference divided by the units of
two rounds, so that start-up and connecting cost nothing.  Client and
server are in the one process, as in ``python -m bench``: the counts are
of both ends.  The bare echo and the floor (``bench/messaging.py``) are
counted from this tree, as references.  The first tree is the reference
of the others.

What it does not see: time in the kernel (a system call counts as the
instructions around it), cache misses and the collector's pauses (the
child runs with the collector off, so that a collection falling in one
count and not the other does not move a figure by 1-2%), which the timed
benches do.  A change that saves instructions in Python saves
time in proportion; one that trades a copy for a system call may not.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from .report import load_header
from .trees import FROM_TREE

HERE = Path(__file__).resolve().parent.parent


class Workload(NamedTuple):
    """A row: what one round runs (the body of the child's coroutine), and
    how many units (requests, round trips, recipients) a round counts."""

    name: str
    work: str
    units: int


def _echo(count: int, in_flight: int) -> str:
    return f"""
    call, close = await maker(reactor, bytes(64))
    for _ in range(rounds):
        await messaging._timed(call, {count}, {in_flight})
    await close()
"""


#: 64 B payloads, as the timed rows of ``bench/messaging.py`` and
#: ``bench/broadcast.py``.
WORKLOADS = (
    Workload("pipelined 64 B request", _echo(10_000, 10_000), 10_000),
    Workload("ping-pong 64 B round trip", _echo(5_000, 1), 5_000),
    *(
        Workload(
            f"broadcast to {peers} peers, per recipient",
            f"""
    hub, peers = await broadcast._star(reactor, {peers})
    for _ in range(rounds):
        await broadcast._broadcasts(hub, {2_000 // peers})
    await hub.stop()
    for peer in peers:
        await peer.stop()
""",
            2_000,
        )
        for peers in (10, 100)
    ),
)

_CHILD = """
import gc
gc.disable()  # the path's own instructions: no collection lands in one count only
from twisted.internet import defer, task
from bench import broadcast, messaging
system, rounds = sys.argv[2], int(sys.argv[3])
maker = getattr(messaging, "_" + system, None)
async def work(reactor):
{work}
task.react(lambda reactor: defer.ensureDeferred(work(reactor)))
"""

_COLLECTED = re.compile(r"Collected : (\d+)")


@functools.cache
def _fixed_addresses() -> tuple[str, ...]:
    """``setarch ARCH -R``, where it runs: without address-space
    randomisation two counts of one tree agree to 0.01% (objects hashed by
    address land in the same dict slots); with it, to about 1%."""
    command = ("setarch", platform.machine(), "-R")
    if shutil.which("setarch") is None:
        return ()
    try:
        works = subprocess.run([*command, "true"], capture_output=True, check=False)
    except OSError:
        return ()
    return command if works.returncode == 0 else ()


def child(tree: Path, work: str, system: str, rounds: int) -> list[str]:
    """The command that runs ``work`` for ``rounds`` on ``tree`` (the
    ``bench.messaging`` maker ``system``, for the echo workloads)."""
    script = FROM_TREE + _CHILD.format(work=work)
    return [sys.executable, "-c", script, str(tree), system, str(rounds)]


def count(tree: Path, work: str, system: str, rounds: int) -> int:
    """Instructions of one child process on ``tree`` (callgrind's total)."""
    done = subprocess.run(
        [
            *_fixed_addresses(),
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            *child(tree, work, system, rounds),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind: {done.stderr[-300:]}")
    return int(found.group(1))


def per_unit(tree: Path, work: str, system: str, units: int) -> float:
    """Instructions per unit: two rounds' worth, start-up subtracted."""
    one = count(tree, work, system, 1)
    three = count(tree, work, system, 3)
    return (three - one) / (2 * units)


def require_valgrind() -> None:
    """A one-line exit where valgrind is missing."""
    try:
        subprocess.run(["valgrind", "--version"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit("these counts need valgrind (apt install valgrind)") from None


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m bench.instructions TREE [TREE ...]")
    require_valgrind()
    trees = [Path(tree).resolve() for tree in argv]
    print(load_header(), flush=True)
    print(f"{'row':<40} {'system':<12} {'tree':<32} {'instructions':>13} {'ratio':>6}")
    for name, work, units in WORKLOADS:
        rows = [("blueprint", tree) for tree in trees]
        if "broadcast" not in name:
            rows += [("floor", HERE), ("bare", HERE)]
        reference = None
        for system, tree in rows:
            figure = per_unit(tree, work, system, units)
            reference = reference or figure
            label = tree.name if system == "blueprint" else f"{system} reference"
            print(
                f"{name:<40} {system:<12} {label:<32} {figure:>13,.0f}"
                f" {figure / reference:>6.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
