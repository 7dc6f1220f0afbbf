"""examples/feldman.py: the verifiable secret sharing under the DKG example."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))

import feldman
from nacl.bindings import crypto_core_ed25519_scalar_add


def test_every_share_checks_against_the_commitments() -> None:
    dealing = feldman.Dealing(threshold=3)
    commitments = dealing.commitments()
    assert len(commitments) == 3
    for party in range(1, 6):
        assert feldman.share_is_valid(commitments, party, dealing.share(party))


def test_a_share_for_another_party_or_altered_fails() -> None:
    dealing = feldman.Dealing(threshold=3)
    commitments = dealing.commitments()
    share = dealing.share(2)
    assert not feldman.share_is_valid(commitments, 3, share)
    bumped = crypto_core_ed25519_scalar_add(share, feldman.scalar(1))
    assert not feldman.share_is_valid(commitments, 2, bumped)
    assert not feldman.share_is_valid(commitments, 2, share[:31])
    assert not feldman.share_is_valid(commitments, 2, bytes(32))
    # The same value unreduced (plus the group order) is refused: one encoding.
    unreduced = (int.from_bytes(share, "little") + feldman.ORDER).to_bytes(32, "little")
    if int.from_bytes(unreduced, "little") < 2**256:
        assert not feldman.share_is_valid(commitments, 2, unreduced)


def test_another_dealers_commitments_do_not_check() -> None:
    one, other = feldman.Dealing(threshold=2), feldman.Dealing(threshold=2)
    assert not feldman.share_is_valid(other.commitments(), 1, one.share(1))


def test_any_threshold_of_public_shares_gives_the_secret_times_g() -> None:
    dealing = feldman.Dealing(threshold=3)
    secret_point = dealing.commitments()[0]
    public = {j: feldman.times_base(dealing.share(j)) for j in range(1, 6)}
    for chosen in ([1, 2, 3], [2, 4, 5], [1, 3, 5]):
        assert feldman.combine_public({j: public[j] for j in chosen}) == secret_point
    # Two shares do not determine a degree-2 polynomial.
    assert feldman.combine_public({j: public[j] for j in [1, 2]}) != secret_point


def test_shares_of_several_dealers_add_up_to_the_sum_of_secrets() -> None:
    dealings = [feldman.Dealing(threshold=2) for _ in range(3)]
    group_key = feldman.add_points([d.commitments()[0] for d in dealings])
    public = {
        j: feldman.times_base(feldman.add_scalars([d.share(j) for d in dealings]))
        for j in (1, 2)
    }
    assert feldman.combine_public(public) == group_key


@pytest.mark.parametrize(
    "data",
    [
        bytes([1]) + bytes(31),  # the neutral element (small order)
        bytes(32),  # small order
        bytes.fromhex(  # a point of order 8
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
        ),
        b"\xff" * 32,  # not canonical
        bytes(31),  # too short
    ],
)
def test_points_from_peers_must_be_in_the_prime_order_group(data: bytes) -> None:
    with pytest.raises(feldman.InvalidPoint):
        feldman.point(data)


def test_a_commitment_is_a_valid_point() -> None:
    [commitment] = feldman.Dealing(threshold=1).commitments()
    assert feldman.point(commitment) == commitment


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="threshold"):
        feldman.Dealing(threshold=0)
    with pytest.raises(ValueError, match="from 1"):
        feldman.Dealing(threshold=2).share(0)
