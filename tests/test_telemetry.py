"""Every counter is declared once (``_core/telemetry.py``): each key the
package counts is declared, each declaration has its own family on
``/metrics``, and ``docs/operations.md`` lists them all."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from blueprint_net import Identity
from blueprint_net._adapters.tls import TLS_PORT_ANSWERS
from blueprint_net._core import telemetry
from blueprint_net._core.gossip_outputs import Fault, Verdict
from blueprint_net._core.telemetry import Index, Label, Metric
from blueprint_net._core.untrusted import PLAIN_PORT_ANSWERS
from blueprint_net._ops import metrics
from blueprint_net._ops.status import snapshot
from blueprint_net._policy.bans import Origin
from blueprint_net._policy.limits import DECLINED
from blueprint_net.testing import MemoryNetwork

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "blueprint_net"
DOC = ROOT / "docs" / "operations.md"
#: The modules that count into the gossip router's counters.
ROUTER_MODULES = {
    "_core/pubsub.py",
    "_core/gossip_mesh.py",
    "_core/peer_exchange.py",
    "_adapters/gossip.py",
}
PROTOCOLS = ["echo", "my.proto"]


# -- every key the package counts is declared -------------------------------


def _metric(node: ast.expr) -> Any:
    """The declaration a ``NAME`` or ``telemetry.NAME`` expression names."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        node = ast.Name(node.attr) if node.value.id == "telemetry" else node
    if isinstance(node, ast.Name):
        return getattr(telemetry, node.id, None)
    return None


#: What the counters are called where they are counted.
COUNTERS = {"counters", "count"}


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def undeclared(source: str, index: Index) -> list[str]:
    """Each ``counters[...] += n`` in ``source`` whose key is not built from
    a metric of ``index`` (``M.key``, or ``M.key_for(...)`` with one value per
    label, a literal value being one the label declares)."""
    wrong = []
    for node in ast.walk(ast.parse(source)):
        if not (
            isinstance(node, ast.AugAssign)
            and isinstance(node.target, ast.Subscript)
            and _name(node.target.value) in COUNTERS
        ):
            continue
        key = node.target.slice
        text = ast.unparse(node.target)
        if isinstance(key, ast.Attribute) and key.attr == "key":
            metric = _metric(key.value)
            if metric not in index.metrics or metric.labels:
                wrong.append(text)
        elif (
            isinstance(key, ast.Call)
            and isinstance(key.func, ast.Attribute)
            and key.func.attr == "key_for"
        ):
            metric = _metric(key.func.value)
            if metric not in index.metrics or len(key.args) != len(metric.labels):
                wrong.append(text)
                continue
            for arg, label in zip(key.args, metric.labels):
                if isinstance(arg, ast.Constant) and arg.value not in label.values:
                    wrong.append(text)
        else:
            wrong.append(text)
    return wrong


