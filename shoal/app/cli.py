"""The ``shoal`` command: thin argument handling over connectors and flows.

Every failure a user can cause (a missing file, an unreachable broker, bad SQL) ends as one
line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import orjson

from connectors.store.writer_lock import make_data_dir, writer_lock
from shoal import __version__
from shoal.app import config as shoal_config
from shoal.app import fetch_cmd
from shoal.app.config import add_options
from shoal.app.progress import BatchDisplay, ProgressDisplay
from shoal.batch import BatchProgress
from shoal.csv_text import csv_text
from shoal.errors import UserError, chain
from shoal.fetch.policy import FetchConfig, fetch_config
from shoal.gc_tune import tune_gc
from shoal.logs import event, relay, setup
from shoal.names import check_collector
from shoal.options import Settings

log = logging.getLogger("shoal")


# --------------------------------------------------------------------------- helpers


def media_fetch_config(settings: Settings, **extra: Any) -> FetchConfig:
    """The fetch engine's configuration: ``[media]`` as resolved, plus what a command adds."""
    try:
        return fetch_config(settings.media, **extra)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _flow_config(args: argparse.Namespace, brokers: str, **extra: Any) -> Any:
    """The dataflow's configuration: the resolved ``[flow]`` and ``[media]`` sections as they
    are, plus what only this run knows (offsets, the sealed-hour callback...)."""
    from flows.ingest import FlowConfig

    settings: Settings = args.settings
    fetch = extra.pop("fetch", None) or media_fetch_config(settings)
    return FlowConfig(
        data_dir=Path(settings.flow.data_dir),
        brokers=brokers,
        topic=settings.kafka.topic,
        deadletter_topic=settings.kafka.deadletter_topic,
        flow=settings.flow,
        media=settings.media,
        fetch=fetch,
        **extra,
    )


# Collectors `up` runs as child processes (`shoal collect KIND ...`) publishing into its
# embedded broker: kind -> (how its argument is passed: "" none, "-" as the positional
# argument, else the flag taking the comma-separated values; does it end by itself).
LIVE_SOURCES: dict[str, tuple[str, bool]] = {
    "twitter-search": ("-", True),
    "twitter-sample": ("", False),
    "bluesky": ("", False),
    "mastodon": ("-", False),
    "instagram": ("--profiles", True),
    "images": ("-", True),
    "tiktok": ("--hashtags", True),
}


@dataclass(frozen=True)
class Source:
    """One ``--source``: ``file`` (a file or a directory of them), ``demo``, or a collector."""

    kind: str
    value: str
    collector: str | None = None  # ``NAME=...`` or ``file:PATH@NAME``; else a default

    @property
    def live(self) -> bool:
        return self.kind in LIVE_SOURCES


def _parse_sources(specs: Sequence[str]) -> list[Source]:
    """``[NAME=]KIND[:ARG]``, and ``file:PATH@NAME`` as well."""
    out = []
    kinds = ", ".join(["file:PATH", "demo[:N]", "twitter-search:QUERY", "twitter-sample",
                       "bluesky", "mastodon:HOST", "instagram:NAME,...", "images:KEYWORD",
                       "tiktok:TAG,..."])
    for spec in specs:
        name, eq, rest = spec.partition("=")
        if not eq or ":" in name or not name:
            name, rest = "", spec
        kind, _, arg = rest.partition(":")
        if kind == "file":
            path, at, suffix = arg.rpartition("@")
            if at and not name and not Path(arg).exists():
                name, arg = suffix, path
            if not arg:
                raise UserError("--source file:PATH needs a path")
            if not Path(arg).exists():
                raise UserError(f"no such file or directory: {arg}")
        elif kind == "demo":
            if arg and not arg.isdigit():
                raise UserError(f"--source demo:N needs a number of posts, got {arg!r}")
            arg = arg or "2000"
        elif kind in LIVE_SOURCES:
            takes_arg = bool(LIVE_SOURCES[kind][0])
            if takes_arg and not arg:
                raise UserError(f"--source {kind}:... needs its argument (see `shoal collect "
                                f"{kind} --help`)")
            if arg and not takes_arg:
                raise UserError(f"--source {kind} takes no argument")
        else:
            raise UserError(f"unknown source {spec!r} (use [NAME=]KIND with KIND one of "
                            f"{kinds})")
        if name:
            try:
                check_collector(name)
            except ValueError as exc:
                raise UserError(f"--source {spec}: {exc}") from None
        out.append(Source(kind, arg, name or None))
    return out


