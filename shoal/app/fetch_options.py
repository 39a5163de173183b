"""The fetch engine's command-line knobs: one set for ``shoal fetch`` and the dataflow."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from shoal.fetch.policy import FetchConfig


def add_fetch_options(p: argparse.ArgumentParser) -> None:
    """Politeness and safety options, the same wherever media are fetched."""
    g = p.add_argument_group("media fetching")
    g.add_argument("--domain-parallelism", type=int, default=2, metavar="P",
                   help="requests in flight per host at most (default: 2)")
    g.add_argument("--throttle", type=float, default=0.2, metavar="T",
                   help="seconds between two request starts to one host (default: 0.2)")
    g.add_argument("--domain-key", choices=("host", "domain"), default="host",
                   help="limit per host name, or per registered domain (default: host)")
    g.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="total seconds for one request, body included (default: 300)")
    g.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")
    g.add_argument("--read-timeout", type=float, default=30.0, metavar="S",
                   help="seconds without a byte from the server (default: 30)")
    g.add_argument("--retries", type=int, default=3, metavar="N",
                   help="retries of timeouts, resets and 5xx/429 (default: 3)")
    g.add_argument("--max-bytes", type=int, default=200 * 1024 * 1024, metavar="N",
                   help="larger responses are cut and not stored (default: 200 MB)")
    g.add_argument("--allow-private-networks", action="store_true",
                   help="allow loopback and private addresses (refused by default)")
    g.add_argument("--host-limit", action="append", default=[], metavar="HOST=P,T",
                   help="per-host override, e.g. pbs.twimg.com=8,0 (repeatable)")
    g.add_argument("--folder-strategy", default="content", metavar="STRATEGY",
                   help="content (DIR/media/ab/cd/<sha256>.<ext>, the default), flat, "
                   "hostname, or prefix-N (N hex digits of the content hash)")
    g.add_argument("--filename-template", default=None, metavar="TEMPLATE",
                   help="file name from {platform} {post_id} {position} {ext} {sha256} {host} "
                   "{date} {hour} {query} {collector}")


def host_limits(specs: Sequence[str]) -> dict[str, tuple[int, float]]:
    out: dict[str, tuple[int, float]] = {}
    for spec in specs:
        host, _, limits = spec.partition("=")
        p, _, t = limits.partition(",")
        try:
            out[host.strip().lower()] = (int(p), float(t or 0))
        except ValueError:
            raise ValueError(
                f"bad --host-limit {spec!r}: use HOST=P,T (e.g. pbs.twimg.com=8,0)") from None
    return out


def fetch_config(args: argparse.Namespace, **extra: Any) -> FetchConfig:
    """The FetchConfig the options ask for; ``extra`` adds what a command knows besides.

    Raises ValueError with a one-line reason for a bad value.
    """
    per_host = host_limits(args.host_limit or [])
    per_host.update(extra.pop("per_host", {}))
    return FetchConfig(
        domain_parallelism=args.domain_parallelism,
        throttle=args.throttle,
        domain_key=args.domain_key,
        retries=args.retries,
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
        total_timeout=args.timeout,
        max_bytes=args.max_bytes,
        allow_private_networks=args.allow_private_networks,
        folder_strategy=args.folder_strategy,
        filename_template=args.filename_template,
        per_host=per_host,
        **extra,
    )
