"""Where the images and videos of Bluesky, Mastodon, TikTok and Instagram posts are.

Each function turns one post payload into :class:`~shoal.model.MediaRef` items in the order
the post shows them. ``url`` is what the downloader fetches first; ``alternatives`` are other
URLs of the *same* item (a smaller rendition, a cover still) tried when ``url`` has expired or
fails, so that an archive keeps at least a picture of a video whose signed URL is dead.

Decisions:

* Bluesky: the AppView's own URLs are used when the payload is a post view; raw records
  (Jetstream, Tap, or views whose embed the AppView did not render) only carry blob CIDs, so
  URLs are built the way the AppView builds them (``@jpeg`` for every image, the DID
  percent-encoded in video URLs) and the same image gets the same URL whatever the source.
  A link card's image is kept as a ``thumbnail`` item; GIF-picker links (Tenor, Klipy) are the
  GIF itself. Quoted posts' media are included after the post's own, attributed to the
  quoted post, one level deep (what the app displays). Third-party embed ``$type``s are read
  best effort when they hold a blob or an http URL in a recognisable place; anything else
  (files, geo points, encrypted blobs) is ignored, never an error.
* Mastodon: an attachment without ``url`` is still being processed and cannot be fetched; it
  is skipped rather than replaced by its preview.
* TikTok: one video item per post; the cover is the last alternative, not an item of its
  own, so that item counts match what the post is (one video).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit

from shoal.model import MediaRef

_BSKY_IMAGE = "https://cdn.bsky.app/img/feed_fullsize/plain/{did}/{cid}@jpeg"
_BSKY_THUMB = "https://cdn.bsky.app/img/feed_thumbnail/plain/{did}/{cid}@jpeg"
_BSKY_VIDEO = "https://video.bsky.app/watch/{did}/{cid}/playlist.m3u8"
_BSKY_VIDEO_THUMB = "https://video.bsky.app/watch/{did}/{cid}/thumbnail.jpg"

_MASTODON_TYPES = {"image": "photo", "video": "video", "gifv": "gif", "audio": "audio"}

# Embeds can nest (recordWithMedia -> media); third-party ones could nest without end.
_MAX_DEPTH = 3


class _Media:
    """Collects items and numbers them; empty, non-string and repeated URLs are dropped."""

    __slots__ = ("items", "platform", "post_id")

    def __init__(self, platform: str, post_id: str) -> None:
        self.platform = platform
        self.post_id = post_id
        self.items: list[MediaRef] = []

    def add(
        self,
        kind: str,
        url: Any,
        alternatives: Iterable[Any] = (),
        key: Any = "",
        source: str = "",
    ) -> None:
        if not isinstance(url, str) or not url or any(m.url == url for m in self.items):
            return  # a post attaching the same file twice shows one file twice
        alts = tuple(
            dict.fromkeys(a for a in alternatives if isinstance(a, str) and a and a != url)
        )
        self.items.append(
            MediaRef(
                post_id=self.post_id,
                platform=self.platform,
                position=len(self.items),
                type=kind,
                url=url,
                alternatives=alts,
                media_key="" if key is None else str(key),
                source_post_id=source,
            )
        )


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a list; payloads written by odd clients put anything anywhere."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# --------------------------------------------------------------------------- Bluesky


def _kind(type_: Any) -> str:
    """``app.bsky.embed.images#view`` -> ``images``: the part that says what the embed holds."""
    if not isinstance(type_, str):
        return ""
    return type_.split("#", 1)[0].rsplit(".", 1)[-1].lower()


def _blob_cid(blob: Any) -> str:
    """The CID of a blob ref, in the standard form or the shapes odd clients write."""
    if isinstance(blob, str):
        return blob if blob.startswith(("baf", "Qm")) else ""
    if not isinstance(blob, dict):
        return ""
    ref = blob.get("ref")
    if isinstance(ref, dict):
        link = ref.get("$link")
        if isinstance(link, str):
            return link
    elif isinstance(ref, str):
        return ref
    for key in ("cid", "link", "$link"):
        value = blob.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _cdn_cid(url: Any) -> str:
    """The CID at the end of a cdn.bsky.app URL (``.../{did}/{cid}@jpeg``)."""
    if not isinstance(url, str) or "/" not in url:
        return ""
    return url.rsplit("/", 1)[1].split("@", 1)[0]