def collector_argv(source: Source, brokers: str, config: Path | str | None) -> list[str]:
    """``shoal collect KIND ...`` for a live source. A positional argument (a keyword, a
    search, a host) goes last, after ``--``: one starting with a dash (``images:-funny``,
    ``twitter-search:-is:retweet #x``) was otherwise read as an unknown option, and the
    collector exited 2 with the source uncollected."""
    how = LIVE_SOURCES[source.kind][0]
    argv = ["collect", source.kind, "--brokers", brokers,
            "--collector", source.collector or source.kind]
    if config:
        argv += ["--config", str(config)]
    if how == "-":
        argv += ["--", source.value]
    elif how:
        argv += [how, *source.value.split(",")]
    return argv


def _start_live(source: Source, brokers: str, args: argparse.Namespace) -> subprocess.Popen[str]:
    """A live collector as a child process publishing into ``brokers``; it inherits the
    environment (tokens), the configuration file, the settings of our command line
    (:func:`shoal.app.config.child_env`) and our stderr (its log lines)."""
    cmd = [sys.executable, "-m", "shoal",
           *collector_argv(source, brokers, getattr(args, "config", None))]
    event(log, "collector started", kind=source.kind, collector=source.collector or source.kind)
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             errors="replace", env=shoal_config.child_env(args.settings))

    def forward() -> None:  # its log lines join ours, above the live display
        assert child.stderr is not None
        for line in child.stderr:
            relay(line)

    threading.Thread(target=forward, name=f"log-{source.kind}", daemon=True).start()
    return child


def _progress(show: bool = True) -> Any:
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(), "[progress.description]{task.description}", MofNCompleteColumn(),
        TimeElapsedColumn(), console=Console(stderr=True), transient=False,
        disable=not (show and sys.stderr.isatty()),
    )


@dataclass
class Collected:
    """What the collectors of one command did: posts per collector, and every source that
    gave nothing (empty) or could not be read (with why)."""

    counts: dict[str, int] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def verdict(self, strict: bool) -> None:
        """Say what went wrong at the end, once; with ``strict``, fail on it."""
        for path in self.empty:
            log.warning("empty source: 0 posts", extra={"fields": {"source": path}})
        if not self.unreadable:
            return
        line = (f"{len(self.unreadable)} source(s) could not be read, the others were "
                f"collected: {'; '.join(self.unreadable)}")
        if strict:
            raise UserError(line + " (--strict)")
        log.warning(line)


