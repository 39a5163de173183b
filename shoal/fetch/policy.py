"""The rules of fetching, kept free of I/O so that they can be tested exhaustively.

The engine (``connectors/fetcher.py``) asks this module every question that has a right
answer independent of the network: may this URL be fetched, which politeness key does it
count against, how long to wait before trying again, where do its bytes go on disk, and how
long must a whole job take at best if the politeness promise is kept.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import random
import re
import socket
import string
import unicodedata
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from shoal.templates import BadField, fields_of

ALLOWED_SCHEMES = frozenset({"http", "https", "data"})
TEMPLATE_FIELDS = frozenset(
    {"platform", "post_id", "position", "ext", "sha256", "host", "date", "hour", "query",
     "collector", "kind"}
)
# The fields a post gives (the dataflow's); ``shoal fetch`` reads them from the input column
# of the same name, and refuses them when there is none rather than leave them empty.
POST_FIELDS = ("platform", "post_id", "query", "collector")
# ``{row.COLUMN}``: a column of ``shoal fetch``'s input row. The dataflow has no input row.
ROW_FIELD = "row."
FOLDER_STRATEGIES = ("content", "flat", "hostname", "prefix-N")
MEDIA_ROOT = "media"
# Bounds on names: a component longer than ~255 bytes fails on most file systems, and a
# long path is a nuisance for every tool that lists the tree.
MAX_COMPONENT = 120
MAX_VALUE = 64
MAX_DEPTH = 6

IpVerdict = Literal[
    "loopback", "private", "link-local", "multicast", "reserved", "unspecified",
    "ipv4-mapped", "site-local", "non-global",
]


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """Every knob of a fetch job; defaults are the polite ones.

    ``per_host`` and ``split_hosts`` are looked up by politeness key (a host name, or a
    registered domain when ``domain_key == "domain"``). ``resolve`` maps host names to
    addresses without DNS; such a mapping is the operator's explicit choice and is trusted
    even when it points at a private address (that is how tests reach loopback servers
    under names), while every other private address needs ``allow_private_networks``.
    """

    domain_parallelism: int = 2
    throttle: float = 0.2
    per_host: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    domain_key: Literal["host", "domain"] = "host"
    split_hosts: Mapping[str, int] = field(default_factory=dict)
    retries: int = 3
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 300.0
    # The timeouts above bound one attempt; this bounds a URL's whole fate (attempts, waits
    # between retries, redirect hops) from its first request on. 0: no such limit.
    url_deadline: float = 600.0
    max_bytes: int = 200 * 1024 * 1024
    max_redirects: int = 10
    allow_private_networks: bool = False
    mime_types: frozenset[str] = frozenset()  # "image", "video/mp4"...; empty: anything
    user_agent: str = "shoal-fetch/0.1 (+research media archiver)"
    folder_strategy: str = "content"
    filename_template: str | None = None
    compress: bool = False
    resolve: Mapping[str, str] = field(default_factory=dict)
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 3600.0
    max_connections: int = 256
    # Added to every throttle gap. The gap runs from the moment a request's first bytes
    # went to the kernel (``connectors.fetch.safety``), not from its grant, so connection
    # set-up and scheduling delays come before it and cannot shorten a gap; what is left
    # is the jitter of the server's reading (one request read a little later than the
    # next), which a millisecond covers on a quiet loopback (no margin covers a server that
    # is descheduled). Every millisecond here costs 1 % of a throttle-bound job at
    # T = 0.1 s, on top of the asyncio timer that opens the gate, which fires up to a
    # millisecond after it is due (epoll counts whole milliseconds): 3 ms made such a job
    # 5 % slower than its bound.
    throttle_margin: float = 0.001
    # TikTok video pages (yt-dlp) and expired or refused signed URLs (instaloader, yt-dlp)
    # are resolved from their post to a file URL before being downloaded (shoal.fetch.resolve).
    resolve_media: bool = True

    def __post_init__(self) -> None:
        # NaN passes every comparison below and inf waits forever: neither is a duration.
        seconds = [self.throttle, self.connect_timeout, self.read_timeout, self.total_timeout,
                   self.url_deadline, self.backoff_base, self.backoff_max,
                   self.retry_after_max, self.throttle_margin,
                   *(t for _p, t in self.per_host.values())]
        if not all(math.isfinite(x) for x in seconds):
            raise ValueError("durations must be finite numbers of seconds, not nan or inf")
        if self.domain_parallelism < 1:
            raise ValueError("domain_parallelism must be >= 1")
        if self.throttle < 0:
            raise ValueError("throttle must be >= 0")
        if self.domain_key not in ("host", "domain"):
            raise ValueError(f"domain_key must be 'host' or 'domain', not {self.domain_key!r}")
        for host, (p, t) in self.per_host.items():
            if p < 1 or t < 0:
                raise ValueError(f"bad per-host limits for {host!r}: {(p, t)!r}")
        for host, n in self.split_hosts.items():
            if n < 1:
                raise ValueError(f"split_hosts[{host!r}] must be >= 1")
        if self.retries < 0 or self.max_redirects < 0 or self.max_bytes < 1:
            raise ValueError("retries and max_redirects must be >= 0, max_bytes >= 1")
        if min(self.connect_timeout, self.read_timeout, self.total_timeout) <= 0:
            raise ValueError("timeouts must be > 0")
        if self.url_deadline < 0:
            raise ValueError("url_deadline must be >= 0 (0: none)")
        folder_prefix(self.folder_strategy)  # raises on an unknown strategy
        check_header_value(self.user_agent)
        if self.filename_template is not None:
            # {row.COLUMN}: the configuration cannot know the columns; shoal fetch checks
            # them against its input, and the dataflow's options refuse them.
            validate_template(self.filename_template, columns=None)
        for host, addr in self.resolve.items():
            ipaddress.ip_address(addr)  # raises ValueError on a bad override
            if not host:
                raise ValueError("empty host in resolve overrides")

    def limits(self, key: str) -> tuple[int, float]:
        """(parallelism, throttle) of a budget key."""
        return limits_for(key, self.per_host, self.domain_key,
                          (self.domain_parallelism, self.throttle))


@dataclass(slots=True)
class FetchResult:
    """The fate of one URL, whatever it was: minet's lesson is that a report with a row for
    every input is what lets a researcher trust, resume and audit a download."""

    url: str
    final_url: str = ""
    http_status: int = 0  # 0: no HTTP response (refused, network error, data: URL)
    error: str = ""  # "" on success
    attempts: int = 0  # HTTP requests sent, retries and redirect hops included
    bytes: int = 0
    sha256: str = ""
    mimetype: str = ""
    path: str = ""  # relative to the storage root, POSIX separators
    fetched_at: str = ""  # ISO 8601, UTC
    phash: str = ""  # images: 64-bit perceptual hash, 16 hex digits (connectors.fetch.phash)
    # "" when the URL was downloaded as it was; else what made it be resolved from its post
    # and the page asked: "page from https://www.tiktok.com/@u/video/1", "expired from ...",
    # "http 403 from ..." (shoal.fetch.resolve.Plan.note). final_url is then the file's URL.
    resolved: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def media_cells(self) -> dict[str, str]:
        """The fetch's cells of a media row (``shoal.model.FETCH_COLUMNS``), as CSV text."""
        return {
            "final_url": self.final_url,
            "http_status": str(self.http_status or ""),
            "error": self.error,
            "attempts": str(self.attempts),
            "bytes": str(self.bytes),
            "sha256": self.sha256,
            "mimetype": self.mimetype,
            "path": self.path,
            "fetched_at": self.fetched_at,
            "phash": self.phash,
            "resolved": self.resolved,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FetchResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def check_header_value(value: str) -> None:
    """ValueError when ``value`` cannot be sent as an HTTP header value: a control character
    (a line break would end the header, and the HTTP client refuses it at every request, so
    every URL failed with an internal error)."""
    bad = next((c for c in value if (ord(c) < 32 and c != "\t") or ord(c) == 127), None)
    if bad is not None:
        raise ValueError(f"{value[:40]!r} holds the control character {bad!r}; an HTTP "
                         "header value must be on one line")


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- URL safety ---------------------------------------------------------------------------


def classify_ip(addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> IpVerdict | None:
    """Why an address must not be contacted, or None for a public unicast address.

    Addresses that embed an IPv4 one (mapped, 6to4, Teredo, NAT64) are judged by what they
    embed too, since the network may route them there.
    """
    ip = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "ipv4-mapped"
        if ip.scope_id:
            return "link-local"
        embedded = [ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in ipaddress.ip_network("64:ff9b::/96"):
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        for inner in embedded:
            if inner is not None and classify_ip(inner) is not None:
                return "reserved"
        if ip.is_site_local:
            return "site-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:  # 100.64/10, 192.0.0/24 and friends
        return "non-global"
    return None


def parse_ip_host(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, counting the legacy IPv4 spellings
    (``2130706433``, ``0x7f.1``, ``127.1``) that ``inet_aton`` and many resolvers accept."""
    h = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        pass
    if h and re.fullmatch(r"[0-9a-fA-FxX.]+", h) and re.match(r"\d", h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def check_url(url: str, config: FetchConfig) -> str:
    """"" when the URL may be fetched, else the reason it is refused.

    Host names are judged again, address by address, when the engine resolves them; this
    check covers what can be seen from the URL alone (scheme, literal addresses).
    """
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if not rest or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        return "refused: not an absolute URL"
    if scheme not in ALLOWED_SCHEMES:
        return f"refused: scheme {scheme!r} not allowed (only http, https, data)"
    if scheme == "data":
        return "" if "," in rest else "refused: malformed data: URL"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        return f"refused: invalid URL ({exc})"
    if not host:
        return "refused: no host"
    if any(ord(c) < 33 or c in "\\" for c in url):
        return "refused: control or blank character in URL"
    ip = parse_ip_host(host)
    if ip is None:
        problem = host_name_problem(host)
        if problem:
            return f"refused: invalid URL ({problem})"
    elif not config.allow_private_networks:
        verdict = classify_ip(ip)
        if verdict is not None:
            return f"refused: {verdict} address {ip}"
    return ""


MAX_HOST_CHARS, MAX_LABEL_CHARS = 253, 63  # RFC 1035, as DNS and IDNA encode names


def host_name_problem(host: str) -> str:
    """Why ``host`` cannot be a DNS name (too long, an empty or over-long label, not
    encodable as IDNA), or "". Caught here, such a name is an invalid URL; left to the
    resolver, it raised a UnicodeError deep in the HTTP client (an "internal error")."""
    name = host.rstrip(".")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        longest = max((len(label) for label in name.split(".")), default=0)
        if not all(name.split(".")):
            return "empty label in host name"
        if longest > MAX_LABEL_CHARS:
            return f"host label longer than {MAX_LABEL_CHARS} characters"
        return "host name is not valid IDNA"
    if len(ascii_name) > MAX_HOST_CHARS:
        return f"host name longer than {MAX_HOST_CHARS} characters"
    labels = ascii_name.split(".")
    if any(not label for label in labels):
        return "empty label in host name"
    if any(len(label) > MAX_LABEL_CHARS for label in labels):
        return f"host label longer than {MAX_LABEL_CHARS} characters"
    return ""


def check_resolved(host: str, addresses: list[str], config: FetchConfig) -> str:
    """"" when every address a name resolved to may be contacted; one bad address is
    enough to refuse, since the connector may pick any of them."""
    if config.allow_private_networks or host.lower().rstrip(".") in config.resolve:
        return ""
    for addr in addresses:
        verdict = classify_ip(addr)
        if verdict is not None:
            return f"refused: {host} resolves to {verdict} address {addr}"
    return ""


# --- politeness ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _extractor() -> Any:
    import tldextract  # bundled Public Suffix List snapshot: no network, ever

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def registered_domain(host: str) -> str:
    """``a.b.example.co.uk`` -> ``example.co.uk``; a host under no known suffix keeps its
    last two labels, and an address stays itself."""
    host = host.lower().rstrip(".")
    if parse_ip_host(host) is not None or "." not in host:
        return host
    ext = _extractor()(host)
    if ext.suffix and ext.domain:
        return f"{ext.domain}.{ext.suffix}"
    return ".".join(host.split(".")[-2:])


def url_host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""


def key_for(url: str, config: FetchConfig) -> str:
    """The politeness key of a URL: its host or registered domain, then for a host listed
    in ``split_hosts`` one of N sub-keys ``key#i`` chosen by the URL's hash, so that a
    dominant host can be spread over workers. Sub-keys share the host's budget: the engine
    limits by :func:`budget_key`, never by the sub-key."""
    if url[:5].lower() == "data:":
        return "data:"
    host = url_host(url)
    key = registered_domain(host) if config.domain_key == "domain" else host
    n = config.split_hosts.get(key, 1)
    if n > 1:
        return f"{key}#{zlib.crc32(url.encode('utf-8', 'surrogatepass')) % n}"
    return key


def budget_key(key: str) -> str:
    return key.partition("#")[0]


def limits_for(
    key: str, per_host: Mapping[str, tuple[int, float]], domain_key: str,
    default: tuple[int, float],
) -> tuple[int, float]:
    """(P, T) of a budget key given the ``HOST=P,T`` overrides.

    Overrides name hosts, as users know them. Under domain keying the budget is the
    registered domain's, so an override of ``pbs.twimg.com`` is the limit of
    ``twimg.com`` (looked up by host it was never found); when several overrides fall
    in one domain the strictest holds: the least P and the largest T.
    """
    if domain_key != "domain":
        return per_host.get(key, default)
    found = [pt for host, pt in per_host.items() if registered_domain(host) == key]
    if not found:
        return default
    return min(p for p, _ in found), max(t for _, t in found)


def politeness_bound(
    urls_per_key: Mapping[str, int], parallelism: int, throttle: float, latency: float
) -> float:
    """The shortest wall time a job can take while keeping the promise: on each key, at most
    P requests of latency L at once, and starts at least T apart."""
    best = 0.0
    for n in urls_per_key.values():
        if n <= 0:
            continue
        best = max(best, math.ceil(n / parallelism) * latency, (n - 1) * throttle + latency)
    return best


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, base: float, cap: float, rand: float) -> float:
    """Delay before try ``attempt + 1`` after ``attempt`` failures: exponential, capped,
    with "equal jitter" (half fixed, half random) so that retries of URLs that failed
    together spread out yet never come back at once."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay / 2 + (delay / 2) * rand


def backoff_schedule(retries: int, base: float, cap: float, rng: random.Random) -> list[float]:
    return [backoff_delay(i, base, cap, rng.random()) for i in range(1, retries + 1)]


def status_class(status: int) -> Literal["ok", "redirect", "retry", "permanent"]:
    if 200 <= status < 300:
        return "ok"
    if status in (301, 302, 303, 307, 308):
        return "redirect"
    if status in (408, 425, 429) or 500 <= status < 600:
        return "retry"
    return "permanent"


# --- content type -------------------------------------------------------------------------

_EXT_BY_TYPE = {
    "image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp",
    "image/avif": "avif", "image/heic": "heic", "image/bmp": "bmp", "image/tiff": "tiff",
    "image/svg+xml": "svg", "image/x-icon": "ico", "image/vnd.microsoft.icon": "ico",
    "video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov", "video/x-matroska": "mkv",
    "video/mp2t": "ts", "audio/mp4": "m4a", "audio/mpeg": "mp3", "audio/ogg": "ogg",
    "application/vnd.apple.mpegurl": "m3u8", "application/x-mpegurl": "m3u8",
    "application/dash+xml": "mpd", "application/pdf": "pdf", "text/html": "html",
    "application/json": "json", "text/plain": "txt", "application/octet-stream": "bin",
}


def sniff_type(head: bytes, content_type: str = "") -> tuple[str, str]:
    """(mimetype, extension) from the first bytes, falling back on the Content-Type header:
    CDNs often serve media as octet-stream or with the wrong type, the bytes don't lie."""
    sniffed = _sniff_magic(head)
    if sniffed:
        return sniffed, _EXT_BY_TYPE[sniffed]
    ct = content_type.split(";", 1)[0].strip().lower()
    if ct in _EXT_BY_TYPE:
        return ct, _EXT_BY_TYPE[ct]
    if re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", ct):
        sub = ct.split("/", 1)[1].rsplit("+", 1)[0].removeprefix("x-")
        return ct, sanitize_value(sub)[:8] or "bin"
    return "application/octet-stream", "bin"


def _sniff_magic(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"mif1", b"msf1"):
            return "image/heic"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head.startswith(b"#EXTM3U"):
        return "application/vnd.apple.mpegurl"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "video/mp2t"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3"):
        return "audio/mpeg"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[:2] == b"BM":
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    text = head[:256].lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in head[:1024]):
        return "image/svg+xml"
    return ""


def type_allowed(mimetype: str, wanted: frozenset[str]) -> bool:
    return not wanted or mimetype in wanted or mimetype.split("/", 1)[0] in wanted


def ledger_refusal(stored: FetchResult, config: FetchConfig) -> str:
    """Why this run would refuse a file fetched by an earlier one (the ledger's), in the
    words a fresh fetch would use, or "": ``--mime-types`` and ``--max-bytes`` may have
    changed since, and a ledger hit must not bypass them. (An empty file, stored before
    empty bodies became errors, is refused too.)"""
    if not type_allowed(stored.mimetype, config.mime_types):
        return f"unwanted media type {stored.mimetype}"
    if stored.bytes > config.max_bytes:
        return f"too large (> {config.max_bytes} bytes)"
    if not stored.bytes:
        return "empty body"
    return ""


# --- storage paths ------------------------------------------------------------------------


# What a file name keeps of a value: ASCII letters, digits and ``._-`` (``=+`` too between
# fields), and letters, digits and combining marks of any script, in NFC (a name typed on
# another system then matches). Everything else becomes ``_``: path separators, controls,
# blanks, the characters Windows, macOS or a shell treat specially (``<>:"|?*``...),
# invisible format characters (a right-to-left override would disguise a name), symbols.
_NAME_MARKS = frozenset({"Mn", "Mc"})
# Names Windows reserves whatever their extension (``CON.jpg`` cannot be opened there).
_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
                       *(f"LPT{i}" for i in range(10))})
# Bytes of UTF-8 in one component: most file systems take 255, and the store may add
# ``_<12 hex digits>`` to a name that is taken.
MAX_COMPONENT_BYTES = 240


def _keeps(c: str, ascii_extra: str) -> bool:
    if c.isascii():
        return c.isalnum() or c in ascii_extra
    category = unicodedata.category(c)
    return category[0] in "LN" or category in _NAME_MARKS


def _name_chars(text: str, ascii_extra: str) -> str:
    """``text`` in NFC with every run of characters a file name must not keep as ``_``."""
    out: list[str] = []
    for c in unicodedata.normalize("NFC", text):
        if _keeps(c, ascii_extra):
            out.append(c)
        elif not out or out[-1] != "_":
            out.append("_")
    return "".join(out)


def _cut_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, at a character boundary."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def sanitize_value(value: object) -> str:
    """A field value made safe to appear inside one file name component (Unicode letters
    and digits kept, see ``_keeps``)."""
    text = _name_chars(str(value), "._-")
    text = re.sub(r"\.{2,}", "_", text).lstrip(".")
    return text[:MAX_VALUE]


def _ascii_value(value: object) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value))
    text = re.sub(r"\.{2,}", "_", text).lstrip(".")
    return text[:MAX_VALUE]


