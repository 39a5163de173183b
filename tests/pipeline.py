"""Running the real pipeline in tests: embedded broker, file collectors, the Bytewax flow."""

from __future__ import annotations

import csv
import hashlib
import io
import lzma
from collections.abc import Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from connectors.collect.files import collect_files
from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import Publisher, ensure_topics
from flows.ingest import FlowConfig, run
from shoal.options import FlowSettings, MediaSettings


def publish(brokers: str, files: Iterable[tuple[str, Path]], fmt: str | None = None) -> None:
    for collector, path in files:
        pub = Publisher(brokers, collector)
        try:
            collect_files([path], pub, fmt)
        finally:
            pub.close()


def flow_config(brokers: str, data_dir: Path, **cfg: Any) -> FlowConfig:
    """A FlowConfig from flat keywords: [flow] and [media] option names go to their section
    (``media=False`` is ``[media] enabled = false``), the rest to FlowConfig itself."""
    flow_keys = {f.name for f in fields(FlowSettings)}
    media_keys = {f.name for f in fields(MediaSettings)}
    flow = FlowSettings(**{k: cfg.pop(k) for k in list(cfg) if k in flow_keys})
    media = MediaSettings(**{k: cfg.pop(k) for k in list(cfg) if k in media_keys})
    if "media" in cfg:
        media.enabled = cfg.pop("media")
    return FlowConfig(data_dir=data_dir, brokers=brokers, flow=flow, media=media, **cfg)


def run_flow(brokers: str, data_dir: Path, *, recovery: bool = False, **cfg: Any) -> None:
    cfg.setdefault("idle_exit", 0.5)
    # The fixtures' media URLs are historical and must not be fetched; media tests opt in
    # with their own loopback servers.
    cfg.setdefault("media", False)
    cfg.setdefault("flush_interval", 0.2)
    cfg.setdefault("epoch_seconds", 1.0)
    run(flow_config(brokers, data_dir, recovery=recovery, **cfg))


def pipeline(data_dir: Path, files: Sequence[tuple[str, Path]], partitions: int = 4,
             **cfg: Any) -> None:
    """Fresh broker, publish every (collector, file), run the flow until idle, stop."""
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, partitions)
        publish(broker.bootstrap, files)
        run_flow(broker.bootstrap, data_dir, **cfg)


def read_xz_lines(path: Path) -> list[str]:
    return lzma.decompress(path.read_bytes()).decode().splitlines()


def read_csv_xz(path: Path) -> list[dict[str, str]]:
    text = lzma.decompress(path.read_bytes()).decode()
    return list(csv.DictReader(io.StringIO(text, newline="")))


def all_ids(data_dir: Path, platform: str = "twitter") -> list[str]:
    ids: list[str] = []
    for path in sorted((data_dir / platform).glob("*/*_IDs.txt.xz")):
        ids.extend(read_xz_lines(path))
    return ids


def all_rows(data_dir: Path, platform: str = "twitter") -> list[dict[str, str]]:
    word = "tweets" if platform == "twitter" else "posts"
    rows: list[dict[str, str]] = []
    for path in sorted((data_dir / platform).glob(f"*/*_{word}.csv.xz")):
        rows.extend(read_csv_xz(path))
    return rows


def report_lines(path: Path) -> list[str]:
    """The table of a day report (its trailing ``#`` lines are notes, not rows)."""
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def digests(root: Path) -> dict[str, str]:
    """SHA-256 of every published hourly file and Parquet partition (not temporary files)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] in ("twitter", "_parquet")
        and not p.name.endswith(".tmp")
    }