def _collect_into(brokers: str, sources: list[Source], collector: str, kafka: Any,
                  data_dir: Path | None, fmt: str | None = None,
                  media_bases: tuple[str, str] | None = None, bar: bool = True) -> Collected:
    """Publish every source, one after the other; one bad source does not stop the others."""
    from connectors.collect.files import collect_files, expand_sources, is_empty, unreadable
    from connectors.kafka.publisher import Publisher
    from shoal.demo import DemoSpec, write_demo_files

    done = Collected()
    jobs: list[tuple[str, Path]] = []
    for source in sources:
        if source.kind == "file":
            files = expand_sources(Path(source.value))
            if not files:
                done.empty.append(source.value)
            jobs += [(source.collector or collector, p) for p in files]
        elif source.kind == "demo":
            folder = (data_dir or Path(".")) / "_work" / "demo"
            spec = DemoSpec(posts=int(source.value))
            if media_bases:
                spec = replace(spec, photo_base=media_bases[0], video_base=media_bases[1])
            jobs += list(write_demo_files(folder, spec).items())
    from connectors.ops import metrics

    with _progress(bar) as progress:  # under `up`, the dataflow's display shows collectors
        for name, path in jobs:
            if is_empty(path):
                done.empty.append(str(path))
                continue
            why = unreadable(path, fmt)
            if why is not None:
                log.warning("unreadable source", extra={"fields": {"source": str(path),
                                                                    "error": why}})
                done.unreadable.append(why)
                continue
            task = progress.add_task(f"{name}: {path.name}", total=None)
            pub = Publisher.for_settings(brokers, name, kafka)
            others: dict[str, Any] = {name: pub}

            def publisher_for(collector: str, others: dict[str, Any] = others) -> Any:
                # A raw-archive line names the collectors that saw its post: each is credited,
                # as `replay --from-archive` does (they were all reported as this source).
                if collector not in others:
                    others[collector] = Publisher.for_settings(brokers, collector, kafka)
                return others[collector]

            try:
                collect_files([path], pub, fmt, on_record=partial(progress.advance, task),
                              publisher_for=publisher_for)
            except (OSError, ValueError) as exc:  # the file, not Kafka (KafkaError is neither)
                log.warning("unreadable source", extra={"fields": {"source": str(path),
                                                                    "error": repr(exc)}})
                done.unreadable.append(f"{path}: {exc}")
            finally:
                for each in others.values():
                    each.close()
            for collector, each in others.items():
                done.counts[collector] = done.counts.get(collector, 0) + each.counts.posts
                metrics.posts_out(collector, each.counts.posts)
            event(log, "collected", collector=name, file=str(path),
                  posts=sum(each.counts.posts for each in others.values()),
                  dead=pub.counts.dead, control=pub.counts.control)
    return done


# --------------------------------------------------------------------------- commands


class _Services:
    """Metrics, alerts and after-seal hooks around a running dataflow."""

    def __init__(self, args: argparse.Namespace, brokers: str | None = None):
        from connectors.ops import metrics
        from connectors.ops.alerts import Alerts
        from connectors.ops.hooks import HookRunner

        self.server: Any = None
        self.probe: Any = None
        settings = getattr(args, "settings", None)
        if args.metrics_port:
            self.server = metrics.start_server(args.metrics_port, args.metrics_host)
            event(log, "metrics", url=self.server.url)
            if brokers and settings is not None:
                # Only /healthz reads the probe's answer: without a server, no probe.
                from connectors.kafka.probe import KafkaProbe

                self.probe = KafkaProbe(brokers, settings.kafka.topic,
                                        settings.metrics.kafka_stale_seconds).start()
                metrics.add_health_check(self.probe.check)
        self.alerts: Any = None
        self.hooks: Any = None
        data_dir = getattr(args, "data_dir", None)
        if data_dir is not None:  # in a cluster, another process may be the one sealing
            from connectors.store.reports import last_seal_on_disk

            metrics.set_seal_clock(lambda: last_seal_on_disk(data_dir))
        if settings is not None:
            metrics.set_health_limits(settings.metrics.seal_stale_seconds,
                                      settings.metrics.post_stale_seconds)
            # A cluster alerts once, from process 0: it learns of seals made elsewhere from
            # the stamps in DIR; the others would only send the same notices again.
            if getattr(args, "process_id", None) in (None, 0):
                self.alerts = Alerts.from_settings(settings.alerts, args.data_dir)
            if self.alerts is not None:
                self.alerts.start(settings.alerts.check_seconds)
            self.hooks = HookRunner.from_settings(settings.hooks, args.data_dir)
            if self.hooks is not None:
                self.hooks.start()

    def on_sealed(self, summary: Any) -> None:
        if self.alerts is not None:
            self.alerts.on_sealed(summary)
        if self.hooks is not None:
            self.hooks.on_sealed(summary)

    def close(self) -> None:
        for part in (self.hooks, self.alerts, self.server, self.probe):
            if part is not None:
                part.close()


def _check_format(fmt: str | None) -> None:
    """``--format``: a reader's name, checked before a broker starts (it was a warning per
    file, after the whole pipeline had run over nothing, and exit 0)."""
    from shoal.formats import readers

    if fmt is not None and fmt not in readers():
        raise UserError(f"unknown --format {fmt!r}; known: {', '.join(sorted(readers()))}")


