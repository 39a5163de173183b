"""The shoal dataflow, top to bottom: :func:`build_flow` wires the steps, :func:`run` runs it.

    shoal.posts (Kafka, ``connectors.kafka.source``)
      -> stage (``flows.stage``): parse and normalise, dedupe by (platform, id) within each
         Kafka partition, assign the hour, write the hour's rows to chunks
      -> dead letters to disk (``connectors.store.deadletters``)
      -> media (``flows.media``): fetch every media URL, keyed per host
      -> seal (``flows.seal``): seal hours the stream has moved past (merge chunks into hourly
         xz files and Parquet) and log what was sealed

Every copy of a post carries the same Kafka key, so it lands in the same partition: keying the
stage step by partition dedupes across collectors and keeps one event-time clock per partition
(a single global clock would make a replay look late). The seal step sees every partition's
watermark and seals an hour once the slowest partition is past the hour's end plus the allowed
lateness. Rows never live in Bytewax state; only offsets and watermarks are snapshotted.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.kafka.source import PostsSource, list_partitions
from connectors.store.catalog import Catalog
from connectors.store.deadletters import DeadLetterSink
from connectors.store.id_lists import write_id_files
from connectors.store.reports import reports_lock
from flows.config import FlowConfig
from flows.media import FetchLogic
from flows.route import shard_keys, stage_keys
from flows.seal import SealLogic, fan_out
from flows.stage import ChunkFact, StageLogic
from shoal.fetch.policy import fetch_config, key_for
from shoal.model import DeadLetter
from shoal.panics import rust_panics_hidden

__all__ = ["FlowConfig", "build_flow", "run"]


def build_flow(cfg: FlowConfig) -> Dataflow:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    Catalog(cfg.data_dir).ensure()
    with reports_lock(cfg.data_dir):  # a seal that crashed before its ID lists: caught up
        write_id_files(cfg.data_dir)
    partitions = list_partitions(cfg.brokers, cfg.topic)
    cfg.partitions = len(partitions)
    # Each partition staged on the worker that reads it (``flows.route``): no poll crosses
    # between processes, and the stage is spread as evenly as the partitions.
    cfg.stage_keys = stage_keys(partitions, cfg.cluster_workers)
    flow = Dataflow("shoal")
    msgs = op.input(
        "posts-in",
        flow,
        PostsSource(
            cfg.brokers,
            cfg.topic,
            idle_exit=cfg.flow.idle_exit,
            producers_done=cfg.producers_done,
            start_offsets=cfg.start_offsets,
            end_offsets=cfg.end_offsets,
            keys=cfg.stage_keys,
        ),
    )
    # The source's items are already keyed by partition: one item is one poll's messages.
    staged = op.stateful_batch("stage", msgs, lambda resume: StageLogic(cfg, resume))
    outputs = op.map("drop-key", staged, lambda kv: kv[1])
    dead = op.branch("dead-or-not", outputs, lambda x: isinstance(x, DeadLetter))
    op.output("dead-letters", dead.trues, DeadLetterSink(
        cfg.data_dir, cfg.brokers if cfg.deadletter_topic else None, cfg.flow.tz))
    facts_or_jobs = op.branch("facts-or-media", dead.falses, lambda x: isinstance(x, ChunkFact))
    facts: Any = facts_or_jobs.trues
    if cfg.media.enabled:
        fetch_cfg = cfg.fetch or fetch_config(cfg.media)
        by_host = op.key_on("by-host", facts_or_jobs.falses,
                            lambda job: key_for(job.row["url"], fetch_cfg))

        def fetch_service() -> Any:
            from connectors.fetch.engine import FetchService

            return FetchService(cfg.data_dir, fetch_cfg, max_pending=64)

        fetched = op.stateful_batch(
            "fetch", by_host,
            lambda resume: FetchLogic(cfg.data_dir, fetch_cfg, resume, fetch_service),
        )
        facts = op.merge("facts", facts, op.map("media-facts", fetched, lambda kv: kv[1]))
    # Hours are shared among seal shards, each on a worker of its own (``flows.route``): a
    # cluster seals on every machine, not only where one sealer happens to run. Every shard
    # needs every partition's watermark to know when its hours are done; each gets only
    # its own hours.
    shards = cfg.flow.seal_shards or cfg.cluster_workers
    keys = shard_keys(shards, cfg.cluster_workers)
    to_sealer = op.flat_map("to-sealers", facts, lambda fact: fan_out(fact, keys))
    sealed = op.stateful_batch("seal", to_sealer, lambda resume: SealLogic(cfg, resume))
    op.inspect("sealed", sealed, lambda _s, _x: None)
    return flow


def run(cfg: FlowConfig, process_id: int | None = None,
        addresses: list[str] | None = None) -> None:
    """Run the dataflow in this process until its input ends (idle exit) or Ctrl-C.

    ``cfg.flow`` says how: ``workers`` per process, ``recovery`` (``recovery_dir``,
    ``epoch_seconds``, ``backup_seconds``). With recovery Bytewax keeps offsets and
    watermarks in ``DIR/_recovery``:
    a data dir it has never seen starts from the beginning of the topic, a known one resumes
    where it stopped.

    With ``addresses`` (every process's ``host:port``) and ``process_id`` this process is one
    of a Bytewax cluster: Kafka partitions are shared out among all the cluster's workers,
    each staged where it is read, and the hours among the seal shards. Every process must
    see the same DIR (one machine, or storage shared by all), and all of them are started,
    stopped and restarted together.
    """
    from bytewax._bytewax import cli_main
    from bytewax.recovery import RecoveryConfig, init_db_dir

    settings = cfg.flow
    cfg.cluster_workers = settings.workers * (len(addresses) if addresses else 1)
    flow = build_flow(cfg)
    recovery_config = None
    if settings.recovery:
        db = Path(settings.recovery_dir) if settings.recovery_dir else cfg.data_dir / "_recovery"
        if not db.exists():
            # Processes of one cluster may all find it missing at once: one rename wins.
            tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            init_db_dir(tmp, 1)
            try:
                tmp.rename(db)
            except OSError:
                if not db.exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        recovery_config = RecoveryConfig(str(db), timedelta(seconds=settings.backup_seconds))
    # An operator's exception reaches the caller chained; Rust's panic report about it would
    # only bury the one line the CLI prints.
    try:
        with rust_panics_hidden():
            cli_main(
                flow,
                workers_per_process=settings.workers,
                process_id=process_id,
                addresses=addresses,
                epoch_interval=timedelta(seconds=settings.epoch_seconds),
                recovery_config=recovery_config,
            )
    finally:
        # Stopped early (Ctrl-C, SIGTERM, an error), the fetch steps never saw the end of
        # their input: stop their shared engines here rather than at interpreter exit.
        from connectors.fetch.engine import close_all

        close_all()
        _id_lists_at_stop(cfg.data_dir)


def _id_lists_at_stop(data_dir: Path) -> None:
    """Bring the TikTok ID files up to date with every hour sealed, at any stop.

    The seal shards rewrite them once their TikTok seals under way are over, and at the end
    of the input; Ctrl-C and SIGTERM stop the dataflow without that end, and a TikTok hour
    sealed just before would be missing from the lists until the next start.
    """
    try:
        with reports_lock(data_dir):
            write_id_files(data_dir)
    except Exception as exc:  # the stop's own error, if any, is the one to report
        logging.getLogger("shoal.flow").warning(
            "TikTok ID files not brought up to date at stop (the next start does it)",
            extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
