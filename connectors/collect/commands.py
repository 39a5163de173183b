"""The live collectors' commands, ``shoal collect NAME``: each collector's own arguments."""

from __future__ import annotations

from typing import Any


def add_parsers(collect_sub: Any) -> None:
    """Register ``twitter-sample``, ``twitter-search``, ``bluesky``, ``mastodon``,
    ``instagram``, ``images`` and ``tiktok``.

    Each parser gets ``live_run`` as a default: ``args.live_run(args)`` runs it.
    """
    from connectors.collect import bluesky, images, instagram, mastodon, tiktok, twitter

    twitter.add_parsers(collect_sub)
    bluesky.add_parser(collect_sub)
    mastodon.add_parser(collect_sub)
    instagram.add_parser(collect_sub)
    images.add_parser(collect_sub)
    tiktok.add_parser(collect_sub)