def cmd_up(args: argparse.Namespace) -> int:
    from connectors.kafka.broker import EmbeddedBroker
    from connectors.kafka.publisher import ensure_topics
    from flows.ingest import run

    _check_format(args.format)

    settings: Settings = args.settings
    sources = _parse_sources(args.source or ["demo"])
    make_data_dir(args.data_dir)
    done = threading.Event()
    failure: list[BaseException] = []
    collected: list[Collected] = []
    demo_media = None
    fetch = None
    if any(s.kind == "demo" for s in sources) and settings.media.enabled:
        # Demo posts point at a loopback media server of ours, reached under its own names
        # (a trusted resolver override), so the demo downloads real files without internet.
        from connectors.collect.demo_media import HOSTS, DemoMediaServer

        demo_media = DemoMediaServer().start()
        # Our own server needs no politeness, so the demo fetches at full speed; unless the
        # user asked for a pace, which the demo is a way to watch.
        paced = any(settings.source("media", k) != "default"
                    for k in ("throttle", "domain_parallelism"))
        fetch = media_fetch_config(settings, resolve=demo_media.resolve,
                                   per_host={} if paced else dict.fromkeys(HOSTS, (8, 0.0)))
    with writer_lock(args.data_dir), EmbeddedBroker(
            log=args.data_dir / "_work" / "broker.log" if _mkdir(args.data_dir / "_work")
            else None) as broker:
        ensure_topics(broker.bootstrap, settings.kafka.partitions, settings.kafka.topic)
        event(log, "broker up", brokers=broker.bootstrap)

        children = [(s, _start_live(s, broker.bootstrap, args)) for s in sources if s.live]

        def produce() -> None:
            try:
                outcome = _collect_into(
                    broker.bootstrap, sources, args.collector, settings.kafka, args.data_dir,
                    args.format, demo_media.bases if demo_media else None, bar=False)
                collected.append(outcome)
                # Collectors that end by themselves (a search) are waited for; streams run
                # until `up` is stopped, so with one of them the input never ends.
                for source, child in children:
                    if LIVE_SOURCES[source.kind][1] and child.wait() != 0:
                        outcome.unreadable.append(
                            f"{source.kind} {source.value} exited {child.returncode}")
                if any(not LIVE_SOURCES[s.kind][1] for s, _ in children):
                    return
            except BaseException as exc:  # surfaced after the flow stops
                failure.append(exc)
            done.set()

        thread = threading.Thread(target=produce, name="collectors", daemon=True)
        thread.start()
        services = _Services(args, broker.bootstrap)
        cfg = _flow_config(args, broker.bootstrap, producers_done=done,
                           on_sealed=services.on_sealed, fetch=fetch)
        cfg.flow = replace(cfg.flow, recovery=False)
        # The embedded broker forgets everything on exit, so offsets from an earlier run would
        # point nowhere: `up` starts from the beginning each time and relies on sealing being
        # idempotent. Resumable deployments use `collect` + `process` on a durable Kafka.
        try:
            with ProgressDisplay(every=settings.flow.progress_seconds):
                run(cfg)
        finally:
            services.close()
            if demo_media is not None:
                demo_media.stop()
            for _source, child in children:  # they flush and save their resume points
                if child.poll() is None:
                    child.terminate()
            for _source, child in children:
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
        thread.join(5)
    if failure:
        raise UserError(f"collector failed: {failure[0]}")
    for outcome in collected:
        outcome.verdict(args.strict)
    event(log, "done", data_dir=str(args.data_dir))
    return 0