def _http_url(value: Any, depth: int = 0) -> str:
    """The first http(s) URL under ``uri``/``url`` keys, for embeds that carry links not blobs."""
    if depth > _MAX_DEPTH:
        return ""
    if isinstance(value, dict):
        for key in ("uri", "url"):
            found = value.get(key)
            if isinstance(found, str) and found.startswith(("https://", "http://")):
                return found
        for inner in value.values():
            if isinstance(inner, dict | list):
                found = _http_url(inner, depth + 1)
                if found:
                    return found
    elif isinstance(value, list):
        for inner in value:
            found = _http_url(inner, depth + 1)
            if found:
                return found
    return ""


# Hosts of the GIF pickers of Bluesky clients: the link *is* the GIF, not a web page.
_GIF_HOSTS = frozenset({"media.tenor.com", "static.klipy.com"})
GIF_HOSTS = _GIF_HOSTS  # a link card to these is a GIF (media), not a link


def _is_gif_link(uri: Any) -> bool:
    return isinstance(uri, str) and urlsplit(uri).hostname in _GIF_HOSTS


def bluesky_view_media(view: dict[str, Any], post_id: str) -> list[MediaRef]:
    """Media of an AppView post view: its own, then inline images, then the quoted post's.

    Falls back to the raw record when the AppView rendered no ``embed`` (odd embed types).
    """
    media = _Media("bluesky", post_id)
    embed = view.get("embed")
    record = view.get("record")
    record = record if isinstance(record, dict) else {}
    if isinstance(embed, dict):
        _view_embed(media, embed, "", 0)
    else:
        author = view.get("author")
        did = author.get("did") if isinstance(author, dict) else None
        if isinstance(did, str):
            _record_embed(media, record.get("embed"), did, 0)
    _facet_images(media, record)
    if isinstance(embed, dict):
        kind = _kind(embed.get("$type"))
        if kind == "record":
            _quoted(media, embed, 1)
        elif kind == "recordwithmedia":
            _quoted(media, embed.get("record"), 1)
    return media.items


def _facet_images(media: _Media, record: dict[str, Any]) -> None:
    """Images some clients attach as ``app.bsky.richtext.facet#image`` links in the text."""
    for facet in _dicts(record.get("facets")):
        for feature in _dicts(facet.get("features")):
            if str(feature.get("$type", "")).endswith("#image"):
                media.add("photo", _http_url(feature))


def _view_embed(media: _Media, embed: Any, source: str, depth: int) -> None:
    """The media part of a view embed; quotes are handled by the caller, one level only."""
    if not isinstance(embed, dict) or depth > _MAX_DEPTH:
        return
    kind = _kind(embed.get("$type"))
    if kind == "images":
        for image in _dicts(embed.get("images")):
            full = image.get("fullsize") or image.get("thumb")
            media.add("photo", full, (image.get("thumb"),), _cdn_cid(full), source)
    elif kind == "video":
        cid = embed.get("cid") or _cdn_cid(str(embed.get("playlist", "")).rsplit("/", 1)[0])
        media.add("video", embed.get("playlist"), (embed.get("thumbnail"),), cid, source)
    elif kind == "external":
        _external(media, embed.get("external"), None, source)
    elif kind == "recordwithmedia":
        _view_embed(media, embed.get("media"), source, depth + 1)


def _quoted(media: _Media, container: Any, depth: int) -> None:
    """Media shown inside a quoted post (``record#viewRecord.embeds``), credited to it."""
    if not isinstance(container, dict):
        return
    record = container.get("record")
    if not isinstance(record, dict):
        return
    uri = record.get("uri")
    source = uri if isinstance(uri, str) else ""
    for inner in _dicts(record.get("embeds")):
        _view_embed(media, inner, source, depth + 1)


def _external(media: _Media, external: Any, did: str | None, source: str) -> None:
    if not isinstance(external, dict):
        return
    thumb = external.get("thumb")
    cid = ""
    if did is not None:  # a raw record: the thumb is a blob ref
        cid = _blob_cid(thumb)
        thumb = _BSKY_THUMB.format(did=did, cid=cid) if cid else None
    else:
        cid = _cdn_cid(thumb)
    uri = external.get("uri")
    if _is_gif_link(uri):
        media.add("gif", uri, (thumb,), cid, source)
    else:
        media.add("thumbnail", thumb, (), cid, source)


