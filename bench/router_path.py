"""The gossip router's hot path in one or more source trees, side by side:
``python -m bench.router_path TREE [TREE ...]``.

Per tree, in its own process (each imports ``blueprint_net`` from its
tree): a router with 8 mesh peers takes 3,000 messages of 512 B, each a
first copy (signature check, the validator's accept, the forward) and five
duplicates; the CPU time per message, median of five rounds.  It compares
commits (``git worktree add``) without sockets, so a change to the router
is seen apart from the reactor and TLS around it.  The first tree is the
reference of the others.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .trees import run_in

MESSAGES = 3000
DUPLICATES = 5
ROUNDS = 5

_CHILD = """
import random
from blueprint_net._core.identity import Identity
from blueprint_net._core.gossip_settings import GossipSettings
from blueprint_net._core.gossip_wire import Publish, Subscriptions, Graft, signed_bytes
from blueprint_net._core.gossip_outputs import Verdict
from blueprint_net._core.pubsub import Router
messages, duplicates, rounds = map(int, sys.argv[2:5])
origins = [Identity(bytes([100 + i]) * 32) for i in range(10)]
lots = 10**6
settings = GossipSettings(
    origin_rate=lots, origin_burst=lots, peer_rate=lots, peer_burst=lots,
    new_origin_rate=lots, new_origin_burst=lots, forward_rate=lots,
    forward_burst=lots,
)
runs = []
for r in range(rounds):
    now = 1000.0 + 200 * r
    router = Router(Identity(bytes([1]) * 32), settings, now=now, rng=random.Random(1))
    router.subscribe("t", now)
    peers = [Identity(bytes([10 + i]) * 32).peer_id for i in range(8)]
    for peer in peers:
        router.peer_connected(peer, outbound=True)
        router.receive(peer, Subscriptions(((True, "t"),)), now)
        router.receive(peer, Graft("t"), now)
    batch = []
    for i in range(messages):
        origin, seqno, data = origins[i % 10], int(now * 1e9) + i, b"x" * 512
        signed = signed_bytes("t", origin.peer_id, seqno, data)
        batch.append(Publish("t", origin.peer_id, seqno, data, origin.sign(signed)))
    began = time.process_time()
    for message in batch:
        validate = router.receive(peers[0], message, now)[-1]
        router.validated(validate.message_id, Verdict.ACCEPT, now)
        for peer in peers[1 : 1 + duplicates]:
            router.receive(peer, message, now)
    runs.append((time.process_time() - began) / messages * 1e6)
print(json.dumps(sorted(runs)))
"""


def measure(tree: Path) -> list[float]:
    """One tree's rounds, in us per message, sorted."""
    runs: list[float] = run_in(tree, _CHILD, MESSAGES, DUPLICATES, ROUNDS)
    return runs


def main(argv: list[str]) -> None:
    from .report import load_header

    if not argv:
        raise SystemExit("usage: python -m bench.router_path TREE [TREE ...]")
    print(load_header(), flush=True)
    print(f"{'tree':<40} {'us/message':>11} {'ratio':>6}  rounds")
    reference = None
    for tree in argv:
        runs = measure(Path(tree).resolve())
        median = runs[len(runs) // 2]
        reference = reference or median
        rounds = ", ".join(f"{r:.1f}" for r in runs)
        print(f"{tree:<40} {median:>11.1f} {median / reference:>6.3f}  {rounds}")
        time.sleep(0.1)


if __name__ == "__main__":
    main(sys.argv[1:])
