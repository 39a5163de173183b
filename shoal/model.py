"""The records that cross module boundaries.

Everything here is plain data: readers (``shoal.formats``) turn input files into
:class:`RawPost` or :class:`DeadLetter`; normalisers (``shoal.normalise``) turn one
self-contained post payload into a :class:`Normalised` row set. Keeping these small and
picklable matters because Bytewax snapshots whatever the dataflow holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Engagement counts of a post, in the post columns (see POST_COLUMNS).
ENGAGEMENT_COLUMNS: tuple[str, ...] = (
    "public_metrics.retweet_count",
    "public_metrics.reply_count",
    "public_metrics.like_count",
    "public_metrics.quote_count",
    "public_metrics.impression_count",
)

# Columns of the hourly ``*_tweets.csv.xz`` / ``*_posts.csv.xz`` files, in order. The first
# twenty are the ones the 2021 sampled-stream pipeline wrote; the lab's scripts read them by name.
POST_COLUMNS: tuple[str, ...] = (
    "id",
    "conversation_id",
    "author_id",
    "created_at",
    "retrieved_at",
    "source",
    "lang",
    "text",
    "reference_type",
    "referenced_tweet_id",
    "author.created_at",
    "author.location",
    "author.name",
    "author.username",
    "author.verified",
    "author.protected",
    "author.public_metrics.followers_count",
    "author.public_metrics.following_count",
    "author.public_metrics.tweet_count",
    "author.public_metrics.listed_count",
    "hashtags",
    "media_keys",
    "media_types",
    "media_urls",
    "collectors",
    # Appended in 2025 (after the seed layout, so scripts reading columns by position keep
    # working): what researchers filter on, named as twarc-csv names them where it has them.
    # Counts are the platform's at retrieval time, empty where it gives none: on Bluesky,
    # Mastodon and TikTok "retweet" is a repost/boost/share and "like" a like/favourite/digg,
    # "impression" a view or play. Lists are ``|``-joined, in the post's order, each once.
    *ENGAGEMENT_COLUMNS,
    "mentions",  # usernames (Twitter, Mastodon: user@host; Bluesky: the handle as typed)
    "urls",  # expanded links, media links included (as twitwi's ``links``)
    "domains",  # their hosts, lower-case, without ``www.``
    "place.id",
    "place.full_name",
    "place.country_code",
    "place.type",
    "geo.lat",  # the post's exact point, when its author shared one
    "geo.lng",
    # The text a reader sees in full: a retweet's is ``RT @user: `` and the whole retweeted
    # text (the API truncates ``text`` to 140 characters), a long post's its whole note.
    "full_text",
    # What found the post when a collector searched: the keyword, hashtag or profile (shoal's
    # image, TikTok and Instagram collectors); empty for streams and exports.
    "query",
)

# Post formats made by shoal's own searching collectors: their payload's ``query`` says what
# found the post, and becomes the post's ``query`` column. ``tiktok-item`` (a web itemStruct,
# what yt-dlp's listings and Zeeschuimer hold) is among them: TikTok's own items have no
# top-level ``query``, so only a collector that found the item can have put one there.
SEARCH_FORMATS = frozenset({"image-search", "tiktok-research", "tiktok-item",
                            "instagram-media"})

# Columns of ``*_users.csv.xz``: one row per author of the hour, the newest stats win.
USER_COLUMNS: tuple[str, ...] = (
    "id",
    "username",
    "name",
    "created_at",
    "location",
    "description",
    "verified",
    "protected",
    "followers_count",
    "following_count",
    "tweet_count",
    "listed_count",
    "retrieved_at",
)

# Columns of the ``media`` rows extracted from posts (before any fetching).
MEDIA_COLUMNS: tuple[str, ...] = (
    "post_id",
    "platform",
    "position",
    "type",
    "url",
    "alternatives",
    "media_key",
    "source_post_id",
)

# What fetching adds to a media row; the hour's ``*_media.csv.xz`` and the ``media`` view have
# MEDIA_COLUMNS then these. ``shoal.fetch.policy.FetchResult.row`` fills them.
FETCH_COLUMNS: tuple[str, ...] = (
    "final_url",
    "http_status",
    "error",
    "attempts",
    "bytes",
    "sha256",
    "mimetype",
    "path",
    "fetched_at",
    "phash",  # added after the others, so the columns before it keep their places
    # How the file's URL was found when the media URL could not be downloaded as it was
    # (a TikTok page, an expired signature): shoal.fetch.policy.FetchResult.resolved. Last,
    # like phash: older hours and Parquet partitions without it still read (empty/NULL).
    "resolved",
)
MEDIA_FILE_COLUMNS: tuple[str, ...] = MEDIA_COLUMNS + FETCH_COLUMNS

PLATFORMS: tuple[str, ...] = ("twitter", "bluesky", "mastodon", "tiktok", "instagram", "images")


@dataclass(slots=True)
class RawPost:
    """One post as a reader found it, ready to be published to ``shoal.posts``.

    ``payload`` is self-contained: for Twitter v2 the expansions the post needs (author,
    media, referenced tweets) are inlined the way ``twarc2 flatten`` does, so that a
    consumer never needs the page it came from.
    """

    platform: str
    id: str
    format: str
    payload: dict[str, Any]
    source: str = ""  # where it came from: "path:line" or "topic/partition/offset"
    # Set by the raw-archive reader (``shoal.formats.shoal_archive``) only: the payload's
    # exact bytes (published as they are, not re-encoded), every collector that delivered it
    # (one message each), the retrieval time its rows were made with, and whether it was late.
    raw: bytes | None = None
    collectors: tuple[str, ...] = ()
    retrieved_at: str = ""
    late: bool = False

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.id}"


# The ``format`` header of a dead letter a collector sends through the posts topic.
DEADLETTER_FORMAT = "shoal-deadletter"
# The topic every dead letter is also published to, by collectors and by the dataflow.
DEADLETTER_TOPIC = "shoal.deadletter"
# What a dead letter's message keeps of a record too large to keep whole: Kafka refuses a
# message over its limit, and the letter is about the record, not a copy of it.
DEAD_RAW_HEAD = 64 * 1024


@dataclass(slots=True)
class DeadLetter:
    """An input that could not become a post; kept with the reason, never dropped."""

    reason: str
    source: str
    raw: bytes | str = b""
    format: str = ""
    collector: str = ""
    # When it reached shoal, as the data says (the Kafka message time), ISO 8601 UTC.
    at: str = ""
    # Set when the collector published it to shoal.deadletter already.
    published: bool = False
    raw_bytes: int = 0  # the record's size, when ``raw`` keeps only its head
    # Where the record came from before Kafka (the file and line a collector read it at),
    # for a letter the dataflow writes: its ``source`` is the message's topic/partition/offset.
    input: str = ""

    def as_json(self) -> dict[str, Any]:
        raw: str
        if isinstance(self.raw, bytes):
            try:
                raw = self.raw.decode("utf-8")
            except UnicodeDecodeError:
                raw = self.raw.decode("utf-8", errors="backslashreplace")
        else:
            raw = self.raw
        return {
            "reason": self.reason,
            "source": self.source,
            "format": self.format,
            "collector": self.collector,
            "at": self.at,
            "raw": raw,
            **({"raw_bytes": self.raw_bytes} if self.raw_bytes else {}),
            **({"input": self.input} if self.input else {}),
        }

    def as_message(self) -> dict[str, Any]:
        """:meth:`as_json` for a Kafka message: ``raw`` cut to its head when it is longer than
        :data:`DEAD_RAW_HEAD`, with ``raw_bytes`` saying how long it was."""
        rec = self.as_json()
        if len(rec["raw"]) > DEAD_RAW_HEAD:
            rec["raw_bytes"] = self.raw_bytes or len(self.raw)
            rec["raw"] = rec["raw"][:DEAD_RAW_HEAD]
        return rec


@dataclass(slots=True)
class Control:
    """A non-post line of a stream archive (delete, limit, warning ...): counted, not kept."""

    kind: str
    source: str


@dataclass(slots=True)
class MediaRef:
    """One media item of a post, at its position in the post."""

    post_id: str
    platform: str
    position: int
    type: str  # photo | video | gif | audio | thumbnail | unknown
    url: str
    alternatives: tuple[str, ...] = ()
    media_key: str = ""
    # The id of the post that really carries the media (a retweet's original, a quote).
    source_post_id: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "post_id": self.post_id,
            "platform": self.platform,
            "position": self.position,
            "type": self.type,
            "url": self.url,
            "alternatives": "|".join(self.alternatives),
            "media_key": self.media_key,
            "source_post_id": self.source_post_id or self.post_id,
        }


@dataclass(slots=True)
class Normalised:
    """What the dataflow keeps of one post: its CSV row, its author, its media."""

    platform: str
    id: str
    created_at: datetime  # timezone-aware, UTC
    post: dict[str, str]  # POST_COLUMNS minus "collectors", all values already strings
    user: dict[str, str] | None = None  # USER_COLUMNS, strings
    media: list[MediaRef] = field(default_factory=list)
    unresolved_media_keys: tuple[str, ...] = ()


class BadPost(ValueError):
    """Raised by normalisers for a payload that cannot be a post; the message is the reason."""