def query_value(query: object) -> str:
    """``{query}`` in a file name: the sanitised query, plus 8 hex digits of its hash when
    sanitising would lose what tells it from another query (letters outside ASCII,
    punctuation, more than MAX_VALUE characters). ``bike lane`` stays ``bike_lane`` (a
    space is the one loss kept readable); ``猫`` and ``犬`` become ``_-`` and two different
    hashes, not one ``_`` folder holding both keywords' images, and so do ``c++`` and
    ``c#`` (both were ``c_``) and ``.`` (no folder at all: its images in the root)."""
    text = str(query)
    plain = _ascii_value(text)
    if text.isascii() and len(text) <= MAX_VALUE and plain == text.replace(" ", "_"):
        return plain
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{plain[:MAX_VALUE - 9]}-{digest}"


def template_names(template: str) -> list[str]:
    """Every field name of ``template`` in order, as written (``row.id`` stays one name);
    ValueError for unbalanced braces."""
    return [name for _t, name, _s, _c in string.Formatter().parse(template) if name is not None]


def validate_template(template: str, columns: Collection[str] | None = ()) -> None:
    """Refuse unknown fields, attribute/index access and conversions: a template is data
    from the command line, not code.

    ``{row.COLUMN}`` may name one of ``columns``: ``shoal fetch`` passes its input's header
    once it has read it; ``None`` accepts any column, for a check made before the input is
    known; the default, no column, is the dataflow's case, whose posts have no input row.
    """
    known: set[str] = set(TEMPLATE_FIELDS)
    try:
        names = template_names(template)
        if columns is None:
            columns = [n[len(ROW_FIELD):] for n in names if n.startswith(ROW_FIELD)]
        known.update(ROW_FIELD + c for c in columns)
        fields_of(template, known)
    except BadField as exc:
        column = exc.name[len(ROW_FIELD):]
        if not exc.plain:
            raise ValueError(
                f"filename template field {{{exc.name}}} takes no format spec or conversion"
            ) from None
        if exc.plain and exc.name.startswith(ROW_FIELD) and columns:
            raise ValueError(
                f"filename template field {{{exc.name}}}: the input has no column {column!r}"
                f" (columns: {', '.join(columns)})"
            ) from None
        raise ValueError(
            f"bad filename template field {{{exc.name}}}: use only "
            + ", ".join(f"{{{f}}}" for f in sorted(TEMPLATE_FIELDS))
            + (", {row.COLUMN}" if columns else
               " ({row.COLUMN} names an input column of shoal fetch only)")
        ) from None
    except ValueError as exc:
        raise ValueError(f"bad filename template {template!r}: {exc}") from None
    if template.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", template):
        raise ValueError("filename template must be relative")