def _mkdir(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return True


def cmd_collect(args: argparse.Namespace) -> int:
    from connectors.kafka.publisher import ensure_topics

    _check_format(args.format)
    for p in args.paths:
        if not Path(p).exists():
            raise UserError(f"no such file or directory: {p}")
    kafka = args.settings.kafka
    ensure_topics(args.brokers, kafka.partitions, kafka.topic)
    collected = _collect_into(args.brokers, [Source("file", p) for p in args.paths],
                              args.collector, kafka, None, args.format)
    print(orjson.dumps(collected.counts).decode())
    collected.verdict(args.strict)
    return 0


def _cluster(args: argparse.Namespace) -> tuple[list[str] | None, int | None]:
    """``--addresses``/``--process-id``, checked: both or neither, and the id in range."""
    if args.addresses is None and args.process_id is None:
        return None, None
    if args.addresses is None or args.process_id is None:
        raise UserError("--addresses and --process-id go together (one process of a cluster)")
    addresses = [a.strip() for a in args.addresses.replace(";", ",").split(",") if a.strip()]
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"--addresses: {address!r} is not HOST:PORT")
    if not 0 <= args.process_id < len(addresses):
        raise UserError(f"--process-id {args.process_id} is not an index of the "
                        f"{len(addresses)} --addresses (0 to {len(addresses) - 1})")
    return addresses, args.process_id


def cmd_process(args: argparse.Namespace) -> int:
    from connectors.kafka.publisher import ensure_topics
    from flows.ingest import run

    addresses, process_id = _cluster(args)
    with writer_lock(args.data_dir, process_id):
        ensure_topics(args.brokers, args.partitions, args.topic)
        services = _Services(args, args.brokers)
        try:
            cfg = _flow_config(args, args.brokers, on_sealed=services.on_sealed)
            with ProgressDisplay(every=args.settings.flow.progress_seconds):
                run(cfg, process_id=process_id, addresses=addresses)
        finally:
            services.close()
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    import time

    from connectors.kafka.broker import EmbeddedBroker

    with EmbeddedBroker(port=args.port) as broker:
        note = f"embedded broker on {broker.bootstrap} (memory only); Ctrl-C stops it"
        print(note, file=sys.stderr)
        try:
            while broker.proc is not None and broker.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
    raise UserError("the broker exited")


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb

    from connectors.store.catalog import DERIVED_VIEWS, TABLES, has_sealed, query

    if not args.data_dir.is_dir():
        raise UserError(f"no such data dir: {args.data_dir}")
    if not has_sealed(args.data_dir):
        raise UserError(f"nothing is sealed in {args.data_dir} yet: no hour has been written "
                        "there (`shoal up` or `shoal process` with this --data-dir seal hours)")
    try:
        names, rows = query(args.data_dir, args.sql)
    except duckdb.CatalogException as exc:
        raise UserError(f"{str(exc).splitlines()[0]} (the views are "
                        f"{', '.join([*TABLES, *DERIVED_VIEWS])})") from None
    except duckdb.Error as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    if args.format == "json":
        for row in rows:
            record = dict(zip(names, row, strict=True))
            sys.stdout.write(orjson.dumps(record, default=str).decode() + "\n")
    elif args.format == "csv":
        sys.stdout.write(csv_text(names, ([_cell(v) for v in row] for row in rows)))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*names)
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        Console().print(table)
    return 0


def _cell(value: Any) -> str:
    """A value as text: maps and lists (the reports' per-collector counts) as JSON."""
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value, default=str).decode()
    return str(value)


@contextlib.contextmanager
def _metrics_only(args: argparse.Namespace) -> Iterator[None]:
    """/metrics and /healthz while a replay or a collector runs, when ``--metrics-port`` asks
    for them (a replay of months is watched like a service; alerts and hooks are for the
    dataflow services, :class:`_Services`)."""
    from connectors.ops import metrics

    server = metrics.start_server(args.metrics_port, args.metrics_host) \
        if args.metrics_port else None
    try:
        yield
    finally:
        if server is not None:
            server.close()


