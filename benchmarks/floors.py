"""What the fixed parts alone cost per post, and the throughput ceiling that implies.

    .venv/bin/python benchmarks/floors.py --posts 50000

The throughput issue asks for 20,000 posts/s end to end and 10x `twarc2 csv` on two cores.
This measures, one at a time and each with nothing else to do, the CPU that the design's
fixed parts spend on a post shoal must carry anyway — before any of shoal's own logic:

- kafka-python producing the post (key, value, the four headers) to the embedded broker,
- the broker (Tansu) storing it and serving it back, read from its /proc CPU counters,
- confluent-kafka (Bytewax's client) consuming it,
- orjson decoding the collector's page and the processor's message,
- xz (preset 1) compressing the post's rows (the posts, users and media CSV lines),
- DuckDB writing those rows as zstd Parquet.

Their sum is a floor on CPU per post; two cores divided by it is a ceiling on posts/s that
no scheduling can beat. Printed next to the peer's measured rate and the two targets.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import lzma
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.kafka.broker import EmbeddedBroker  # noqa: E402
from connectors.kafka.publisher import POSTS_TOPIC, ensure_topics, post_headers  # noqa: E402
from connectors.store.seal import csv_bytes  # noqa: E402
from shoal.demo import DemoSpec, demo_pages  # noqa: E402
from shoal.formats.twitter_v2 import read  # noqa: E402
from shoal.gc_tune import tune_gc  # noqa: E402
from shoal.model import (  # noqa: E402
    MEDIA_FILE_COLUMNS,
    POST_COLUMNS,
    USER_COLUMNS,
    RawPost,
)
from shoal.normalise import normalise  # noqa: E402


def cpu(fn: Callable[[], object]) -> float:
    """CPU seconds this process spent in ``fn`` (all its threads)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def rows_floors(values: list[bytes], tmp: Path) -> dict[str, float]:
    """CPU seconds of the row work every post needs: decode it, xz its rows, write Parquet.

    ``values`` are the processor's messages (one post each). The rows are made outside the
    timing: normalising is shoal's own logic, not a fixed part.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    floors: dict[str, float] = {}

    def decode(docs: list[bytes]) -> None:
        for doc in docs:  # each result dropped at once, as the pipeline does
            orjson.loads(doc)

    floors["orjson: decode the processor's messages"] = cpu(lambda: decode(values))
    norm = [normalise("twitter-v2", orjson.loads(v), "2021-05-11T20:00:00+00:00")
            for v in values]
    post_csv = csv_bytes(POST_COLUMNS, [x.post for x in norm])
    user_csv = csv_bytes(USER_COLUMNS, [x.user for x in norm if x.user])
    media_csv = csv_bytes(MEDIA_FILE_COLUMNS, [m.row() for x in norm for m in x.media])
    floors["xz (preset 1): the rows of posts, users, media"] = cpu(
        lambda: [lzma.compress(b, preset=1) for b in (post_csv, user_csv, media_csv)])
    con = duckdb.connect(config={"threads": 1})
    for name, data in (("p", post_csv), ("u", user_csv), ("m", media_csv)):
        (tmp / f"{name}.csv").write_bytes(data)

    def parquet() -> None:
        for name in ("p", "u", "m"):
            con.execute(f"COPY (SELECT * FROM read_csv('{tmp / name}.csv', all_varchar=true)) "
                        f"TO '{tmp / name}.parquet' (FORMAT parquet, COMPRESSION zstd)")

    floors["DuckDB: the rows as zstd Parquet"] = cpu(parquet)
    con.close()
    return floors


def consume_floor(bootstrap: str, n: int, broker_cpu: Callable[[], float],
                  topic: str = POSTS_TOPIC) -> tuple[dict[str, float], list[bytes]]:
    """CPU seconds of confluent-kafka consuming ``n`` messages of ``topic`` from its start,
    and of the broker serving them; returns those and the messages' values."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "floors",
                         "enable.auto.commit": False, "log_level": 3})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, -2) for p in parts])
    values: list[bytes] = []
    b0 = broker_cpu()

    def consume() -> None:
        deadline = time.monotonic() + 600
        while len(values) < n and time.monotonic() < deadline:
            for m in consumer.consume(2000, 0.5):
                if m.error() is None:
                    v = m.value()
                    m.key(), m.headers(), m.timestamp()
                    if v is not None and len(values) < n:
                        values.append(v)

    floors = {"confluent-kafka: consume": cpu(consume)}
    floors["Tansu broker: serve the messages"] = broker_cpu() - b0
    consumer.close()
    return floors, values


