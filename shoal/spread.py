"""Which images are copies of one another: grouping 64-bit perceptual hashes by Hamming distance.

Two images belong to one group when a chain of hashes links them, each step at most
``distance`` bits apart (single linkage: a re-encoded copy of a resized copy joins the
original's group). Comparing every pair of a million hashes is 5·10¹¹ comparisons, so the
candidate pairs come from a *multi-index* instead, built on the pigeonhole principle:

* Cut the 64 bits into ``m = distance + k`` bands. Two hashes at most ``distance`` bits apart
  differ in at most ``distance`` bands, so at least ``k`` bands are identical.
* For every choice of ``k`` bands out of ``m`` (``C(m, k)`` tables), hashes whose chosen bands
  are all equal land in one bucket. Every pair within the distance shares a bucket in at
  least one table; only pairs that share a bucket are compared.

``k = 1`` is the textbook "distance + 1 bands" index; its keys are only ``64 / (distance + 1)``
bits (7 bits for distance 8), so with a million hashes each bucket holds ~8,000 of them and
the candidate pairs are 7 % of all pairs. A larger ``k`` lengthens the keys (17–18 bits for
``k = 3``) at the price of more tables; :func:`plan` picks the ``k`` that minimises a simple
cost model for the number of hashes at hand.

Buckets are found by sorting each table's keys (a two-pass radix sort of 16-bit digits, linear
time); the pairs inside each bucket are compared with vectorised popcounts; components are
kept in a vectorised union-find (min-label hooking with pointer jumping). Pure numpy, no I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BITS = 64
MAX_DISTANCE = 24  # beyond this a 64-bit perceptual hash no longer says "the same picture"

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


def parse_hash(text: str) -> int:
    """A hash as stored in the media rows (16 hex digits) as an int; ValueError if it is not."""
    value = int(text, 16)
    if not 0 <= value < 1 << BITS or not text:
        raise ValueError(f"not a 64-bit hex hash: {text!r}")
    return value


def format_hash(value: int) -> str:
    return f"{value:016x}"


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class Plan:
    """How the multi-index is laid out: ``bands`` widths, ``k`` of them equal per table."""

    distance: int
    k: int
    bands: tuple[int, ...]

    @property
    def tables(self) -> int:
        return math.comb(len(self.bands), self.k)


def _bands(m: int) -> tuple[int, ...]:
    return tuple(BITS // m + (1 if i < BITS % m else 0) for i in range(m))


def plan(n: int, distance: int) -> Plan:
    """The layout for ``n`` distinct hashes: the ``k`` with the least estimated work.

    Work per table is one pass over the hashes (sort, runs) plus the candidate pairs, about
    ``n² / 2^(key bits)`` when the hashes are spread out; the estimate only ranks layouts.
    """
    if not 0 <= distance <= MAX_DISTANCE:
        raise ValueError(f"distance must be between 0 and {MAX_DISTANCE}, not {distance}")
    best: tuple[float, int] | None = None
    for k in range(1, 7):
        m = distance + k
        if m > BITS:
            break
        key_bits = BITS * k / m
        cost = math.comb(m, k) * (n + 0.25 * n * n / 2.0**key_bits)
        if best is None or cost < best[0]:
            best = (cost, k)
    assert best is not None
    k = best[1]
    return Plan(distance, k, _bands(distance + k))


def _find(parent: I64) -> None:
    """Point every node straight at its root (pointer jumping until nothing moves)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


def _union(parent: I64, a: I64, b: I64) -> None:
    """Merge the components of each pair (a[i], b[i]); roots are the smallest members."""
    while a.size:
        _find(parent)
        ra, rb = parent[a], parent[b]
        apart = ra != rb
        if not apart.any():
            return
        a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))


