"""GossipSettings: which settings a node refuses (each limit at its boundary),
the largest gossip frame it takes (docs/protocol.md 9.6) and the price of
each gossip fault."""

from __future__ import annotations

import pytest

from blueprint_net._core.errors import ConfigurationError, ErrorCode
from blueprint_net._core.gossip_outputs import Fault
from blueprint_net._core.gossip_settings import DEFAULTS, GossipSettings
from blueprint_net._policy.gossip_faults import fault_code

# Settings at the edge of each rule, still usable: a check that moves its
# boundary by one refuses them.
USABLE = [
    # 0 < mesh_low <= mesh_degree <= mesh_high (all equal, the least).
    {"mesh_low": 1, "mesh_degree": 1, "mesh_high": 1, "mesh_outbound": 0},
    # mesh_outbound <= mesh_degree / 2, exactly.
    {"mesh_low": 3, "mesh_degree": 4, "mesh_outbound": 2},
    # ... and under a threefold reading of it.
    {"mesh_low": 5, "mesh_degree": 5, "mesh_outbound": 2},
    # mesh_outbound = mesh_low - 1.
    {"mesh_low": 3, "mesh_degree": 6, "mesh_outbound": 2},
    # 0 < history_gossip <= history_length, the least.
    {"history_gossip": 1, "history_length": 1},
    # seen_ttl = 2 x history_length x heartbeat_interval, exactly.
    {"history_length": 40, "seen_ttl": 80.0},
    # seen_ttl = max_message_age + max_clock_skew + heartbeat_interval.
    {"seen_ttl": 71.0},
    {"seen_ttl": 15.0, "max_message_age": 4.0, "max_clock_skew": 10.0},
    # A clock skew or message age of zero.
    {"max_clock_skew": 0.0},
    {"max_message_age": 0.0},
    # Size caps from 0 to 2**32 - 1.
    {"max_message_size": 0},
    {"max_message_size": 2**32 - 1},
    {"topic_max_sizes": {"empty": 0, "huge": 2**32 - 1}},
    # Tiny but positive rates and heartbeat.
    {"origin_rate": 0.001, "peer_rate": 0.001, "new_origin_rate": 0.001},
    {"heartbeat_interval": 0.01},
    # max_control_per_peer = 2 x max_topics_per_peer, exactly.
    {"max_control_per_peer": 512},
    {"max_topics_per_peer": 1, "max_control_per_peer": 2},
    # records_refresh = heartbeat_interval, exactly.
    {"records_refresh": 1.0},
    # IDontWant: for every size, for none, none looked at, kept one beat.
    {"idontwant_threshold": 0},
    {"idontwant_threshold": None},
    {"max_idontwant": 0, "idontwant_heartbeats": 1},
]

# Settings just past a rule's boundary.
UNUSABLE = [
    {"mesh_low": 0, "mesh_outbound": -1},
    {"mesh_low": 7},
    {"mesh_degree": 13},
    {"mesh_degree": 4, "mesh_low": 4, "mesh_high": 3},
    # mesh_outbound = mesh_low (half the degree is fine).
    {"mesh_low": 2, "mesh_degree": 6, "mesh_outbound": 2},
    # mesh_outbound < mesh_low but more than half the degree.
    {"mesh_low": 5, "mesh_degree": 5, "mesh_outbound": 3},
    {"history_gossip": 0},
    {"history_gossip": 6},
    # seen_ttl below 2 x the cache's lifetime (but above age + skew + beat).
    {"history_length": 40, "seen_ttl": 79.0},
    # A negative skew or age, however long seen_ttl is.
    {"max_clock_skew": -1.0},
    {"max_message_age": -1.0},
    # seen_ttl half a second short of age + skew + beat.
    {"seen_ttl": 70.5},
    {"seen_ttl": 14.5, "max_message_age": 4.0, "max_clock_skew": 10.0},
    {"max_message_size": -1},
    {"max_message_size": 2**32},
    {"topic_max_sizes": {"t": -1}},
    {"topic_max_sizes": {"t": 2**32}},
    {"origin_rate": 0.0},
    {"peer_rate": 0.0},
    {"new_origin_rate": 0.0},
    {"new_origin_rate": -1.0},
    {"heartbeat_interval": 0.0},
    {"max_control_per_peer": 511},
    {"max_topics_per_peer": 1, "max_control_per_peer": 1},
    {"records_refresh": 0.5},
    {"records_refresh": float("nan")},  # else every peer would always be due
    {"idontwant_threshold": -1},
    {"max_idontwant": -1},
    {"idontwant_heartbeats": 0},
]


@pytest.mark.parametrize("change", USABLE)
def test_settings_at_each_limit_are_usable(change: dict[str, object]) -> None:
    settings = GossipSettings(**change)  # type: ignore[arg-type]
    assert settings.problem() is None


@pytest.mark.parametrize("change", UNUSABLE)
def test_settings_past_each_limit_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match=r"^gossip settings: [^\n]+$"):
        GossipSettings(**change)  # type: ignore[arg-type]


def test_the_default_gossip_frame_limit_is_a_full_records_message() -> None:
    # 255 x (8 x 256 + 128): more than 64 KiB + 1 KiB and 32 x 5000 + 512.
    assert DEFAULTS.max_frame() == 554_880


def test_the_gossip_frame_limit_follows_the_largest_size_cap() -> None:
    assert GossipSettings(max_message_size=1_000_000).max_frame() == 1_001_024
    bigger_topic = GossipSettings(topic_max_sizes={"a": 10, "big": 2_000_000})
    assert bigger_topic.max_frame() == 2_001_024
    # A topic's smaller cap does not lower the frame limit.
    smaller_topic = GossipSettings(
        max_message_size=1_000_000, topic_max_sizes={"small": 10}
    )
    assert smaller_topic.max_frame() == 1_001_024


def test_the_gossip_frame_limit_follows_the_longest_ihave() -> None:
    assert GossipSettings(max_ihave_length=20_000).max_frame() == 640_512


def test_a_topics_size_cap_overrides_the_default_for_that_topic_only() -> None:
    settings = GossipSettings(max_message_size=100, topic_max_sizes={"big": 5000})
    assert settings.max_size("big") == 5000
    assert settings.max_size("other") == 100


def test_each_gossip_fault_is_priced_as_the_fault_it_resembles() -> None:
    assert fault_code(Fault.INVALID_SIGNATURE) is ErrorCode.BAD_SIGNATURE
    assert fault_code(Fault.INVALID_RECORD) is ErrorCode.BAD_SIGNATURE
    assert fault_code(Fault.REJECTED) is ErrorCode.UNEXPECTED_MESSAGE
    assert fault_code(Fault.GRAFT_IN_BACKOFF) is ErrorCode.UNEXPECTED_MESSAGE
    assert fault_code(Fault.CONTROL_FLOOD) is ErrorCode.UNEXPECTED_MESSAGE
