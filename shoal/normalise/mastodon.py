"""Mastodon statuses (``mastodon-status``), as any instance's REST or streaming API serves them.

Identity is the hard part: a status's ``id`` is the id *on the instance that served it*, so
the same post fetched from two instances has two ids, and two posts can share one. The id
used here is ``{origin host}/{origin id}`` read from the status's ``uri`` (the ActivityPub id,
or the OStatus ``tag:`` URI of 2017-era servers): for a status local to the serving instance
that is exactly ``{host}/{id}``, and for a federated one it names the same post whichever
instance it was fetched from. Accounts are named by their full handle ``user@host`` for the
same reason.

``in_reply_to_id`` is in the serving instance's numbering, so a reply's parent is only named
when both authors are local to that instance (then serving and origin ids coincide); other
replies keep ``reference_type`` but no ``referenced_tweet_id``, and no thread root is known.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlsplit

from shoal.media.platforms import mastodon_media
from shoal.model import BadPost, Normalised
from shoal.normalise import _platform_rows as rows

_OSTATUS_ID = re.compile(r"objectId=([^:]+)")


def _host(url: Any) -> str:
    if not isinstance(url, str) or "://" not in url:
        return ""
    return urlsplit(url).netloc


def status_id(status: dict[str, Any]) -> str:
    """``{origin host}/{origin id}`` of a status, or "" when neither uri nor url says."""
    uri = status.get("uri")
    if isinstance(uri, str) and uri.startswith("tag:"):
        host = uri[4:].split(",", 1)[0]
        match = _OSTATUS_ID.search(uri)
        if host and match:
            return f"{host}/{match[1]}"
    for link in (uri, status.get("url")):
        host = _host(link)
        if not host or not isinstance(link, str):  # _host already gives "" for a non-str
            continue
        segments = [s for s in urlsplit(link).path.split("/") if s]
        if segments and segments[-1] == "activity":  # a boost's uri: .../statuses/ID/activity
            segments.pop()
        if segments:
            return f"{host}/{segments[-1]}"
    return ""


def _handle(account: dict[str, Any]) -> str:
    acct = rows.text(account.get("acct") or account.get("username"))
    if "@" in acct or not acct:
        return acct
    host = _host(account.get("url")) or _host(account.get("uri"))
    return f"{acct}@{host}" if host else acct


_ANCHOR = re.compile(r"<a\s[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def _links(content: str) -> list[str]:
    """The links of a status's HTML, not counting its mentions and hashtags (also links)."""
    out = []
    for tag in _ANCHOR.findall(content) if "<a" in content else ():
        href = _HREF.search(tag)
        if href and "mention" not in tag and "hashtag" not in tag:
            out.append(html.unescape(href[1]))
    return out


def _reply_target(status: dict[str, Any], account: dict[str, Any], own_id: str) -> str:
    """The parent's shoal id when it can be known (both authors local to the server)."""
    parent = status.get("in_reply_to_id")
    if parent is None or "@" in rows.text(account.get("acct")):
        return ""
    parent_account = status.get("in_reply_to_account_id")
    local = parent_account == account.get("id") or any(
        isinstance(m, dict)
        and m.get("id") == parent_account
        and "@" not in rows.text(m.get("acct"))
        for m in rows.dicts(status.get("mentions"))
    )
    host = own_id.split("/", 1)[0]
    return f"{host}/{parent}" if local and host else ""


def _user(account: dict[str, Any], retrieved: str) -> dict[str, str]:
    handle = _handle(account)
    return rows.user_row(
        retrieved,
        handle,
        username=handle,
        name=account.get("display_name"),
        created_at=rows.iso_or_empty(account.get("created_at")),
        description=rows.html_to_text(rows.text(account.get("note"))),
        verified=False,  # Mastodon has no verified accounts (only verified links)
        protected=bool(account.get("locked")),
        followers_count=account.get("followers_count"),
        following_count=account.get("following_count"),
        tweet_count=account.get("statuses_count"),
    )


@rows.guard("mastodon-status")
def normalise_status(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    """One Status; a boost becomes a ``retweeted`` row showing the boosted text and media."""
    own_id = status_id(payload)
    if not own_id:
        raise BadPost("Mastodon status without uri or url to identify it")
    created = rows.to_datetime(payload.get("created_at"))
    account = payload.get("account")
    if not isinstance(account, dict):
        raise BadPost(f"Mastodon status {own_id} has no account")
    retrieved = rows.retrieved_at(payload, retrieved_at)
    user = _user(account, retrieved)

    reblog = payload.get("reblog") if isinstance(payload.get("reblog"), dict) else None
    shown = reblog or payload
    post = rows.post_row(own_id, user["id"], created, retrieved, user)
    app = payload.get("application")
    post["source"] = rows.text(app.get("name")) if isinstance(app, dict) else ""
    post["lang"] = rows.text(shown.get("language"))
    post["text"] = rows.html_to_text(rows.text(shown.get("content")))
    post["hashtags"] = rows.join(
        rows.unique_lower(t.get("name") for t in rows.dicts(shown.get("tags")))
    )
    quote = payload.get("quote")
    quoted = quote.get("quoted_status") if isinstance(quote, dict) else None
    if reblog is not None:
        post["reference_type"], post["referenced_tweet_id"] = rows.REPOST, status_id(reblog)
    elif isinstance(quoted, dict):
        post["reference_type"], post["referenced_tweet_id"] = rows.QUOTE, status_id(quoted)
    elif payload.get("in_reply_to_id") is not None:
        post["reference_type"] = rows.REPLY
        post["referenced_tweet_id"] = _reply_target(payload, account, own_id)
    if payload.get("in_reply_to_id") is None:
        post["conversation_id"] = own_id
    # A boost's own counts are zeros: the boosted post's, like its text, are what it shows.
    rows.engagement(post, shown.get("reblogs_count"), shown.get("replies_count"),
                    shown.get("favourites_count"), shown.get("quotes_count"))
    # Mentioned accounts as user@host, the way account ids are written here.
    post["mentions"] = rows.join(rows.once(_handle(m) for m in rows.dicts(shown.get("mentions"))))
    rows.link_columns(post, _links(rows.text(shown.get("content"))))
    post["full_text"] = post["text"]
    media = mastodon_media(payload, own_id, status_id)
    rows.media_columns(post, media)
    return Normalised("mastodon", own_id, created, post, user, media)


FORMATS = {"mastodon-status": normalise_status}