def cmd_replay(args: argparse.Namespace) -> int:
    from connectors.kafka.offsets import OffsetFinder, parse_offsets
    from flows.ingest import run
    from shoal.hours import parse_iso

    addresses, process_id = _cluster(args)
    if process_id is None and args.data_dir.exists() and any(args.data_dir.iterdir()):
        raise UserError(f"replay writes into a fresh data dir; {args.data_dir} is not empty")
    if process_id is not None and _has_outputs(args.data_dir):
        # The cluster's processes start together, and each makes its locks, recovery store
        # and catalog seeds at once: only outputs say that the dir was written before.
        raise UserError(f"replay writes into a fresh data dir; {args.data_dir} holds the "
                        "outputs of an earlier run")
    if args.from_archive is not None:
        if process_id is not None:
            raise UserError("--from-archive runs in one process (no --addresses)")
        return _replay_archive(args)
    chosen = [bool(args.from_beginning), bool(args.from_offset), bool(args.from_time)]
    if sum(chosen) > 1:
        raise UserError("choose one of --from-beginning, --from-offset, --from-time")
    try:
        from_time = parse_iso(args.from_time) if args.from_time else None
        until_time = parse_iso(args.until_time) if args.until_time else None
    except ValueError as exc:
        raise UserError(f"bad time: {exc}") from None
    topic = args.settings.kafka.topic
    finder = OffsetFinder(args.brokers, topic)
    try:
        parts = finder.partitions()
        start = {p: finder.bounds(p)[0] for p in parts}
        if args.from_offset:
            given = parse_offsets(args.from_offset)
            unknown = set(given) - set(parts)
            if unknown:
                raise UserError(f"no partition {sorted(unknown)} in {topic}")
            start.update(given)
        elif from_time is not None:
            start = finder.offsets_for_time(from_time)
        # Stop at what the topic holds now (or at --until-time), so a replay is a fixed set of
        # messages and its outputs can be compared byte for byte.
        end = finder.offsets_for_time(until_time) if until_time else finder.end_offsets()
    finally:  # an OffsetError is a UserError: one line
        finder.close()
    event(log, "replay", start=start, end=end)
    cfg = _flow_config(args, args.brokers, start_offsets=start, end_offsets=end)
    cfg.flow = replace(cfg.flow, recovery=True)
    with (writer_lock(args.data_dir, process_id), _metrics_only(args),
          ProgressDisplay(every=args.settings.flow.progress_seconds)):
        run(cfg, process_id=process_id, addresses=addresses)
    return 0


def _has_outputs(data_dir: Path) -> bool:
    """Sealed hours, dead letters or chunks of open hours: what a fresh data dir lacks."""
    return data_dir.is_dir() and any(
        next(data_dir.glob(pattern), None) is not None
        for pattern in ("*/*/*_IDs.txt.xz", "_deadletter/*/*", "_work/chunks/*/*/*"))


def archive_files(root: Path) -> list[Path]:
    """The raw archive of a data dir, hour after hour across platforms.

    Time order matters: the dataflow's clock is per Kafka partition and shared by platforms,
    so an hour read after a later one of another platform would count as late.
    """
    from shoal.formats.shoal_archive import SUFFIX

    files = list(root.glob(f"*/*/*{SUFFIX}"))
    # "YYYY-mm-dd_hh[b]_raw..." sorts in time order (the repeated autumn hour's "b" too).
    return sorted(files, key=lambda p: (p.name, p.parent.parent.name))