def _sources() -> dict[str, str]:
    return {
        str(path.relative_to(PACKAGE)): path.read_text()
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_every_counted_key_is_built_from_a_declaration() -> None:
    wrong, checked = [], 0
    for name, source in _sources().items():
        index = telemetry.ROUTER if name in ROUTER_MODULES else telemetry.NODE
        wrong += [f"{name}: {text}" for text in undeclared(source, index)]
        checked += len(re.findall(r"\b(?:counters|count)\[", source))
    assert not wrong
    assert checked > 40  # the scan sees the emitters


@pytest.mark.parametrize(
    "line",
    [
        'self.counters["handshakes.ok"] += 1',
        'self.counters[f"refused.{reason}"] += 1',
        "self.counters[key] += 1",
        "self.counters[HANDSHAKE_FAILURES.key] += 1",  # the stem of a labelled one
        "self.counters[HANDSHAKES.key_for('x')] += 1",  # no label to fill
        "self.counters[REQUESTS_REFUSED.key_for(name)] += 1",  # one of two labels
        "self.counters[CONNECTIONS_REFUSED.key_for('bored')] += 1",
        "count[PUBLISH_STALE.key] += 1",  # a router counter in the node's
        "self.counters[NOT_A_METRIC.key] += 1",
    ],
)
def test_the_scan_refuses_an_undeclared_key(line: str) -> None:
    assert len(undeclared(line, telemetry.NODE)) == 1


def test_the_scan_accepts_declared_keys() -> None:
    lines = [
        "self.counters[HANDSHAKES.key] += 1",
        "self.counters[telemetry.MISBEHAVIOURS.key] += 1",
        "self.counters[CONNECTIONS_REFUSED.key_for('peer')] += 1",
        "self.counters[REQUESTS_REFUSED.key_for(name, code.name)] += 1",
    ]
    assert undeclared("\n".join(lines), telemetry.NODE) == []


def test_literal_refusal_reasons_and_buffers_are_declared() -> None:
    """A reason or buffer named at a call site is a declared label value."""
    sources = _sources()
    reasons = re.findall(
        r'reason = "(\w+)"|\.refused\("(\w+)"\)', sources["_policy/limits.py"]
    )
    assert len(reasons) >= 5
    assert {a or b for a, b in reasons} <= set(telemetry.REFUSAL_REASONS)
    assert DECLINED in telemetry.REFUSAL_REASONS
    buffers = {
        what
        for source in sources.values()
        for what in re.findall(r'memory\.refuse\("(\w+)"\)', source)
    }
    assert buffers == set(telemetry.MEMORY_BUFFERS)


def test_declared_values_are_the_enums_values() -> None:
    assert tuple(o.value for o in Origin) == telemetry.BAN_ORIGINS
    assert tuple(f.value for f in Fault) == telemetry.GOSSIP_FAULTS
    assert tuple(v.value for v in Verdict) == telemetry.VERDICTS
    kinds = set(PLAIN_PORT_ANSWERS) | set(TLS_PORT_ANSWERS)
    assert set(telemetry.WRONG_PROTOCOL_KINDS) == kinds


def test_the_keys_a_network_counts_are_declared(net: MemoryNetwork) -> None:
    a = net.add_node(Identity.generate())
    b = net.add_node(Identity.generate())
    net.connect(a, b)
    a.subscribe("t", lambda message: None)
    b.subscribe("t", lambda message: None)
    net.advance(1.0)
    a.publish("t", b"hello")
    net.pump()
    failures: list[Any] = []
    a.request(b.peer_id, "nobody-serves-this", b"").addErrback(failures.append)
    net.pump()
    assert failures  # refused: no handler
    for node in (a, b):
        assert node.counters and all(telemetry.NODE.find(k) for k in node.counters)
        router = snapshot(node, list)["gossip"]["counters"]
        assert all(telemetry.ROUTER.find(key) for key in router)
    assert b.counters[telemetry.REQUESTS_REFUSED.key_for("unknown", "UNKNOWN_PROTOCOL")]


# -- each declaration has its family ----------------------------------------


def _every_key(index: Index) -> dict[str, tuple[Metric, tuple[str, ...]]]:
    return {
        metric.key_for(*values) if values else metric.key: (metric, values)
        for metric in index
        for values in metric.known(PROTOCOLS)
    }


@pytest.mark.parametrize("index", [telemetry.NODE, telemetry.ROUTER])
def test_every_declared_key_is_found_again(index: Index) -> None:
    keys = _every_key(index)
    assert len(keys) > len(index.metrics)
    for key, (metric, values) in keys.items():
        assert index.find(key) == (metric, values), key


def test_no_declared_counter_lands_in_the_other_family() -> None:
    keys = _every_key(telemetry.NODE)
    counters = {key: n for n, key in enumerate(keys, 1)}
    families = {f.name: f for f in metrics.counter_families(counters, PROTOCOLS)}
    assert metrics.UNDECLARED not in families
    for key, value in counters.items():
        metric, values = keys[key]
        labels = tuple(zip([label.name for label in metric.labels], values))
        assert families[metric.name].samples[labels] == value, key


def test_each_node_counter_has_a_family_of_its_own() -> None:
    names = [metric.name for metric in telemetry.NODE]
    assert len(set(names)) == len(names)
    assert len({metric.key for metric in telemetry.NODE}) == len(names)
    for metric in telemetry.NODE:
        assert re.fullmatch(r"blueprint_[a-z_]+", metric.name)
        assert not metric.name.endswith("_total") and metric.help.endswith(".")
    families = metrics.counter_families({}, [])
    assert [f.name for f in families] == names


def test_the_router_family_shows_every_declared_event_at_zero() -> None:
    family = metrics.router_events({})
    events = {labels[0][1] for labels in family.samples}
    assert events == set(_every_key(telemetry.ROUTER))
    assert set(family.samples.values()) == {0.0}
    counted = metrics.router_events({"publish.stale": 3})
    assert counted.samples[(("event", "publish.stale"),)] == 3
    assert len(counted.samples) == len(family.samples)


def test_a_key_nobody_declared_is_still_shown() -> None:
    families = metrics.counter_families({"some.future.counter": 7}, [])
    [other] = [f for f in families if f.name == metrics.UNDECLARED]
    assert other.samples == {(("name", "some.future.counter"),): 7}


@pytest.mark.parametrize(
    "key",
    ["requests.refused.echo", "refused.", "handshakes.failed", "misbehaviour.x", ""],
)
def test_a_malformed_key_is_not_taken_for_a_declared_one(key: str) -> None:
    assert telemetry.NODE.find(key) is None


def test_key_for_builds_the_dotted_key() -> None:
    assert telemetry.HANDSHAKE_FAILURES.key_for("BANNED") == "handshakes.failed.BANNED"
    assert (
        telemetry.REQUESTS_REFUSED.key_for("my.proto", "RATE_LIMITED")
        == "requests.refused.my.proto.RATE_LIMITED"
    )
    metric = Metric("a.b", "blueprint_ab", "A.", (Label("x", ("1", "2")),))
    assert metric.known() == [("1",), ("2",)]


# -- docs/operations.md lists them ------------------------------------------


def _labels(metric: Metric) -> str:
    parts = []
    for label in metric.labels:
        if label.doc:
            parts.append(f"`{label.name}` ({label.doc})")
        else:
            values = ", ".join(f"`{value}`" for value in label.values)
            parts.append(f"`{label.name}`: {values}")
    return ", ".join(parts)


def doc_rows() -> list[str]:
    """The table rows of the counter families and the router's events, as
    ``docs/operations.md`` has them (paste these when one is added)."""
    rows = [
        f"| `{metric.name}_total` | counter: {metric.help} | {_labels(metric)} |"
        for metric in telemetry.NODE
    ]
    for metric in telemetry.ROUTER:
        key = ".".join([metric.key, *(f"<{label.name}>" for label in metric.labels)])
        help = metric.help
        if metric.labels:
            help = f"{help.removesuffix('.')} ({_labels(metric)})."
        rows.append(f"| `{key}` | {help} |")
    return [row.replace("|  |", "| |") for row in rows]


def test_the_docs_list_every_counter_as_declared() -> None:
    lines = DOC.read_text().splitlines()
    missing = [row for row in doc_rows() if row not in lines]
    assert not missing, "docs/operations.md lacks (or words differently):\n" + (
        "\n".join(missing)
    )


def _full_status() -> dict[str, Any]:
    return {
        "version": "0",
        "started": 0.0,
        "peers": [],
        "bans": 0,
        "bans_unsaved": 0,
        "allow_plaintext": False,
        "protocols": PROTOCOLS,
        "counters": Counter(),
        "gossip": {
            "topics": {},
            "known_peers": 0,
            "connected_peers": 0,
            "counters": {},
        },
    }


def test_the_docs_table_has_every_family_and_no_other() -> None:
    suffix = {"counter": "_total", "info": "_info"}
    on_page = {
        family.name + suffix.get(family.kind, "")
        for family in metrics.families(_full_status())
    }
    in_doc = set(re.findall(r"^\| `(blueprint_\w+)`", DOC.read_text(), re.M))
    assert on_page == in_doc
