"""Helpers for the live-connector tests: a local server thread, a Kafka reader, SIGTERM on cue.

The connectors under test run in the main thread, where signals are delivered, and are
stopped as systemd stops them; everything they talk to runs beside them. The fixtures built
on these (``brokers``, ``tap``, ``debug_logs``) are in conftest.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from kafka import KafkaConsumer, TopicPartition

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import DEADLETTER_TOPIC, POSTS_TOPIC, ensure_topics
from shoal.app.cli import build_parser
from shoal.app.config import load, resolve
from shoal.logs import JsonFormatter
from shoal.model import DEADLETTER_FORMAT


class LocalServer:
    """An aiohttp app on 127.0.0.1 in a thread of its own: the collector under test keeps the
    main thread, where signals are delivered."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self.stopping = False
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> LocalServer:
        self._thread.start()
        self.call(self._start())
        return self

    async def _stop(self) -> None:
        await self._runner.cleanup()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


class KafkaTap:
    """What collectors published, read back from the beginning of both topics."""

    def __init__(self, brokers: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False)
        parts = [TopicPartition(POSTS_TOPIC, p)
                 for p in sorted(self.consumer.partitions_for_topic(POSTS_TOPIC) or ())]
        parts += [TopicPartition(DEADLETTER_TOPIC, p)
                  for p in sorted(self.consumer.partitions_for_topic(DEADLETTER_TOPIC) or ())]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning()
        self.all_posts: list[dict[str, Any]] = []
        self.all_dead: list[dict[str, Any]] = []

    def poll(self) -> None:
        for batch in self.consumer.poll(timeout_ms=100).values():
            for m in batch:
                if m.topic == POSTS_TOPIC:
                    headers = {k: v.decode() for k, v in m.headers}
                    if headers.get("format") == DEADLETTER_FORMAT:
                        continue  # the copy the dataflow files; the tap reads the dead topic
                    self.all_posts.append({"key": m.key.decode(), "payload": json.loads(m.value),
                                           **headers})
                else:
                    self.all_dead.append(json.loads(m.value))

    def posts(self, collector: str) -> list[dict[str, Any]]:
        return [p for p in self.all_posts if p["collector"] == collector]

    def dead(self, collector: str) -> list[dict[str, Any]]:
        return [d for d in self.all_dead if d["collector"] == collector]

    def settle(self, seconds: float = 1.0) -> None:
        """Read until nothing new came for ``seconds``."""
        quiet_since = time.monotonic()
        seen = len(self.all_posts) + len(self.all_dead)
        while time.monotonic() - quiet_since < seconds:
            self.poll()
            now = len(self.all_posts) + len(self.all_dead)
            if now != seen:
                seen, quiet_since = now, time.monotonic()

    def close(self) -> None:
        self.consumer.close()


@contextlib.contextmanager
def sigterm_when(condition: Callable[[], bool], timeout: float = 30.0) -> Iterator[threading.Event]:
    """SIGTERM ourselves once ``condition()`` holds (or at ``timeout``), as systemd would.

    The condition runs in the watcher thread. A no-op handler stands in around the test so a
    signal landing after the collector restored the handlers cannot kill pytest.
    """
    done, fired = threading.Event(), threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline and not condition():
            time.sleep(0.05)
        if not done.is_set():
            fired.set()
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield fired
    finally:
        done.set()
        watcher.join(5)
        signal.signal(signal.SIGTERM, previous)


def live_args(*argv: str) -> argparse.Namespace:
    """``shoal collect NAME ...`` parsed by the real CLI, settings resolved as ``main`` does."""
    args = build_parser().parse_args(["collect", *argv])
    args.settings = resolve(args, load(env={}, search=False))
    return args


def collector_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every captured record as the JSON line it would be on stderr."""
    fmt = JsonFormatter()
    return [fmt.format(r) for r in caplog.records]


@contextlib.contextmanager
def debug_logging(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything down to debug (where a leaked token would hide), minus Kafka's chatter."""
    caplog.set_level(logging.DEBUG)
    kafka = logging.getLogger("kafka")
    level = kafka.level
    kafka.setLevel(logging.WARNING)
    try:
        yield caplog
    finally:
        kafka.setLevel(level)


@contextlib.contextmanager
def running_broker() -> Iterator[str]:
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 4)
        yield broker.bootstrap


@contextlib.contextmanager
def tapping(brokers: str) -> Iterator[KafkaTap]:
    reader = KafkaTap(brokers)
    try:
        yield reader
    finally:
        reader.close()


def logged(caplog: pytest.LogCaptureFixture, msg: str) -> list[dict[str, Any]]:
    return [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == msg]


def finish(proc: subprocess.Popen[bytes], timeout: float = 90) -> tuple[int, list[dict[str, Any]]]:
    """A collector process's exit code and its stderr, each JSON log line parsed (other
    lines as ``{"msg": line}``)."""
    _, err = proc.communicate(timeout=timeout)
    lines: list[dict[str, Any]] = []
    for line in err.decode().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"msg": line})
    return proc.returncode, lines
