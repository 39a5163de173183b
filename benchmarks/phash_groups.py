"""Grouping a million perceptual hashes (``shoal.spread.group_hashes``): how long it takes.

    .venv/bin/python benchmarks/phash_groups.py [--hashes 1000000] [--distance 8]

The hashes mimic a collection where a few images spread: ``--spread`` originals (default
2 % of the hashes) each come with 1–20 copies whose hashes differ from the original's in up
to ``distance / 2`` bits (re-encodes, resizes, light crops), and the rest are unrelated
images (uniformly random hashes, the hardest case for a band index since their buckets are
as full as random keys make them). Printed: the layout of the index, the wall time, the
groups found, and a check that every original came out with all of its copies. Timings are
printed, never asserted; the issue's target is under a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.spread import group_hashes, plan


def make_hashes(n: int, spread: int, distance: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` hashes and, for each, the original it copies (-1 for an unrelated image)."""
    rng = np.random.default_rng(seed)
    originals = rng.integers(0, 2**64, size=spread, dtype=np.uint64)
    copies = rng.integers(1, 21, size=spread)
    source = np.repeat(np.arange(spread), copies)[: max(0, n - spread)]
    flipped = originals[source].copy()
    for _ in range(max(1, distance // 2)):  # flip up to distance/2 random bits
        bit = rng.integers(0, 64, size=source.size).astype(np.uint64)
        on = rng.random(source.size) < 0.8
        flipped[on] ^= np.uint64(1) << bit[on]
    unrelated = rng.integers(0, 2**64, size=n - spread - source.size, dtype=np.uint64)
    hashes = np.concatenate([originals, flipped, unrelated])
    origin = np.concatenate([np.arange(spread), source, np.full(unrelated.size, -1)])
    perm = rng.permutation(hashes.size)
    return hashes[perm], origin[perm]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hashes", type=int, default=1_000_000)
    ap.add_argument("--distance", type=int, default=8)
    ap.add_argument("--spread", type=int, default=None, help="originals with copies")
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    spread = args.spread if args.spread is not None else args.hashes // 50
    hashes, origin = make_hashes(args.hashes, spread, args.distance, args.seed)
    layout = plan(len(np.unique(hashes)), args.distance)
    print(f"{hashes.size:,} hashes, distance {args.distance}: {len(layout.bands)} bands "
          f"{layout.bands}, {layout.k} equal per table, {layout.tables} tables")
    t0 = time.perf_counter()
    labels = group_hashes(hashes, args.distance)
    seconds = time.perf_counter() - t0
    groups = np.unique(labels).size
    sizes = np.bincount(np.unique(labels, return_inverse=True)[1].reshape(-1))
    # Every copy must sit in its original's group.
    copies = origin >= 0
    label_of_original: dict[int, set[int]] = {}
    for pos in np.flatnonzero(copies):
        label_of_original.setdefault(int(origin[pos]), set()).add(int(labels[pos]))
    split = sum(len(s) > 1 for s in label_of_original.values())
    print(f"grouped in {seconds:.1f} s: {groups:,} groups, largest {sizes.max()}, "
          f"{(sizes > 1).sum():,} with more than one hash; originals split apart: {split}")


if __name__ == "__main__":
    main()