def row_fields(template: str, columns: Sequence[str]) -> dict[str, str]:
    """The input columns a ``shoal fetch`` template reads, as ``{field: column}``:
    ``{row.COLUMN}`` reads COLUMN, and a post field (``{post_id}``...) the column of the
    same name, which must then exist: a minet export has ``id``, not ``post_id``, and a
    silently empty field would name every file ``_0.png``.

    Raises ValueError (one line) for a field no column of the input can fill.
    """
    validate_template(template, columns)
    out: dict[str, str] = {}
    for name in template_names(template):
        if name.startswith(ROW_FIELD):
            out[name] = name[len(ROW_FIELD):]
        elif name in POST_FIELDS:
            if name not in columns:
                raise ValueError(
                    f"filename template field {{{name}}}: the input has no {name!r} column;"
                    " name the column to use with {row.COLUMN}, e.g. {row.id}"
                )
            out[name] = name
    return out


def row_values(fields: Mapping[str, str], row: Mapping[str, str]) -> dict[str, str]:
    """The values of ``fields`` (from :func:`row_fields`) in one input row.

    Raises ValueError naming the first field that is empty, or nothing once made safe for
    a file name: two rows would then share a name that says nothing of either.
    """
    values = {name: row.get(column, "") for name, column in fields.items()}
    for name, value in values.items():
        if not value.strip():
            raise ValueError(f"filename template field {{{name}}} is empty")
        if not sanitize_value(value.strip()).strip("_"):
            raise ValueError(f"filename template field {{{name}}} holds nothing a file name "
                             f"can keep ({value.strip()[:40]!r})")
    return values


