"""``python -m bench.network`` at a small size, as a real multi-process run:
20 TLS nodes over 4 processes from one bootstrap address, publications, and
SIGKILL churn; and ``--simulate 50``, the same table from simulated nodes.
They assert completion, the table's rows and full delivery (which the
protocol promises), never timings.  The simulation's event queue and latency
model are pinned with fixed seeds."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.python.failure import Failure

from bench import simulate
from bench.report import without_load_header
from bench.simulate import EventQueue, LatencyModel, Network

#: The simulation's header: what it modelled, its run, and its signatures.
SIMULATED = ("simulated: ", "simulated ", "signatures: ", "hops the first copy")


def table(stdout: str, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """The table's figures by row name, past the load average and ``skip``."""
    assert stdout.startswith("load average: ")
    lines = [
        line
        for line in without_load_header(stdout).splitlines()
        if not line.startswith(skip)
    ]
    header, *rows = lines
    assert header.split()[:2] == ["benchmark", "blueprint-net"]
    figures = {}
    for line in rows:
        name = line.split("  ")[0]
        figures[name] = float(line[len(name) :].split()[0])
    return figures


def bench_network(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench.network ARGS`` from the tree, which must succeed."""
    return subprocess.run(
        [sys.executable, "-m", "bench.network", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        cwd=Path(__file__).parent.parent,
    )


ROWS = (
    "N=20: seconds to target degree 4 and one component",
    "delivery to live subscribers, steady (%)",
    "latency p50 (ms)",
    "latency p99 (ms)",
    "mesh hops from origin per delivery, mean",
    "duplicates received per node per message",
    "origin upload per publish (bytes)",
    "origin upload per publish (frames)",
    "network upload per message (bytes)",
    "CPU per delivered message per node (us)",
    "the same, less the nodes' idle upkeep (us)",
    "churn: seconds to repair after SIGKILL of 5 nodes",
    "delivery to survivors before churn (%)",
    "delivery to survivors during repair (%)",
    "delivery to survivors after repair (%)",
)


@pytest.mark.timeout(200)
def test_a_small_network_converges_delivers_and_repairs() -> None:
    result = bench_network(
        *("--nodes", "20", "--processes", "4", "--target-peers", "4"),
        *("--messages", "20", "--limit", "60", "--full-mesh-max", "0"),
    )
    figures = table(result.stdout)
    assert tuple(figures) == ROWS, result.stdout
    for name in ROWS:
        if name.startswith("delivery") and "during" not in name:
            assert figures[name] == 100.0, result.stdout
    assert figures["delivery to survivors during repair (%)"] >= 99.0, result.stdout
    # One hop to N-1 peers costs more at the origin than gossip does.
    assert figures["origin upload per publish (frames)"] < 19, result.stdout


def test_a_simulated_network_prints_the_same_table_and_delivers() -> None:
    """``--simulate 50``: the real run's rows (sized for 50 nodes and 10 of
    them killed), every message delivered while no node is dying."""
    result = bench_network(
        *("--simulate", "50", "--target-peers", "4", "--messages", "20"),
        *("--warmup", "0", "--budget", "120"),
    )
    lines = without_load_header(result.stdout).splitlines()
    assert lines[0].startswith("simulated: 50 nodes in one process")
    assert "; completed" in lines[1], result.stdout
    assert lines[2].startswith("signatures: verified at each receipt")
    figures = table(result.stdout, SIMULATED)
    expected = tuple(
        name.replace("N=20", "N=50").replace("SIGKILL of 5", "SIGKILL of 10")
        for name in ROWS
        if "CPU" not in name and "upkeep" not in name  # not modelled
    )
    assert tuple(figures) == expected, result.stdout
    for name in expected:
        if name.startswith("delivery"):
            assert figures[name] == 100.0, result.stdout
    assert 0 < figures["duplicates received per node per message"] < 12


def test_idontwant_spares_copies_while_verdicts_wait_in_the_simulation() -> None:
    """With 16 KiB messages and validators that take 20 ms, each node's
    notice reaches its mesh before their copies would go out: fewer
    duplicates and bytes than with IDontWant off, every message delivered."""
    runs = {
        threshold: table(
            bench_network(
                *("--simulate", "30", "--target-peers", "4", "--messages", "10"),
                *("--warmup", "0", "--budget", "120", "--size", "16384"),
                *("--validate-ms", "20", "--idontwant", threshold),
            ).stdout,
            SIMULATED,
        )
        for threshold in ("off", "1024")
    }
    off, on = runs["off"], runs["1024"]
    assert on["delivery to live subscribers, steady (%)"] == 100.0
    duplicates = "duplicates received per node per message"
    assert on[duplicates] < 0.75 * off[duplicates], runs
    upload = "network upload per message (bytes)"
    assert on[upload] < 0.8 * off[upload], runs


def test_the_event_queue_runs_calls_in_time_order_and_cancels() -> None:
    """Calls run by time, ties in the order scheduled; a cancelled timer
    never runs; time stops at the horizon and moves only forward."""
    clock = EventQueue()
    ran: list[tuple[float, str]] = []

    def note(name: str) -> None:
        ran.append((clock.seconds(), name))

    clock.at(2.0, note, "b")
    clock.at(1.0, note, "a")
    clock.at(2.0, note, "c")  # same time as b: after it
    clock.callLater(1.5, note, "timer")
    cancelled = clock.callLater(1.2, note, "cancelled")
    cancelled.cancel()
    later = clock.callLater(5.0, note, "later")
    clock.run_until(3.0)
    assert ran == [(1.0, "a"), (1.5, "timer"), (2.0, "b"), (2.0, "c")]
    assert clock.seconds() == 3.0 and later.active() and not cancelled.active()
    clock.at(0.5, note, "past")  # in the past: runs now, never back in time
    clock.run_until(3.0)
    assert ran[-1] == (3.0, "past")
    clock.run_until(10.0)
    assert ran[-1] == (5.0, "later") and not later.active()


def test_the_latency_model_draws_the_same_delays_from_a_seed() -> None:
    """Link delays are log-normal around the median, repeatable by seed."""
    model = LatencyModel(median=0.010, sigma=0.5)
    first = [model.link_delay(random.Random(7)) for _ in range(3)]
    assert first == [model.link_delay(random.Random(7))] * 3
    delays = sorted(model.link_delay(rng) for rng in [random.Random(1)] * 2001)
    assert 0.009 < delays[1000] < 0.011  # the median
    assert delays[0] > 0 and 0.015 < delays[1900] < 0.030  # sigma 0.5's tail


def test_a_node_uploads_one_frame_after_another_at_its_bandwidth() -> None:
    """Two nodes: a publication arrives after its upload time plus the
    link's delay; a second one sent at once waits for the first."""
    from blueprint_net._core.gossip_settings import GossipSettings

    model = LatencyModel(median=0.010, sigma=0.5, bandwidth=1e6)
    net = Network(
        2,
        seed=3,
        target=1,
        latency=model,
        gossip=GossipSettings(),
        topic="t",
        host=lambda i: f"127.0.1.{i + 1}",
    )
    net.start(spread=0)
    net.clock.run_until(3.0)
    origin, other = net.nodes
    link = origin.links[other.peer_id]
    assert link is other.links[origin.peer_id]
    assert link.delay == net.delay(other, origin)  # one delay, both ways
    queued = max(0.0, origin.busy_until - net.clock.seconds())  # control frames
    first, second = (net.publish(origin, 50_000) for _ in range(2))
    net.clock.run_until(4.0)
    upload = net._sizes[first] / 1e6  # the frame, in seconds at 1 MB/s
    arrived = net.deliveries[1, first][0], net.deliveries[1, second][0]
    assert arrived[0] == pytest.approx(queued + upload + link.delay)
    assert arrived[1] == pytest.approx(queued + 2 * upload + link.delay)