def _replay_archive(args: argparse.Namespace) -> int:
    """Rebuild a data dir from another's raw archive, through an embedded broker.

    Every line goes out once per collector that delivered it, with its format, retrieval
    time, lateness and exact payload, hour by hour (each hour acknowledged before the next is
    sent), then the dataflow reads it all like a replay of the topic: with the original's
    ``[flow]`` settings (tz, partition_by, lateness), the hourly files come out the same,
    byte for byte.
    """
    from connectors.collect.files import collect_files
    from connectors.kafka.broker import EmbeddedBroker
    from connectors.kafka.offsets import OffsetFinder
    from connectors.kafka.publisher import Publisher, ensure_topics
    from flows.ingest import run
    from shoal.formats.shoal_archive import NAME

    root: Path = args.from_archive
    files = archive_files(root)
    if not files:
        raise UserError(f"no raw archive in {root} (no */*/*_raw.jsonl.xz)")
    settings: Settings = args.settings
    make_data_dir(args.data_dir)
    work = args.data_dir / "_work"
    work.mkdir(exist_ok=True)
    with writer_lock(args.data_dir), EmbeddedBroker(log=work / "broker.log") as broker:
        ensure_topics(broker.bootstrap, settings.kafka.partitions, settings.kafka.topic)
        publishers: dict[str, Publisher] = {}

        def publisher_for(name: str) -> Publisher:
            pub = publishers.get(name)
            if pub is None:
                # A spool of its own: leftovers of a live collector of the same name must not
                # be delivered into the rebuild.
                pub = publishers[name] = Publisher.for_settings(
                    broker.bootstrap, name, settings.kafka,
                    spool_dir=work / "archive-spool" / str(len(publishers)))
            return pub

        try:
            with _progress() as progress:
                task = progress.add_task(f"archive: {root}", total=len(files))
                for path in files:
                    collect_files([path], publisher_for("archive"), NAME,
                                  publisher_for=publisher_for)
                    for pub in publishers.values():
                        pub.flush()
                    progress.advance(task)
        finally:
            for pub in publishers.values():
                pub.close()
        finder = OffsetFinder(broker.bootstrap, settings.kafka.topic)
        try:
            end = finder.end_offsets()
            start = {p: finder.bounds(p)[0] for p in finder.partitions()}
        finally:
            finder.close()
        event(log, "replay", archive=str(root), files=len(files), end=end)
        cfg = _flow_config(args, broker.bootstrap, start_offsets=start, end_offsets=end)
        cfg.flow = replace(cfg.flow, recovery=False)
        with _metrics_only(args), ProgressDisplay(every=settings.flow.progress_seconds):
            run(cfg)
    return 0


BATCH_COLLECTORS = ("instagram", "tiktok", "images")
LIVE_COLLECTORS = ("twitter-sample", "twitter-search", "bluesky", "mastodon", *BATCH_COLLECTORS)


def _run_live(args: argparse.Namespace) -> int:
    """A long-running collector, with /metrics and /healthz when asked for."""
    with _metrics_only(args):
        if args.kind not in BATCH_COLLECTORS:
            result: int = args.live_run(args)
            return result
        # A batch (targets one after the other) gets a bar on a terminal; see BatchDisplay.
        args.progress = BatchProgress(args.kind)
        with BatchDisplay(args.progress):
            result = args.live_run(args)
        return result


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(collectors: bool = True) -> argparse.ArgumentParser:
    """Every command; the flags of declared options come from ``shoal.options``.

    ``collectors=False`` leaves out the live collectors' parsers under ``collect``: building
    them imports their modules (aiohttp, instaloader, twarc, Kafka), about half of every
    start, which a command other than ``collect`` never uses.
    """
    parser = _Parser(
        prog="shoal",
        description="Collect social-media posts through Kafka into hourly files and DuckDB.",
    )
    parser.add_argument("--version", action="version", version=f"shoal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("up", help="embedded broker + collectors + dataflow in one process tree")
    p.add_argument("--source", action="append", metavar="SPEC",
                   help="[NAME=]KIND[:ARG], repeatable (default demo): file:PATH (a file or "
                   "a directory of them; file:PATH@NAME too), demo[:N], twitter-search:QUERY, "
                   "twitter-sample, bluesky, mastodon:HOST, instagram:NAME,..., "
                   "images:KEYWORD, tiktok:TAG,... (Research API; credentials from the "
                   "environment or [collectors]); NAME is the collector's name "
                   "(default --collector for files, the kind for the others)")
    p.add_argument("--format", default=None, help="input format (default: detected per file)")
    p.add_argument("--strict", action="store_true",
                   help="exit 2 if a source could not be read (the others are collected "
                   "anyway)")
    add_options(p, "up")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("collect", help="publish posts to Kafka from a collector")
    kinds = p.add_subparsers(dest="kind", metavar="NAME", required=True)
    f = kinds.add_parser("file", help="replay export files")
    f.add_argument("paths", nargs="+", help="export files, or directories of them")
    f.add_argument("--format", default=None)
    f.add_argument("--strict", action="store_true",
                   help="exit 2 if a file could not be read (the others are collected anyway)")
    add_options(f, "collect file")
    f.set_defaults(func=cmd_collect)
    if collectors:
        from connectors.collect.commands import add_parsers as add_live_parsers

        add_live_parsers(kinds)  # twitter-sample, twitter-search, bluesky, mastodon, ...
        for name in LIVE_COLLECTORS:
            live = kinds.choices[name]
            add_options(live, f"collect {name}")
            live.set_defaults(func=_run_live)

    p = sub.add_parser("process", help="run the dataflow against any Kafka")
    _cluster_flags(p)
    add_options(p, "process")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("broker", help="run the embedded broker in the foreground")
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("query", help="SQL over every sealed hour")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("sql")
    add_options(p, "query")
    p.set_defaults(func=cmd_query)

    fetch_cmd.add_parser(sub)
    shoal_config.add_parser(sub)
    from shoal.app import report_cmd, serve_cmd

    report_cmd.add_parser(sub)
    serve_cmd.add_parser(sub)

    p = sub.add_parser("replay", help="reprocess the topic into a fresh data dir")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="(default)")
    start.add_argument("--from-offset", metavar="P:O,...", help="start offsets per partition")
    start.add_argument("--from-time", metavar="ISO8601", help="first message at or after")
    p.add_argument("--until-time", metavar="ISO8601", help="stop before messages from then on")
    start.add_argument("--from-archive", metavar="DIR", type=Path, default=None,
                       help="rebuild from the raw archive of data dir DIR (its "
                       "*_raw.jsonl.xz files) on an embedded broker, not from Kafka")
    _cluster_flags(p)
    add_options(p, "replay")
    p.set_defaults(func=cmd_replay)
    return parser


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--addresses", metavar="HOST:PORT,...", default=None,
                   help="every process of a Bytewax cluster, this one included (all of them "
                        "share DIR and Kafka's partitions; start them together)")
    p.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="this process's index in --addresses")