def render_name(template: str, values: Mapping[str, str]) -> str:
    """``template`` filled from ``values`` by whole field name: ``row.id`` is a key, never
    an attribute lookup, and a missing value is empty (callers check beforehand)."""
    out: list[str] = []
    for text, name, _spec, _conv in string.Formatter().parse(template):
        out.append(text)
        if name is not None:
            out.append(values.get(name, ""))
    return "".join(out)


def folder_prefix(strategy: str) -> int:
    """N of ``prefix-N`` (0 for the other strategies); raises on an unknown strategy."""
    if strategy in ("content", "flat", "hostname"):
        return 0
    m = re.fullmatch(r"prefix-(\d)", strategy)
    if not m or not 1 <= int(m.group(1)) <= 8:
        raise ValueError(
            f"unknown folder strategy {strategy!r}: use content, flat, hostname or prefix-N"
            " (N from 1 to 8)"
        )
    return int(m.group(1))


def _safe_component(part: str, keep_suffix: bool = False) -> str:
    part = _name_chars(part, "._=+-")
    part = part.lstrip(".-").rstrip(".") or "_"  # Windows drops a trailing dot
    if part in (".", ".."):
        part = "_"
    if part.split(".", 1)[0].upper() in _RESERVED:
        part = "_" + part
    if len(part) > MAX_COMPONENT or len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
        stem, dot, suffix = part.rpartition(".")
        if keep_suffix and dot and len(suffix) <= 10:
            stem = _cut_bytes(stem[: MAX_COMPONENT - len(suffix) - 1],
                              MAX_COMPONENT_BYTES - len(suffix) - 1)
            part = stem + "." + suffix
        else:
            part = _cut_bytes(part[:MAX_COMPONENT], MAX_COMPONENT_BYTES)
    return part


