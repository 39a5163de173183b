"""After-seal hooks: run a command per sealed file (upload to OSF, rsync to a backup...).

A template is split into arguments with shlex *before* the fields are filled in, and the
result runs without a shell, so a post-derived or hostile file name always stays one literal
argument. Every job is appended to a JSON-lines queue file under the data dir before it is
queued in memory, and marked done afterwards: a restart re-runs whatever had not finished,
and a burst larger than the in-memory queue waits in the file instead of blocking the
dataflow. Failures are retried with exponential backoff a bounded number of times; a job
given up is copied to ``hooks-failed.jsonl`` for a person to look at.
"""

from __future__ import annotations

import logging
import os
import queue
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from connectors.ops import metrics
from connectors.store.disk import atomic_write
from connectors.store.layout import posts_word
from shoal.templates import HOOK_FIELDS, check_hook_template

log = logging.getLogger("shoal.hooks")

QUEUE_FILE = "_work/hooks-queue.jsonl"
FAILED_FILE = "_work/hooks-failed.jsonl"


def render(template: str, fields: Mapping[str, str]) -> list[str]:
    """The argv of one run: each field value lands inside exactly one argument."""
    check_hook_template(template)
    return [token.format_map(fields) for token in shlex.split(template)]


def sealed_files(data_dir: Path, summary: Any, kinds: Iterable[str] = ()) -> list[dict[str, str]]:
    """The fields of every file a sealed hour (an HourSummary) has on disk, report included."""
    wanted = set(kinds)
    folder = data_dir / summary.platform / summary.day
    stem = f"{summary.day}_{summary.label}"
    candidates = [
        ("IDs", folder / f"{stem}_IDs.txt.xz"),
        (posts_word(summary.platform), folder / f"{stem}_{posts_word(summary.platform)}.csv.xz"),
        ("users", folder / f"{stem}_users.csv.xz"),
        ("media", folder / f"{stem}_media.csv.xz"),
        ("report", folder / f"{summary.day}_report.txt"),
    ]
    out = []
    for kind, path in candidates:
        if (wanted and kind not in wanted) or not path.is_file():
            continue
        out.append({
            "path": str(path.resolve()),
            "relpath": path.relative_to(data_dir).as_posix(),
            "name": path.name,
            "day": summary.day,
            "hour": summary.label,
            "platform": summary.platform,
            "kind": kind,
        })
    return out