def _interrupted(exc: BaseException) -> bool:
    return any(isinstance(e, KeyboardInterrupt) or str(e).endswith("signal received")
               for e in chain(exc))


def _stop_on_sigterm() -> list[int]:
    """SIGTERM (``kill``, systemd, docker stop) stops a command the way Ctrl-C does: the
    dataflow ends its epoch, seals under way finish, helpers exit, nothing is half-written.
    Returns the list that records which signal came, for the exit code."""
    got: list[int] = []

    def on_term(signum: int, frame: Any) -> None:
        got.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    return got


def _said_stopped(stopped: list[int]) -> int:
    """One line; exit 130 after Ctrl-C, 143 after SIGTERM (128 + the signal number)."""
    if stopped:
        print("shoal: stopped (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    print("shoal: interrupted", file=sys.stderr)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(collectors="collect" in argv)
    try:
        settings = shoal_config.prepare(parser, argv)
    except UserError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        args.settings = shoal_config.resolve(args, settings)
    except UserError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return 2
    setup(getattr(args, "log_level", "info"))
    shoal_config.warn_secret_flags(args.settings)
    tune_gc()
    stopped = _stop_on_sigterm()
    try:
        result: int = args.func(args)
        return result
    except UserError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _said_stopped(stopped)
    except Exception as exc:  # anything else is still one line, with its kind
        if _interrupted(exc):  # Bytewax's own word for Ctrl-C or SIGTERM
            return _said_stopped(stopped)
        from connectors.store.disk import disk_trouble_in

        trouble = disk_trouble_in(exc, getattr(args, "data_dir", None))
        if trouble is not None:  # a full disk or an unwritable data dir: say so, plainly
            print(f"shoal: error: {trouble}", file=sys.stderr)
            return 1
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"shoal: error: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    except BaseException as exc:
        # Bytewax's Rust side raises pyo3's PanicException (a BaseException), e.g. when a
        # process of a cluster disappears; SystemExit and the like keep their meaning.
        if type(exc).__name__ != "PanicException":
            raise
        if "thread panic" in str(exc):  # timely's send/receive threads lost their peer
            print("shoal: error: lost contact with another process of the cluster; restart "
                  "all of them together", file=sys.stderr)
        else:
            print(f"shoal: error: Bytewax panicked: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