def storage_path(
    config: FetchConfig, sha256: str, ext: str, fields: Mapping[str, object] | None = None
) -> str:
    """Relative POSIX path of a stored file; whatever the fields hold, it stays under the
    root: every component is rebuilt from a safe alphabet, and ``.``/``..`` cannot occur."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    ext = sanitize_value(ext).lower()[:10] or "bin"
    if config.compress:
        ext += ".gz"
    template = config.filename_template or ""
    names = TEMPLATE_FIELDS.union(template_names(template))
    values = {name: sanitize_value((fields or {}).get(name, "")) for name in names}
    values["query"] = query_value((fields or {}).get("query", ""))
    values.update(sha256=sha256, ext=ext)
    if template:
        rendered = render_name(template, values)
        parts = [p for p in re.split(r"[/\\]+", rendered) if p not in ("", ".")]
        parts = [_safe_component(p) for p in parts][-MAX_DEPTH:] or [f"{sha256}.{ext}"]
        parts[-1] = _safe_component(parts[-1], keep_suffix=True)
    else:
        parts = [f"{sha256}.{ext}"]
    strategy = config.folder_strategy
    if strategy == "content":
        folders = [sha256[0:2], sha256[2:4]]
    elif strategy == "hostname":
        folders = [_safe_component(values["host"] or "_")]
    elif strategy == "flat":
        folders = []
    else:
        folders = [sha256[: folder_prefix(strategy)]]
    return "/".join([MEDIA_ROOT, *folders, *parts])


def template_fields(
    url: str, meta: Mapping[str, Any] | None, fetched_at: str
) -> dict[str, object]:
    """The values a template may use: the post's metadata (or ``shoal fetch``'s position
    and ``row.COLUMN`` values), plus host/date/hour."""
    fields: dict[str, object] = {
        k: v for k, v in (meta or {}).items() if k in TEMPLATE_FIELDS or k.startswith(ROW_FIELD)
    }
    fields.setdefault("host", url_host(url))
    fields.setdefault("date", fetched_at[:10])
    fields.setdefault("hour", fetched_at[11:13])
    return fields


# --------------------------------------------------------------------------- from the options

# The [media] options the dataflow reads itself; every other one is the FetchConfig field of
# the same name, so a new option reaches the engine by being declared (or fails loudly).
FLOW_MEDIA_KEYS = frozenset({"enabled", "media_types", "host_limits"})


def host_limits(specs: Sequence[str]) -> dict[str, tuple[int, float]]:
    """``HOST=P,T`` overrides as ``{host: (P, T)}``; ValueError names a bad one."""
    out: dict[str, tuple[int, float]] = {}
    for spec in specs:
        host, _, limits = spec.partition("=")
        p, _, t = limits.partition(",")
        try:
            parallelism, throttle = int(p), float(t or 0)
        except ValueError:
            raise ValueError(
                f"bad host limit {spec!r}: use HOST=P,T (e.g. pbs.twimg.com=8,0)") from None
        if not math.isfinite(throttle) or throttle < 0:
            raise ValueError(f"bad host limit {spec!r}: T must be a finite number >= 0")
        if parallelism < 1:
            raise ValueError(f"bad host limit {spec!r}: P must be at least 1")
        if not host.strip():
            raise ValueError(f"bad host limit {spec!r}: no host before '='")
        out[host.strip().lower()] = (parallelism, throttle)
    return out


def fetch_config(media: Any, **extra: Any) -> FetchConfig:
    """The engine's configuration from the ``[media]`` settings (``shoal.options``), plus
    what a command knows besides (``resolve``; ``per_host`` limits of its own, which the
    user's ``host_limits`` override).

    Raises ValueError with a one-line reason for a bad value.
    """
    values = {k: v for k, v in asdict(media).items() if k not in FLOW_MEDIA_KEYS}
    values["filename_template"] = values.get("filename_template") or None
    # A command's own per-host limits are defaults: the user's overrides win over them.
    per_host = {**extra.pop("per_host", {}), **host_limits(media.host_limits)}
    return FetchConfig(**values, per_host=per_host, **extra)