def bluesky_record_media(record: dict[str, Any], did: str, post_id: str) -> list[MediaRef]:
    """Media of a raw ``app.bsky.feed.post`` record: URLs built from the DID and blob CIDs.

    A quote's media are not in a raw record (only the quoted post's URI), so none are listed.
    """
    media = _Media("bluesky", post_id)
    _record_embed(media, record.get("embed"), did, 0)
    return media.items


def _record_embed(media: _Media, embed: Any, did: str, depth: int) -> None:
    if not isinstance(embed, dict) or depth > _MAX_DEPTH:
        return
    kind = _kind(embed.get("$type"))
    if kind in ("images", "image", "viewimages"):
        items = embed.get("images") or embed.get("viewImage")
        for item in (
            [items] if isinstance(items, dict) else items if isinstance(items, list) else ()
        ):
            _record_image(media, item, did)
    elif kind == "video":
        _record_video(media, embed.get("video"), None, did)
    elif kind == "videos":
        for item in _dicts(embed.get("videos")):
            _record_video(media, item.get("video", item), item.get("thumb"), did)
    elif kind == "media":
        entries = embed.get("media")
        for entry in [entries] if isinstance(entries, dict) else _dicts(entries):
            _record_media_entry(media, entry, did)
    elif kind == "external":
        _external(media, embed.get("external"), did, "")
    elif kind == "recordwithmedia":
        _record_embed(media, embed.get("media"), did, depth + 1)
    # Anything else (quotes, files, geo points, link lists, other lexicons) has no media we
    # can address: ignored on purpose.


def _record_image(media: _Media, item: Any, did: str) -> None:
    if isinstance(item, str):
        item = {"image": item}
    if not isinstance(item, dict):
        return
    cid = _blob_cid(item.get("image"))
    if cid:
        media.add(
            "photo",
            _BSKY_IMAGE.format(did=did, cid=cid),
            (_BSKY_THUMB.format(did=did, cid=cid),),
            cid,
        )
    else:  # "viewImages"-style embeds written by some clients hold a plain URL
        media.add("photo", _http_url(item))


def _record_video(media: _Media, blob: Any, thumb: Any, did: str) -> None:
    cid = _blob_cid(blob)
    if not cid:
        return
    encoded = quote(did, safe="")
    alternatives = [_BSKY_VIDEO_THUMB.format(did=encoded, cid=cid)]
    thumb_cid = _blob_cid(thumb)
    if thumb_cid:
        alternatives.insert(0, _BSKY_IMAGE.format(did=did, cid=thumb_cid))
    media.add("video", _BSKY_VIDEO.format(did=encoded, cid=cid), alternatives, cid)


def _record_media_entry(media: _Media, entry: Any, did: str) -> None:
    """One item of the third-party ``app.bsky.embed.media`` embed (image or video blob)."""
    if not isinstance(entry, dict):
        return
    blob = entry.get("video") or entry.get("media") or entry.get("image")
    mime = blob.get("mimeType") if isinstance(blob, dict) else None
    mime = mime or entry.get("mimeType") or ""
    if isinstance(mime, str) and mime.startswith("image"):
        _record_image(media, {"image": blob}, did)
    else:
        _record_video(media, blob, entry.get("thumb"), did)


# --------------------------------------------------------------------------- Mastodon


def mastodon_media(
    status: dict[str, Any], post_id: str, id_of: Callable[[dict[str, Any]], str]
) -> list[MediaRef]:
    """Attachments of a status; a boost's (and a quote's) come from the status they show.

    ``id_of`` gives a status's shoal id, so media can be credited to the boosted post.
    """
    media = _Media("mastodon", post_id)
    reblog = status.get("reblog")
    if isinstance(reblog, dict):
        _attachments(media, reblog.get("media_attachments"), id_of(reblog))
        return media.items
    _attachments(media, status.get("media_attachments"), "")
    quote_ = status.get("quote")
    quoted = quote_.get("quoted_status") if isinstance(quote_, dict) else None
    if isinstance(quoted, dict):
        _attachments(media, quoted.get("media_attachments"), id_of(quoted))
    return media.items