def processor_floors(broker: EmbeddedBroker, n: int, tmp: Path) -> dict[str, float]:
    """The floor of a replay's fixed parts, in µs of CPU per post, on the first ``n``
    messages of the broker's filled posts topic (``benchmarks/replay.py``)."""
    floors, values = consume_floor(broker.bootstrap, n, broker.cpu_seconds)
    floors.update(rows_floors(values, tmp))
    return {name: seconds / len(values) * 1e6 for name, seconds in floors.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=50_000)
    ap.add_argument("--peer-posts-per-second", type=float, default=7_400.0,
                    help="twarc2 csv's rate from benchmarks/throughput.py on this machine")
    args = ap.parse_args()
    tune_gc()  # as `shoal collect` and `shoal process` run
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="shoal-floors-"))
    pages_file = tmp / "pages.jsonl"
    with open(pages_file, "wb") as fh:
        for page in demo_pages(DemoSpec(posts=args.posts, hours=2, authors=5000)):
            fh.write(orjson.dumps(page) + b"\n")
    lines = pages_file.read_bytes().splitlines()
    posts = [r for r in read(pages_file) if isinstance(r, RawPost)]
    values = [orjson.dumps(p.payload) if not isinstance(p.payload, bytes) else p.payload
              for p in posts]
    n = len(posts)
    floors: dict[str, float] = {}

    def decode(docs: list[bytes]) -> None:
        for doc in docs:  # each result dropped at once, as the pipeline does
            orjson.loads(doc)

    floors["orjson: decode the collector's pages"] = cpu(
        lambda: [orjson.loads(line) for line in lines] and None)
    floors.update(rows_floors(values, tmp))

    with EmbeddedBroker() as broker:
        from kafka import KafkaProducer

        ensure_topics(broker.bootstrap, 4)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=20,
                                 batch_size=1024 * 1024, max_request_size=16 * 1024 * 1024)
        headers = post_headers("twitter-v2", "floors", "2021-05-11T20:00:00+00:00", "pages")
        keys = [f"twitter:{p.id}".encode() for p in posts]
        b0 = broker.cpu_seconds()

        def produce() -> None:
            for k, v in zip(keys, values, strict=True):
                producer.send(POSTS_TOPIC, key=k, value=v, headers=headers)
            producer.flush()

        floors["kafka-python: produce (send + flush)"] = cpu(produce)
        producer.close()
        stored = broker.cpu_seconds() - b0
        consumed, _ = consume_floor(broker.bootstrap, n, broker.cpu_seconds)
        floors["confluent-kafka: consume"] = consumed["confluent-kafka: consume"]
        floors["Tansu broker: store and serve"] = stored + consumed[
            "Tansu broker: serve the messages"]

    table = Table("fixed part", "µs of CPU per post")
    total = 0.0
    for name, seconds in floors.items():
        us = seconds / n * 1e6
        total += us
        table.add_row(name, f"{us:.1f}")
    table.add_row("[bold]floor (sum)[/bold]", f"[bold]{total:.1f}[/bold]")
    console.print(f"{n} posts, {len(lines)} pages")
    console.print(table)
    ceiling = 2 / (total / 1e6)
    peer = args.peer_posts_per_second
    console.print(f"ceiling on 2 cores from these parts alone: {ceiling:,.0f} posts/s "
                  f"(20,000 asked; 10x the peer = {10 * peer:,.0f} asked)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
