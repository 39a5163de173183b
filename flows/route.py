"""Which worker a Bytewax state key lands on, so that sealing can be spread on purpose.

Bytewax 0.21 routes every item of a stateful step to worker ``hash(key) % W``, where ``W``
is the cluster's worker count and ``hash`` is Rust's ``DefaultHasher`` (SipHash-1-3 with
zero keys) over the key's ``str``: its UTF-8 bytes then ``0xff``. Sealing is the one step
with a few hand-made keys (one per seal shard): left to chance, two shards could share a
worker while another worker seals nothing, so each shard's key is picked to land on a worker
of its own. ``tests/test_seal_shards.py`` checks this model against Bytewax itself: if a
Bytewax upgrade changes its routing, that test fails (sealing stays correct, only less
evenly spread).
"""

from __future__ import annotations

from functools import cache

_M = 0xFFFF_FFFF_FFFF_FFFF


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M


def siphash13(data: bytes, k0: int = 0, k1: int = 0) -> int:
    """SipHash-1-3 of ``data`` (Rust's ``DefaultHasher``, keys ``k0``/``k1``)."""
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def sip_round() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _M
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _M
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _M
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _M
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        sip_round()
        v0 ^= m
    last = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= last
    sip_round()
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        sip_round()
    return v0 ^ v1 ^ v2 ^ v3


def worker_of(key: str, workers: int) -> int:
    """The index of the worker (of ``workers``) that Bytewax gives state key ``key``."""
    return siphash13(key.encode("utf-8") + b"\xff") % workers


@cache
def shard_keys(shards: int, workers: int) -> tuple[str, ...]:
    """A state key per seal shard; shard ``i`` lands on worker ``i % workers``.

    One shard keeps the historical key ``sealer``, so a recovery store written before
    sharding resumes its state.
    """
    if shards <= 1:
        return ("sealer",)
    keys = []
    for i in range(shards):
        j = 0
        while worker_of(f"sealer-{i}-{j}", workers) != i % workers:
            j += 1
        keys.append(f"sealer-{i}-{j}")
    return tuple(keys)


def reader_of(part: str, parts: list[str], workers: int) -> int:
    """The worker that Bytewax 0.21 gives a source partition: the partitions' names sorted
    as text, the i-th on worker ``i % workers``."""
    return sorted(parts).index(part) % workers


def stage_keys(partitions: list[int], workers: int) -> dict[int, str]:
    """The stage's state key per Kafka partition, on the worker that reads the partition.

    Keyed by the partition's own name, the stage of most partitions would run on another
    worker than the one reading it (every poll's messages crossing between processes) and
    unevenly: 4 partitions on 2 workers all hash to the same one. The partition's name is
    kept where it lands right (always on one worker, so a single process's recovery store
    keeps its keys), else ``NAME@j`` for the first ``j`` that lands right.
    """
    names = sorted(str(p) for p in partitions)
    keys = {}
    for name in names:
        want, key, j = reader_of(name, names, workers), name, 0
        while worker_of(key, workers) != want:
            j += 1
            key = f"{name}@{j}"
        keys[int(name)] = key
    return keys


def shard_of(platform: str, start: int, shards: int) -> int:
    """The seal shard of an hour: hours round-robin over the shards (a replay completes
    hours in time order, so neighbours are sealed side by side), each platform shifted."""
    if shards <= 1:
        return 0
    offset = sum(platform.encode("utf-8"))  # stable across processes, unlike hash()
    return (start // 3600 + offset) % shards
