"""A connection's read of pipelined requests in one or more source trees,
side by side: ``python -m bench.connection_read TREE [TREE ...]``.

Per tree, in its own process (each imports ``blueprint_net`` from its
tree): a verified sans-IO ``Connection`` takes one read of 1,000 requests
of 64 B, with no in-flight bound (each is decoded and handed out) and with
the default bound of 256 (the rest wait in the backlog: a flooder's read);
the time per frame, the median of seven rounds, each the best of 20 reads.
It compares commits (``git worktree add``) without sockets, so a change to
the read path is seen apart from the reactor and TLS around it.  The first
tree is the reference of the others.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .trees import run_in

REQUESTS = 1000
BOUND = 256
ROUNDS = 7
BEST_OF = 20

_CHILD = """
from blueprint_net._core import framing, wire
from blueprint_net._core.connection import Connection
from blueprint_net._core.identity import Identity
requests, bound, rounds, best_of = map(int, sys.argv[2:6])
alice, bob = Identity(bytes([1]) * 32), Identity(bytes([2]) * 32)
read = b"".join(
    framing.frame(wire.Request(i, "echo", b"x" * 64)) for i in range(1, requests + 1)
)

def verified(limit):
    a = Connection(alice, initiator=True, expected_peer=bob.peer_id)
    b = Connection(bob, initiator=False, max_in_flight=limit)
    a.initiate()
    b.initiate()
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    b.receive_data(a.data_to_send())
    b.accept()
    assert b.verified
    return b

def once(limit):
    b = verified(limit)
    began = time.perf_counter()
    b.receive_data(read)
    return time.perf_counter() - began

result = {}
for limit in (None, bound):
    runs = sorted(
        min(once(limit) for _ in range(best_of)) / requests * 1e6
        for _ in range(rounds)
    )
    result[str(limit)] = runs
print(json.dumps(result))
"""


def measure(tree: Path) -> dict[str, list[float]]:
    """One tree's rounds in us per frame, sorted, by bound ("None", "256")."""
    runs: dict[str, list[float]] = run_in(
        tree, _CHILD, REQUESTS, BOUND, ROUNDS, BEST_OF
    )
    return runs


def main(argv: list[str]) -> None:
    from .report import load_header

    if not argv:
        raise SystemExit("usage: python -m bench.connection_read TREE [TREE ...]")
    print(load_header(), flush=True)
    print(
        f"{'tree':<30} {'us/frame, no bound':>19} {'ratio':>6}"
        f" {f'us/frame, bound {BOUND}':>20} {'ratio':>6}"
    )
    reference: dict[str, float] = {}
    for tree in argv:
        runs = measure(Path(tree).resolve())
        cells = []
        for key in ("None", str(BOUND)):
            median = runs[key][len(runs[key]) // 2]
            reference.setdefault(key, median)
            cells.append(f"{median:>{19 if key == 'None' else 20}.3f}")
            cells.append(f"{median / reference[key]:>6.3f}")
        print(f"{tree:<30} " + " ".join(cells))
        time.sleep(0.1)


if __name__ == "__main__":
    main(sys.argv[1:])
