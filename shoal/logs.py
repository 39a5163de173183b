"""Structured logs: one JSON object per line on stderr, so services can be grepped and shipped."""

from __future__ import annotations

import contextlib
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info).splitlines()[-1]
        try:
            return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # a str with lone surrogates (bytes that were not UTF-8)
            return orjson.dumps(_utf8(out), default=str,
                                option=orjson.OPT_NON_STR_KEYS).decode()


def _utf8(value: Any) -> Any:
    """``value`` with every str made UTF-8-safe (a lone surrogate as ``\\udce9``): a log
    line about a bad input must not fail on the input, and a failing line is a traceback
    on stderr instead of the line."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_utf8(k): _utf8(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_utf8(v) for v in value]
    return value


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # kafka-python logs every connection attempt of its retry loops (twenty lines for one
    # unreachable broker); shoal says what matters itself, in one line. Debug shows them.
    logging.getLogger("kafka").setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)


def relay(line: str) -> None:
    """Write a log line another process printed (a child collector's JSON line) where our own
    log lines go: the same stream, so a live display stays whole."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            with handler.lock or contextlib.nullcontext():
                handler.stream.write(line if line.endswith("\n") else line + "\n")
                handler.flush()
            return
    sys.stderr.write(line)


def event(logger: logging.Logger, msg: str, **fields: Any) -> None:
    logger.info(msg, extra={"fields": fields})
