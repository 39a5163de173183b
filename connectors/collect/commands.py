"""The live collectors' commands: ``shoal collect NAME`` and ``python -m connectors.collect``."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(collect_sub: Any) -> None:
    """Register ``twitter-sample``, ``twitter-search``, ``bluesky`` and ``mastodon``.

    Each parser gets ``live_run`` as a default: ``args.live_run(args)`` runs it.
    """
    from connectors.collect import bluesky, mastodon, twitter

    twitter.add_parsers(collect_sub)
    bluesky.add_parser(collect_sub)
    mastodon.add_parser(collect_sub)


def main(argv: list[str] | None = None) -> int:
    """``python -m connectors.collect NAME ...``: the commands without the rest of the CLI."""
    from shoal.logs import setup

    parser = argparse.ArgumentParser(prog="python -m connectors.collect")
    add_parsers(parser.add_subparsers(dest="kind", required=True))
    args = parser.parse_args(argv)
    setup(args.log_level)
    result: int = args.live_run(args)
    return result