def _network(count: int, **options: Any) -> Network:
    from blueprint_net._core.gossip_settings import GossipSettings

    return Network(
        count,
        seed=3,
        target=1,
        latency=LatencyModel(median=0.010, sigma=0.5),
        gossip=GossipSettings(),
        topic="t",
        host=lambda i: f"127.0.1.{i + 1}",
        **options,
    )


def test_each_node_knows_two_of_k_bootstrap_addresses() -> None:
    """The first K nodes are the bootstraps (they know node 0, node 0 none);
    each other node knows two distinct ones, and every one is known."""
    net = _network(40, bootstraps=3)
    given = [node.manager.bootstrap for node in net.nodes]  # type: ignore[union-attr]
    at = [f"p2ptls:127.0.1.{i + 1}:7000" for i in range(3)]
    assert given[:3] == [[], [at[0]], [at[0]]]
    assert all(len(set(known)) == 2 and set(known) <= set(at) for known in given[3:])
    assert {address for known in given[3:] for address in known} == set(at)
    assert [node.manager.bootstrap for node in _network(3).nodes] == [  # type: ignore[union-attr]
        [],
        [at[0]],
        [at[0]],
    ]


def test_a_dial_past_the_connection_limit_is_refused() -> None:
    """A node with max_connections open or opening refuses the next dial
    after a round trip, as a node's limits do; a free one takes it."""
    assert simulate.MAX_CONNECTIONS == 1024  # a node's, by default
    net = _network(3, max_connections=1)
    a, b, c = net.nodes
    outcomes: list[Any] = []
    for dialer in (a, c):  # b is the first's, then full (one opening)
        dialing = net.dial(dialer, f"p2ptls:{b.host}:7000", b.peer_id)
        dialing.addBoth(outcomes.append)
    assert b.open == 1 and outcomes == []
    net.clock.run_until(1.0)
    [refused] = [o for o in outcomes if isinstance(o, Failure)]
    [peer] = [o for o in outcomes if not isinstance(o, Failure)]
    assert peer.peer_id == b.peer_id and b.open == 1 and len(b.links) == 1
    assert "connection limit" in str(refused.value)
