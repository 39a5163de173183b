"""``shoal.spread.group_hashes`` gives exactly the single-linkage groups of an all-pairs search."""

from __future__ import annotations

import random

import pytest

from shoal.spread import MAX_DISTANCE, group_hashes, groups_of, plan


def brute_force(hashes: list[int], distance: int) -> list[int]:
    parent = list(range(len(hashes)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, a in enumerate(hashes):
        for j in range(i + 1, len(hashes)):
            if (a ^ hashes[j]).bit_count() <= distance:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(len(hashes))]


def same_partition(a: list[int], b: list[int]) -> bool:
    return len(set(zip(a, b, strict=True))) == len(set(a)) == len(set(b))


@pytest.mark.parametrize("seed", range(40))
def test_groups_equal_all_pairs(seed: int) -> None:
    rng = random.Random(seed)
    distance = rng.randint(0, 14)
    originals = [rng.getrandbits(64) for _ in range(rng.randint(1, 12))]
    hashes = []
    for _ in range(rng.randint(1, 150)):
        h = rng.choice(originals)
        for _ in range(rng.randint(0, 12)):  # some copies near, some past the distance
            h ^= 1 << rng.randrange(64)
        hashes.append(h)
    labels = group_hashes(hashes, distance).tolist()
    assert same_partition(labels, brute_force(hashes, distance))
    # A label is the position of the group's first member.
    assert all(labels[labels[i]] == labels[i] and labels[i] <= i for i in range(len(hashes)))


def test_chains_link_and_layouts_cover_every_pair() -> None:
    # 0 -> 8 bits -> 16 bits: the ends are 16 apart, but linked through the middle.
    a, b, c = 0, 0xFF, 0xFFFF
    assert groups_of([a, c, b], 8) == [[0, 1, 2]]
    assert groups_of([a, c], 8) == [[0], [1]]
    # Larger inputs pick a layout with more bands equal per table (longer keys).
    assert plan(10, 8).k == 1 and plan(1_000_000, 8).k == 3
    with pytest.raises(ValueError):
        group_hashes([1, 2], MAX_DISTANCE + 1)