def _bucket_order(key: U64, key_bits: int) -> I64:
    """A permutation that makes equal keys adjacent: LSD radix sort on 16-bit digits."""
    order: I64 = np.arange(key.size, dtype=np.int64)
    for shift in range(0, key_bits, 16):
        digit = ((key[order] >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
    return order


def _link_table(unique: U64, key: U64, key_bits: int, distance: int, parent: I64) -> int:
    """Compare the hashes sharing a bucket of one table; union those within the distance.

    Returns how many candidate pairs were compared (for the benchmark's curiosity).
    """
    n = unique.size
    order = _bucket_order(key, key_bits)
    sorted_key = key[order]
    same = sorted_key[1:] == sorted_key[:-1]
    in_bucket = np.zeros(n, dtype=bool)
    in_bucket[1:] |= same
    in_bucket[:-1] |= same
    members = np.flatnonzero(in_bucket)
    if members.size == 0:
        return 0
    idx = order[members]  # hash indices, bucket by bucket
    keys = sorted_key[members]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    sizes = np.diff(np.append(starts, members.size))
    # Buckets whose members are already one component cannot link anything new.
    _find(parent)
    roots = parent[idx]
    mixed = np.minimum.reduceat(roots, starts) != np.maximum.reduceat(roots, starts)
    if not mixed.any():
        return 0
    keep = np.repeat(mixed, sizes)
    idx, roots = idx[keep], roots[keep]
    sizes = sizes[mixed]
    ends = np.repeat(np.cumsum(sizes), sizes)
    after = ends - np.arange(idx.size) - 1  # members of my bucket after me
    values = unique[idx]
    left: list[I64] = []
    right: list[I64] = []
    compared = 0
    step = 1
    active = np.flatnonzero(after >= 1)
    while active.size:  # pairs (i, i + step) within a bucket, for growing steps
        other = active + step
        near = np.bitwise_count(values[active] ^ values[other]) <= distance
        near &= roots[active] != roots[other]
        compared += active.size
        if near.any():
            left.append(idx[active[near]])
            right.append(idx[other[near]])
        step += 1
        active = active[after[active] >= step]
    if left:
        _union(parent, np.concatenate(left), np.concatenate(right))
    return compared


def group_hashes(hashes: Sequence[int] | U64, distance: int) -> I64:
    """A group label per input hash: equal labels for hashes linked within ``distance`` bits.

    The label is the index (into the input) of the group's first member, so labels are
    stable for a given input order. Raises ValueError for a distance out of range.
    """
    values = np.asarray(hashes, dtype=np.uint64)
    if values.size == 0:
        plan(0, distance)  # still validates the distance
        return np.zeros(0, dtype=np.int64)
    unique, inverse = np.unique(values, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = unique.size
    layout = plan(n, distance)
    parent: I64 = np.arange(n, dtype=np.int64)
    if distance > 0 and n > 1:
        widths = layout.bands
        shifts = [sum(widths[:i]) for i in range(len(widths))]
        bands = [(unique >> np.uint64(s)) & np.uint64((1 << w) - 1) for s, w in zip(
            shifts, widths, strict=True)]
        for chosen in itertools.combinations(range(len(widths)), layout.k):
            key = np.zeros(n, dtype=np.uint64)
            key_bits = 0
            for band in chosen:
                key = (key << np.uint64(widths[band])) | bands[band]
                key_bits += widths[band]
            _link_table(unique, key, key_bits, distance, parent)
    _find(parent)
    # Label each group by the first input position holding one of its hashes.
    root_of_input = parent[inverse]
    first = np.full(n, values.size, dtype=np.int64)
    np.minimum.at(first, root_of_input, np.arange(values.size, dtype=np.int64))
    labels: I64 = first[root_of_input]
    return labels


def groups_of(hashes: Iterable[int], distance: int) -> list[list[int]]:
    """Input positions per group, groups in order of their first member (small inputs)."""
    labels = group_hashes(list(hashes), distance)
    out: dict[int, list[int]] = {}
    for pos, label in enumerate(labels.tolist()):
        out.setdefault(label, []).append(pos)
    return list(out.values())


# --------------------------------------------------------------------------- image groups


@dataclass(frozen=True)
class ImageUse:
    """One fetched image in one post (a media row joined with its post)."""

    platform: str
    post_id: str
    author: str
    seen: str  # the post's creation time, ISO 8601 (UTC), comparable as text
    hashtags: str  # the post's hashtags cell ("a|b")
    phash: str  # 16 hex digits
    sha256: str
    path: str  # the stored file, relative to the data dir


@dataclass(frozen=True)
class ImageGroup:
    posts: int  # distinct (platform, post) using an image of the group
    authors: int
    platforms: tuple[str, ...]
    first_seen: str
    last_seen: str
    hashtags: tuple[tuple[str, int], ...]  # top hashtags of the group's posts, with counts
    files: int  # distinct stored files (contents) in the group
    hashes: int  # distinct perceptual hashes in the group
    representative: str  # path of the file used by the most posts (ties: smallest path)
    representative_sha256: str
    post_ids: tuple[str, ...]  # "platform:id", sorted


def image_groups(
    uses: Iterable[ImageUse], distance: int, top: int = 20, top_hashtags: int = 5
) -> list[ImageGroup]:
    """Group the images by perceptual hash; the ``top`` groups by posts (then authors).

    Rows whose hash is not 16 hex digits are ignored (a failed or non-image fetch).
    """
    from shoal.hashtags import tags_of  # pure sibling; imported here to keep this module lean

    rows: list[ImageUse] = []
    values: list[int] = []
    for use in uses:
        try:
            value = parse_hash(use.phash)
        except ValueError:
            continue
        rows.append(use)
        values.append(value)
    labels = group_hashes(values, distance).tolist()
    members: dict[int, list[int]] = {}
    for pos, label in enumerate(labels):
        members.setdefault(label, []).append(pos)
    groups = []
    for positions in members.values():
        chosen = [rows[p] for p in positions]
        posts: dict[tuple[str, str], ImageUse] = {}
        for use in chosen:
            posts.setdefault((use.platform, use.post_id), use)
        tags: dict[str, int] = {}
        for use in posts.values():
            for tag in tags_of(use.hashtags):
                tags[tag] = tags.get(tag, 0) + 1
        per_file: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for use in chosen:
            per_file.setdefault((use.path, use.sha256), set()).add((use.platform, use.post_id))
        rep_path, rep_sha = min(per_file, key=lambda f: (-len(per_file[f]), f[0]))
        seen = [u.seen for u in posts.values() if u.seen]
        groups.append(ImageGroup(
            posts=len(posts),
            authors=len({(u.platform, u.author) for u in posts.values() if u.author}),
            platforms=tuple(sorted({u.platform for u in chosen})),
            first_seen=min(seen, default=""),
            last_seen=max(seen, default=""),
            hashtags=tuple(sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))[:top_hashtags]),
            files=len({u.sha256 for u in chosen}),
            hashes=len({u.phash for u in chosen}),
            representative=rep_path,
            representative_sha256=rep_sha,
            post_ids=tuple(sorted(f"{p}:{i}" for p, i in posts)),
        ))
    groups.sort(key=lambda g: (-g.posts, -g.authors, g.first_seen, g.representative))
    return groups[:top]