class HookRunner:
    """Runs hook jobs one at a time on a worker thread; see the module doc for guarantees."""

    def __init__(
        self,
        data_dir: Path,
        commands: Sequence[str],
        *,
        kinds: Iterable[str] = (),
        attempts: int = 5,
        backoff: float = 10.0,
        max_backoff: float = 600.0,
        timeout: float = 3600.0,
        queue_size: int = 1000,
    ) -> None:
        for template in commands:
            check_hook_template(template)
        self.data_dir = data_dir
        self.commands = list(commands)
        self.kinds = tuple(kinds)
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.queue_path = data_dir / QUEUE_FILE
        self.failed_path = data_dir / FAILED_FILE
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(max(1, queue_size))
        self._lock = threading.Lock()  # the queue file and the counters below
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._overflow = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retrying = False  # the worker waits out a failed job's backoff

    @classmethod
    def from_settings(cls, hooks: Any, data_dir: Path) -> HookRunner | None:
        """Built from the [hooks] section; None when no command is configured."""
        if not hooks.commands:
            return None
        return cls(data_dir, hooks.commands, kinds=hooks.kinds, attempts=hooks.attempts,
                   backoff=hooks.backoff_seconds, max_backoff=hooks.max_backoff_seconds,
                   timeout=hooks.timeout_seconds, queue_size=hooks.queue_size)

    # -- life cycle

    def start(self) -> None:
        """Pick up what a previous run left pending, then start the worker."""
        with self._lock:
            pending = self._read_pending()
            self._rewrite(pending)
            self._pending = len(pending)
            self._overflow = False
            for job in pending:
                if not self._offer(job):
                    break
        metrics.hooks_pending(self._pending)
        if pending:
            log.info("hooks resumed", extra={"fields": {"pending": len(pending)}})
        self._thread = threading.Thread(target=self._loop, name="shoal-hooks", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Finish what can run now, persist the rest, and say which.

        Jobs ready to run (typically those of the last hours sealed before ``--idle-exit``)
        get up to ``timeout`` seconds to finish. A job waiting to be retried is not waited
        for: its backoff may be minutes. Whatever is still pending then stays in the queue
        file, and the next ``shoal up`` or ``shoal process`` on this data dir runs it; the
        exit never drops a hook silently, it logs how many wait and where.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending and not self._retrying and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle.wait(min(left, 0.1))
        retrying = self._retrying  # stopping ends the wait, so look before
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._pending:
            log.warning("hooks pending at exit", extra={"fields": {
                "pending": self._pending, "retrying": retrying,
                "kept_in": str(self.queue_path),
                "next": "run at the next start of shoal up or shoal process on this data dir"}})
        else:
            log.info("hooks done at exit", extra={"fields": {"pending": 0}})

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is pending (done or given up)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    @property
    def pending(self) -> int:
        return self._pending

    # -- inputs

    def on_sealed(self, summary: Any) -> int:
        """Queue every command for every file of a sealed hour; returns the number of jobs."""
        n = 0
        for fields in sealed_files(self.data_dir, summary, self.kinds):
            n += self.submit(fields)
        return n

    def submit(self, fields: Mapping[str, str]) -> int:
        """Queue every command for one file; never blocks on the worker."""
        full = {k: str(fields.get(k, "")) for k in HOOK_FIELDS}
        jobs = [{"op": "add", "id": uuid.uuid4().hex, "argv": render(t, full), "fields": full,
                 "at": round(time.time(), 3)} for t in self.commands]
        if not jobs:
            return 0
        with self._lock:
            self._append(self.queue_path, jobs, sync=True)
            self._pending += len(jobs)
            for job in jobs:
                if self._overflow or not self._offer(job):
                    break
        metrics.hooks_pending(self._pending)
        return len(jobs)

    # -- worker

    def _offer(self, job: dict[str, Any]) -> bool:
        """Put in memory if there is room; otherwise the job waits in the file."""
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            if not self._overflow:
                log.warning("hook queue full; jobs wait in the queue file",
                            extra={"fields": {"size": self._queue.maxsize}})
            self._overflow = True
            return False

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                self._refill()
                continue
            ok, attempts = self._run(job)
            if ok is None:  # stopping: leave it pending in the file
                return
            with self._lock:
                self._append(self.queue_path, [{"op": "done", "id": job["id"], "ok": ok,
                                                "attempts": attempts}], sync=False)
                if not ok:
                    self._append(self.failed_path, [{**job, "op": "failed",
                                                     "attempts": attempts}], sync=True)
                self._pending -= 1
                if self._pending == 0:
                    self._rewrite([])  # keep the file small: nothing is pending
                    self._idle.notify_all()
            metrics.hooks_pending(self._pending)

    def _refill(self) -> None:
        """After an overflow, move jobs waiting in the file into the (now empty) memory queue."""
        with self._lock:
            if not self._overflow or not self._queue.empty():
                return
            self._overflow = False
            for job in self._read_pending():
                if not self._offer(job):
                    break

    def _run(self, job: dict[str, Any]) -> tuple[bool | None, int]:
        argv: list[str] = job["argv"]
        for attempt in range(1, self.attempts + 1):
            t0 = time.monotonic()
            error = ""
            try:
                proc = subprocess.run(argv, shell=False, stdin=subprocess.DEVNULL,
                                      capture_output=True, timeout=self.timeout,
                                      cwd=self.data_dir, check=False)
                if proc.returncode == 0:
                    metrics.hook_run("ok")
                    log.info("hook ok", extra={"fields": {
                        "argv": argv, "attempt": attempt,
                        "seconds": round(time.monotonic() - t0, 3)}})
                    return True, attempt
                tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
                error = f"exit {proc.returncode}: {' | '.join(tail)}"
            except subprocess.TimeoutExpired:
                error = f"timed out after {self.timeout:g} s"
            except OSError as exc:  # program missing, not executable...
                error = f"{type(exc).__name__}: {exc}"
            last = attempt == self.attempts
            metrics.hook_run("failed" if last else "retry")
            fields = {"argv": argv, "attempt": attempt, "of": self.attempts, "error": error}
            if last:
                log.error("hook given up", extra={"fields": fields})
                return False, attempt
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            log.warning("hook failed, retrying", extra={"fields": {**fields, "in": delay}})
            self._retrying = True
            try:
                if self._stop.wait(delay):
                    return None, attempt
            finally:
                self._retrying = False
        return False, self.attempts

    # -- queue file (callers hold the lock)

    def _read_pending(self) -> list[dict[str, Any]]:
        if not self.queue_path.is_file():
            return []
        jobs: dict[str, dict[str, Any]] = {}
        with open(self.queue_path, "rb") as fh:
            for line in fh:
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a line torn by a crash mid-write
                if rec.get("op") == "add" and isinstance(rec.get("argv"), list):
                    jobs[rec["id"]] = rec
                elif rec.get("op") == "done":
                    jobs.pop(rec.get("id"), None)
        return list(jobs.values())

    def _rewrite(self, jobs: list[dict[str, Any]]) -> None:
        atomic_write(self.queue_path, b"".join(orjson.dumps(j) + b"\n" for j in jobs))

    @staticmethod
    def _append(path: Path, records: list[dict[str, Any]], *, sync: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as fh:
            fh.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
