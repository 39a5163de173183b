"""Every setting of shoal, declared once.

One dataclass per section of ``shoal.toml``; one field per option, with its type, its default,
its help, the command-line flag that sets it and the commands that take that flag. From these
declarations alone come:

- the TOML and ``SHOAL_<SECTION>_<KEY>`` reading (``shoal.app.config``),
- the command-line flags of every command (``shoal.app.cli``),
- what the services act on: the dataflow reads :class:`FlowSettings` and
  :class:`MediaSettings` themselves (``flows.ingest.FlowConfig`` holds them), and the fetch
  engine's :class:`shoal.fetch.policy.FetchConfig` is made from :class:`MediaSettings` by
  matching names (:func:`shoal.fetch.policy.fetch_config`).

So an option cannot be parsed in one place and forgotten in another: there is no hand-kept map
between a setting and where it acts. (Wave 1 had one, and it silently missed all of
``[media]``.) This module is pure: declarations and small helpers, no I/O.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from shoal.templates import HOOK_KINDS

# Command names as the CLI spells them; ``collect`` covers every ``collect NAME``.
UP, PROCESS, REPLAY, QUERY, FETCH, COLLECT = "up", "process", "replay", "query", "fetch", "collect"
FLOW_COMMANDS = (UP, PROCESS, REPLAY)
READERS = (QUERY, "report", "serve")  # commands that read a data dir, never write one
SERVICES = (UP, PROCESS)  # long-running dataflows: alerts, hooks
LIVE = ("collect twitter-sample", "collect twitter-search", "collect bluesky", "collect mastodon",
        "collect instagram", "collect images", "collect tiktok")
KAFKA_CLIENTS = (PROCESS, REPLAY, COLLECT)
IG, TT, IM = "collect instagram", "collect tiktok", "collect images"


def opt(default: Any, help: str, *, flag: str | None = None, commands: tuple[str, ...] = (),
        invert: bool = False, choices: tuple[str, ...] | None = None, metavar: str | None = None,
        path: bool = False, env_aliases: tuple[str, ...] = (), mask: str | None = None,
        split: bool | str = True, per_command: dict[str, Any] | None = None,
        required: tuple[str, ...] = (), secret: bool | None = None) -> Any:
    """One option.

    ``flag`` is its command-line spelling (``--<section>-<key>`` when omitted) and
    ``commands`` the commands that take it (a prefix like ``collect`` covers its
    sub-commands). ``invert`` makes a true default a ``--no-...`` switch. ``path`` gives the
    flag a ``Path`` value. ``per_command`` overrides the default for some commands, and
    ``required`` names the commands that need a value (from the flag, the file or the
    environment). ``split`` (lists) says how an environment value is split: on commas (True), not at
    all (False), or on whitespace (``" "``, for items that hold commas themselves).
    ``secret`` overrides the guess from the name (``*_token``, ``*_key``...): a secret is
    masked, never echoed, gets a ``--FLAG-file`` twin and a warning when given as a flag.
    A list default is given as a tuple and copied for each instance.
    """
    meta = {"help": help, "flag": flag, "commands": commands, "invert": invert,
            "choices": choices, "metavar": metavar, "path": path, "env_aliases": env_aliases,
            "mask": mask, "split": split, "per_command": per_command or {},
            "required": required, "secret": secret}
    if isinstance(default, tuple):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class KafkaSettings:
    brokers: str = opt("localhost:9092", "Kafka bootstrap servers HOST:PORT[,...]",
                       flag="--brokers", commands=KAFKA_CLIENTS,
                       # not on replay: ``replay --from-archive`` runs its own embedded broker
                       required=(PROCESS, COLLECT))
    topic: str = opt("shoal.posts", "topic the collectors publish to and the dataflow reads",
                     flag="--topic", commands=(UP, *KAFKA_CLIENTS))
    partitions: int = opt(4, "partitions shoal creates the topic with (more = more processors)",
                          flag="--partitions", commands=(UP, PROCESS, COLLECT))
    deadletter_topic: bool = opt(True, "also publish dead letters to shoal.deadletter",
                                 flag="--no-deadletter-topic", invert=True,
                                 commands=(UP, *KAFKA_CLIENTS))
    max_message_bytes: int = opt(1_000_000, "largest record a collector publishes; a larger "
                                 "one becomes a dead letter keeping its head (keep it under "
                                 "the broker's message.max.bytes)", flag="--max-message-bytes",
                                 commands=(UP, COLLECT), metavar="BYTES")


@dataclass
class FlowSettings:
    data_dir: str = opt("", "where hourly files, the catalog and recovery state live",
                        flag="--data-dir", commands=(*FLOW_COMMANDS, *READERS), path=True,
                        required=(*FLOW_COMMANDS, *READERS))
    tz: str = opt("UTC", "zone naming days and hours (timestamps in the files stay UTC)",
                  flag="--tz", commands=(*FLOW_COMMANDS, "report day"))
    partition_by: str = opt("created", "hour of a post: its creation or its retrieval time",
                            flag="--partition-by", commands=FLOW_COMMANDS,
                            choices=("created", "retrieved"))
    lateness: float = opt(300.0, "seconds an hour stays open after the stream passed it",
                          flag="--lateness", commands=FLOW_COMMANDS, metavar="SECONDS")
    idle_exit: float | None = opt(None, "seal everything and exit once nothing arrived for "
                                  "this many seconds (unset: run until stopped)",
                                  flag="--idle-exit", commands=FLOW_COMMANDS, metavar="SECONDS")
    workers: int = opt(1, "Bytewax workers in the process", flag="--workers",
                       commands=FLOW_COMMANDS)
    seal_processes: int = opt(2, "helper processes sealing hours beside the dataflow "
                              "(0: inline)", flag="--seal-processes", commands=FLOW_COMMANDS,
                              metavar="N")
    seal_shards: int = opt(0, "sealing logics the hours are shared among, each with its own "
                           "helper processes, spread over the cluster's workers (0: one per "
                           "worker)", flag="--seal-shards", commands=FLOW_COMMANDS,
                           metavar="N")
    epoch_seconds: float = opt(2.0, "how often recovery state is snapshotted (bytewax -s)",
                               flag="--epoch-seconds", commands=FLOW_COMMANDS)
    recovery: bool = opt(True, "keep Bytewax recovery state (DIR/_recovery by default)",
                         flag="--no-recovery", invert=True, commands=(PROCESS,))
    # Not on `up`: its broker keeps nothing across runs, so it keeps no recovery state.
    recovery_dir: str = opt("", "Bytewax recovery partitions (bytewax -r; default "
                            "DIR/_recovery)", flag="--recovery-dir", commands=(PROCESS, REPLAY),
                            path=True)
    backup_seconds: float = opt(0.0, "keep superseded snapshots this long, for backups "
                                "(bytewax -b)", flag="--backup-seconds",
                                commands=(PROCESS, REPLAY))
    progress_seconds: float = opt(30.0, "how often a progress line is logged when stderr is "
                                  "not a terminal (a terminal gets a live display)",
                                  flag="--progress-seconds", commands=FLOW_COMMANDS,
                                  metavar="SECONDS")
    log_level: str = opt("info", "debug, info, warning or error", flag="--log-level",
                         commands=(*FLOW_COMMANDS, COLLECT),
                         choices=("debug", "info", "warning", "error"))


MEDIA_KINDS = ("photo", "video", "gif")


@dataclass
class MediaSettings:
    enabled: bool = opt(True, "download the images and videos of posts", flag="--no-media",
                        invert=True, commands=FLOW_COMMANDS)
    media_types: list[str] = opt(MEDIA_KINDS, "kinds of media the dataflow fetches: photo, "
                                 "video, gif", flag="--media-types", commands=FLOW_COMMANDS,
                                 metavar="KINDS", choices=MEDIA_KINDS)
    domain_parallelism: int = opt(2, "requests in flight per host at most",
                                  flag="--domain-parallelism", metavar="P",
                                  commands=(*FLOW_COMMANDS, FETCH))
    throttle: float = opt(0.2, "seconds between two request starts to one host",
                          flag="--throttle", metavar="T", commands=(*FLOW_COMMANDS, FETCH))
    domain_key: str = opt("host", "limit per host name, or per registered domain",
                          flag="--domain-key", choices=("host", "domain"), secret=False,
                          commands=(*FLOW_COMMANDS, FETCH))
    total_timeout: float = opt(300.0, "total seconds for one attempt at a URL, body included "
                               "(see --url-deadline for all attempts together)",
                               flag="--timeout", metavar="S", commands=(*FLOW_COMMANDS, FETCH))
    url_deadline: float = opt(600.0, "total seconds for one URL from its first request: "
                              "every attempt, wait between retries and redirect; 0: no limit",
                              flag="--url-deadline", metavar="S",
                              commands=(*FLOW_COMMANDS, FETCH))
    connect_timeout: float = opt(10.0, "seconds to connect", flag="--connect-timeout",
                                 metavar="S", commands=(*FLOW_COMMANDS, FETCH))
    read_timeout: float = opt(30.0, "seconds without a byte from the server",
                              flag="--read-timeout", metavar="S",
                              commands=(*FLOW_COMMANDS, FETCH))
    retries: int = opt(3, "retries of timeouts, resets and 5xx/429", flag="--retries",
                       metavar="N", commands=(*FLOW_COMMANDS, FETCH))
    max_bytes: int = opt(200 * 1024 * 1024, "larger responses are cut and not stored",
                         flag="--max-bytes", metavar="N", commands=(*FLOW_COMMANDS, FETCH))
    allow_private_networks: bool = opt(False, "allow loopback and private addresses "
                                       "(refused by default)", flag="--allow-private-networks",
                                       commands=(*FLOW_COMMANDS, FETCH))
    host_limits: list[str] = opt((), "per-host overrides HOST=P,T, e.g. pbs.twimg.com=8,0",
                                 flag="--host-limit", metavar="HOST=P,T",
                                 commands=(*FLOW_COMMANDS, FETCH), split=" ")
    folder_strategy: str = opt("content", "content (DIR/media/ab/cd/<sha256>.<ext>), flat, "
                               "hostname, or prefix-N (N hex digits of the content hash)",
                               flag="--folder-strategy", metavar="STRATEGY",
                               commands=(*FLOW_COMMANDS, FETCH))
    filename_template: str = opt("", "file name from {platform} {post_id} {position} {ext} "
                                 "{sha256} {host} {date} {hour} {query} {collector}; empty: "
                                 "the content hash; shoal fetch: also {row.COLUMN}, a column "
                                 "of the input row", flag="--filename-template",
                                 metavar="TEMPLATE", commands=(*FLOW_COMMANDS, FETCH))
    user_agent: str = opt("shoal-fetch/0.1 (+research media archiver)", "User-Agent header",
                          flag="--user-agent", commands=(*FLOW_COMMANDS, FETCH))
    resolve_media: bool = opt(True, "resolve TikTok video pages to their file (yt-dlp), and "
                              "signed Instagram/TikTok URLs that expired or answer 403/410 "
                              "again from their post (instaloader, yt-dlp), within the page "
                              "host's P and T", flag="--no-resolve-media", invert=True,
                              commands=(*FLOW_COMMANDS, FETCH))


@dataclass
class MetricsSettings:
    port: int = opt(0, "port of /metrics and /healthz; 0 = no server", flag="--metrics-port",
                    commands=(*SERVICES, REPLAY, *LIVE))
    host: str = opt("127.0.0.1", "address to bind; 0.0.0.0 inside a container",
                    flag="--metrics-host", commands=(*SERVICES, REPLAY, *LIVE))
    seal_stale_seconds: float | None = opt(
        None, "/healthz reports not ok when no hour was sealed for this long",
        commands=SERVICES)
    post_stale_seconds: float | None = opt(
        None, "/healthz reports not ok when no post arrived for this long", commands=SERVICES)
    kafka_stale_seconds: float = opt(
        30.0, "/healthz reports degraded when Kafka has not answered for this long",
        commands=SERVICES)


@dataclass
class AlertsSettings:
    collector_silence_minutes: float = opt(30.0, "alert when a collector delivers nothing",
                                           commands=SERVICES)
    seal_silence_minutes: float = opt(120.0, "alert when no hour is sealed (keep > 60)",
                                      commands=SERVICES)
    check_seconds: float = opt(60.0, "how often conditions are checked", commands=SERVICES)
    expect_collectors: list[str] = opt((), "collectors that must deliver even if never seen",
                                       commands=SERVICES)
    daily_report: bool = opt(True, "send each finished day's report", commands=SERVICES)
    smtp_host: str = opt("", "SMTP server; empty = no email", commands=SERVICES)
    smtp_port: int = opt(587, "SMTP port", commands=SERVICES)
    smtp_starttls: bool = opt(True, "upgrade the connection with STARTTLS", commands=SERVICES)
    smtp_ssl: bool = opt(False, "implicit TLS (port 465) instead of STARTTLS",
                         commands=SERVICES)
    smtp_user: str = opt("", "SMTP login; empty = no login", commands=SERVICES)
    smtp_password: str = opt("", "SMTP password", commands=SERVICES)
    smtp_from: str = opt("", "sender address", commands=SERVICES)
    smtp_to: list[str] = opt((), "recipient addresses", commands=SERVICES)
    webhook_url: str = opt("", "URL that receives a JSON POST per notice; empty = none",
                           mask="url", commands=SERVICES)
    subject_prefix: str = opt("[shoal]", "first word of every subject", commands=SERVICES)
    timeout_seconds: float = opt(20.0, "network timeout of one delivery", commands=SERVICES)


@dataclass
class HooksSettings:
    commands: list[str] = opt((), "command templates run per sealed file; fields {path} "
                              "{relpath} {name} {day} {hour} {platform} {kind}", split=False,
                              flag="--hook", metavar="TEMPLATE", commands=SERVICES)
    kinds: list[str] = opt((), "only files of these kinds (IDs, tweets, posts, users, media, "
                           "report); empty: all", commands=SERVICES, choices=HOOK_KINDS)
    attempts: int = opt(5, "tries of one hook before it is given up", commands=SERVICES)
    backoff_seconds: float = opt(10.0, "wait after the first failure; doubles each try",
                                 commands=SERVICES)
    max_backoff_seconds: float = opt(600.0, "longest wait between two tries",
                                     commands=SERVICES)
    timeout_seconds: float = opt(3600.0, "a run taking longer is killed and counts as failed",
                                 commands=SERVICES)
    queue_size: int = opt(1000, "hooks waiting in memory; more wait in the queue file",
                          commands=SERVICES)


@dataclass
class CollectorsSettings:
    name: str = opt("", "name of this collector (its column in the day reports)",
                    flag="--collector", commands=(UP, COLLECT), required=(COLLECT,),
                    per_command={UP: "file"})
    twitter_api_url: str = opt("https://api.twitter.com", "Twitter API base URL, for a proxy "
                               "or a test server", flag="--api-url",
                               commands=("collect twitter-sample", "collect twitter-search"))
    twitter_bearer_token: str = opt("", "Twitter API v2 bearer token (prefer the environment: "
                                    "a flag is visible to every user in ps)",
                                    env_aliases=("TWITTER_BEARER_TOKEN",), flag="--bearer-token",
                                    commands=("collect twitter-sample", "collect twitter-search"))
    tiktok_api_url: str = opt("https://open.tiktokapis.com", "TikTok Research API base URL, for "
                              "a proxy or a test server", flag="--research-api-url",
                              commands=("collect tiktok",))
    tiktok_client_key: str = opt("", "TikTok Research API client key (prefer the environment)",
                                 env_aliases=("TIKTOK_CLIENT_KEY",), flag="--client-key",
                                 commands=("collect tiktok",))
    tiktok_client_secret: str = opt("", "TikTok Research API client secret (prefer the "
                                    "environment: a flag is visible to every user in ps)",
                                    env_aliases=("TIKTOK_CLIENT_SECRET",), flag="--client-secret",
                                    commands=("collect tiktok",))
    mastodon_token: str = opt("", "Mastodon access token, if the server wants one (prefer the "
                              "environment or --token-file: a flag is visible to every user "
                              "in ps)", env_aliases=("MASTODON_TOKEN",), flag="--token",
                              commands=("collect mastodon",))
    # ``shoal collect instagram``: instaloader's pacing and the batch's limits.
    instagram_login: str = opt("", "the account of the session file (instaloader --login USER "
                               "saves one)", flag="--login", metavar="USER", commands=(IG,))
    instagram_session_file: str = opt("", "instaloader session file; empty: public pages, "
                                      "anonymously", flag="--session-file", metavar="F",
                                      path=True, commands=(IG,))
    instagram_max_posts: int = opt(0, "at most N posts per profile or hashtag; 0: all",
                                   flag="--max-posts", metavar="N", commands=(IG,))
    instagram_calls_per_hour: int = opt(20, "never more Instagram queries than this in any "
                                        "hour, over the whole batch; 0: only instaloader's "
                                        "own pacing", flag="--calls-per-hour", metavar="N",
                                        commands=(IG,))
    instagram_rate_limit_wait: float = opt(900.0, "how long a 429 or 'please wait' is waited "
                                           "out", flag="--rate-limit-wait", metavar="SECONDS",
                                           commands=(IG,))
    instagram_rate_limit_retries: int = opt(8, "rate limits waited out per target before it "
                                            "is recorded as rate-limited",
                                            flag="--rate-limit-retries", metavar="N",
                                            commands=(IG,))
    instagram_request_timeout: float = opt(300.0, "seconds per request; instaloader tries a "
                                           "timed-out query again", flag="--request-timeout",
                                           metavar="SECONDS", commands=(IG,))
    instagram_attempts: int = opt(3, "instaloader's tries per query", flag="--attempts",
                                  metavar="N", commands=(IG,))
    instagram_pause: bool = opt(True, "instaloader's random pause before each request",
                                flag="--no-pause", invert=True, commands=(IG,))
    instagram_save_every: float = opt(5.0, "how often the position is saved while a target "
                                      "runs", flag="--save-every", metavar="SECONDS",
                                      commands=(IG,))
    # ``shoal collect tiktok``: the Research API's queries and yt-dlp's user listings.
    tiktok_since: str = opt("", "first day of the hashtag queries, YYYY-MM-DD; empty: 29 days "
                            "before the last", flag="--since", metavar="YYYY-MM-DD",
                            commands=(TT,))
    tiktok_until: str = opt("", "last day of the hashtag queries, included; empty: today (UTC)",
                            flag="--until", metavar="YYYY-MM-DD", commands=(TT,))
    tiktok_page_size: int = opt(100, "videos per Research API page (at most 100)",
                                flag="--page-size", metavar="N", commands=(TT,))
    tiktok_max_posts: int = opt(0, "at most N videos per hashtag (over all its windows and "
                                "runs) or per user listing; 0: all",
                                flag="--max-posts", metavar="N", commands=(TT,))
    tiktok_quota_wait: float | None = opt(None, "how long the daily quota is waited out "
                                          "(unset: until the next UTC day)",
                                          flag="--quota-wait", metavar="SECONDS",
                                          commands=(TT,))
    tiktok_retries: int = opt(5, "tries again after a 429, a 5xx or no answer",
                              flag="--retries", metavar="N", commands=(TT,))
    tiktok_timeout: float = opt(60.0, "seconds per request", flag="--timeout",
                                metavar="SECONDS", commands=(TT,))
    # ``shoal collect images``: ddgs's search.
    images_max_results: int = opt(100, "results per keyword", flag="--max-results",
                                  metavar="N", commands=(IM,))
    images_backend: str = opt("duckduckgo", "ddgs images backend(s), comma-separated",
                              flag="--backend", commands=(IM,))
    images_region: str = opt("us-en", "ddgs region of the search", flag="--region",
                             commands=(IM,))
    images_safesearch: str = opt("moderate", "ddgs safe search", flag="--safesearch",
                                 choices=("on", "moderate", "off"), commands=(IM,))
    images_retries: int = opt(3, "tries again after a failed or rate-limited search",
                              flag="--retries", metavar="N", commands=(IM,))
    images_timeout: float = opt(10.0, "seconds per search request", flag="--timeout",
                                metavar="SECONDS", commands=(IM,))
    # A proxy URL may carry a login (user:password@host): masked like a webhook URL.
    images_proxy: str = opt("", "proxy for ddgs (http/https/socks5); empty: $DDGS_PROXY or "
                            "none", flag="--proxy", metavar="URL", mask="url",
                            env_aliases=("DDGS_PROXY",), commands=(IM,))
    images_ca_file: str = opt("", "CA bundle ddgs trusts instead of its built-in roots",
                              flag="--ca-file", metavar="PEM", path=True, commands=(IM,))


SECTIONS: dict[str, type] = {
    "kafka": KafkaSettings,
    "flow": FlowSettings,
    "media": MediaSettings,
    "metrics": MetricsSettings,
    "alerts": AlertsSettings,
    "hooks": HooksSettings,
    "collectors": CollectorsSettings,
}


@dataclass
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    flow: FlowSettings = field(default_factory=FlowSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    alerts: AlertsSettings = field(default_factory=AlertsSettings)
    hooks: HooksSettings = field(default_factory=HooksSettings)
    collectors: CollectorsSettings = field(default_factory=CollectorsSettings)
    # "section.key" -> "default" | "file" | "env NAME" | "flag --x"; where each value came from.
    sources: dict[str, str] = field(default_factory=dict)
    file: Any = None  # the Path of the file read, if any
    ignored_env: list[str] = field(default_factory=list)

    def get(self, section: str, key: str) -> Any:
        return getattr(getattr(self, section), key)

    def source(self, section: str, key: str) -> str:
        return self.sources.get(f"{section}.{key}", "default")


@dataclass(frozen=True)
class Option:
    """One declared option, with everything derived from its declaration."""

    section: str
    key: str
    type: Any
    field: dataclasses.Field[Any]

    @property
    def meta(self) -> Any:
        return self.field.metadata

    @property
    def flag(self) -> str:
        return str(self.meta.get("flag") or f"--{self.section}-{self.key}".replace("_", "-"))

    @property
    def dest(self) -> str:
        """The argparse attribute: the flag's words joined by underscores."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def kind(self) -> str:
        """'str', 'int', 'float', 'bool' or 'list'."""
        return kind_of(self.type)[0]

    @property
    def optional(self) -> bool:
        return kind_of(self.type)[1]

    def __iter__(self) -> Any:  # ``for key, typ, fld in options(section)``
        return iter((self.key, self.type, self.field))

    def default(self) -> Any:
        f = self.field
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default

    def on(self, command: str) -> bool:
        """Does ``command`` (``"process"``, ``"collect bluesky"``) take this option's flag?"""
        return _matches(command, self.meta.get("commands", ()))

    def required_on(self, command: str) -> bool:
        return _matches(command, self.meta.get("required", ()))

    def default_on(self, command: str) -> Any:
        per = self.meta.get("per_command", {})
        for name, value in per.items():
            if _matches(command, (name,)):
                return value
        return self.default()


def _matches(command: str, names: tuple[str, ...]) -> bool:
    return any(command == n or command.startswith(n + " ") for n in names)


def kind_of(typ: Any) -> tuple[str, bool]:
    """('str'|'int'|'float'|'bool'|'list', optional) of an annotation."""
    args = typing.get_args(typ)
    optional = type(None) in args
    if optional:
        typ = next(a for a in args if a is not type(None))
    if typing.get_origin(typ) is list:
        return "list", optional
    return typ.__name__, optional


@functools.cache
def options(section: str) -> tuple[Option, ...]:
    """The options of a section, in declaration order, types resolved.

    Cached: the declarations never change, and resolving their annotations (a ``compile``
    per field) on every lookup cost each ``shoal`` command some 0.7 s before it started.
    """
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    return tuple(Option(section, f.name, hints[f.name], f) for f in dataclasses.fields(cls))


@functools.cache
def all_options() -> tuple[Option, ...]:
    return tuple(o for section in SECTIONS for o in options(section))


def finite_float(text: str) -> float:
    """The argparse type of a float flag not declared here (declared ones are checked by
    ``shoal.app.config.validate``): ``float`` takes ``nan`` and ``inf``, which turned a
    throttle off, hung a run or overflowed a timeout."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value