def _attachments(media: _Media, attachments: Any, source: str) -> None:
    for att in _dicts(attachments):
        url = att.get("url") or att.get("remote_url")
        if not url:  # still processing (HTTP 202): nothing to fetch yet
            continue
        media.add(
            _MASTODON_TYPES.get(str(att.get("type")), "unknown"),
            url,
            (att.get("remote_url"), att.get("preview_url")),
            att.get("id"),
            source,
        )


# --------------------------------------------------------------------------- TikTok


def tiktok_item_media(item: dict[str, Any], post_id: str) -> list[MediaRef]:
    """The video of a web ``itemStruct`` (or the images of a photo-mode post)."""
    media = _Media("tiktok", post_id)
    video = item.get("video")
    video = video if isinstance(video, dict) else {}
    cover = video.get("cover") or video.get("originCover")
    image_post = item.get("imagePost")
    if isinstance(image_post, dict) and image_post.get("images"):
        for image in _dicts(image_post["images"]):
            urls = _obj(image.get("imageURL")).get("urlList")
            if isinstance(urls, list) and urls:
                media.add("photo", urls[0], urls[1:])
        return media.items
    play = video.get("playAddr") or video.get("downloadAddr")
    media.add("video", play, (video.get("downloadAddr"), cover), item.get("id"))
    return media.items


def tiktok_scraper_media(item: dict[str, Any], post_id: str) -> list[MediaRef]:
    """The video of a tiktok-scraper record: the watermark-free URL when it has one."""
    media = _Media("tiktok", post_id)
    covers = item.get("covers")
    covers = covers if isinstance(covers, dict) else {}
    url = item.get("videoUrlNoWaterMark") or item.get("videoUrl")
    media.add(
        "video",
        url,
        (item.get("videoUrl"), covers.get("default"), covers.get("origin")),
        item.get("id"),
    )
    return media.items


def tiktok_page_url(username: Any, video_id: Any) -> str:
    """The web page of a video; yt-dlp (and a browser) resolve it to the playable file."""
    user = username if isinstance(username, str) else ""
    return f"https://www.tiktok.com/@{user}/video/{video_id}"


def tiktok_research_media(video: dict[str, Any], post_id: str) -> list[MediaRef]:
    """A Research API video has no file URL, only its id and author: its page is the media
    URL, so the fetch step (per host, like any media) downloads it."""
    media = _Media("tiktok", post_id)
    media.add("video", tiktok_page_url(video.get("username"), post_id), (), post_id)
    return media.items


# --------------------------------------------------------------------------- Instagram


def instagram_media(item: dict[str, Any], post_id: str) -> list[MediaRef]:
    """Photo, reel, or each carousel child in order, each with its own image/video."""
    media = _Media("instagram", post_id)
    children = item.get("carousel_media")
    if item.get("media_type") == 8 and isinstance(children, list):
        for child in children:
            if isinstance(child, dict):
                _instagram_one(media, child)
    else:
        _instagram_one(media, item)
    return media.items


def _urls(versions: Any) -> list[str]:
    """Rendition URLs in the API's order: the first is the one Instagram's own player picks.

    Images come largest first; videos usually too, but a few reels list a larger (type 104,
    1440x2560) rendition last; it stays reachable as an alternative.
    """
    if not isinstance(versions, list):
        return []
    return [v["url"] for v in versions if isinstance(v, dict) and v.get("url")]


def _instagram_one(media: _Media, item: dict[str, Any]) -> None:
    versions = item.get("image_versions2")
    images = _urls(versions.get("candidates") if isinstance(versions, dict) else None)
    videos = _urls(item.get("video_versions"))
    key = item.get("pk") or item.get("id")
    if videos:
        media.add("video", videos[0], [*videos[1:], *images[:1]], key)
    elif images:
        media.add("photo", images[0], images[1:2], key)


# --------------------------------------------------------------------------- keyword images


def image_search_media(result: dict[str, Any], post_id: str) -> list[MediaRef]:
    """The found image (an http(s) or a ``data:`` URL), its thumbnail as the fallback."""
    media = _Media("images", post_id)
    media.add("photo", result.get("image"), (result.get("thumbnail"),))
    return media.items
