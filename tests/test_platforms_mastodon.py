"""Mastodon reader, normaliser and media extraction against real API bodies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import orjson
import pytest

from shoal.formats import detect_format, read_file
from shoal.model import POST_COLUMNS, BadPost, Control, DeadLetter, RawPost
from shoal.normalise import normalise

M4J = "mastodon/sys1yagi__mastodon4j/mastodon4j/src/test/assets"
TAG = f"{M4J}/tag.json"
PUBLIC = f"{M4J}/public_timeline.json"
CASSETTES = "mastodon/halcy__Mastodon.py/tests/cassettes"
MEDIA_202 = f"{CASSETTES}/test_media_post[True].yaml.response-0.POST-v2-media-202.body.json"
MEDIA_200 = f"{CASSETTES}/test_media_post[True].yaml.response-1.GET-media.body.json"
VIDEO_STATUS = f"{CASSETTES}/test_media_post[True].yaml.response-2.POST-statuses.body.json"
TWO_IMAGES = f"{CASSETTES}/test_media_post_multiple.yaml.response-4.POST-statuses.body.json"
EDITED = f"{CASSETTES}/test_status_update_with_media_edit.yaml.response-3.PUT-status.body.json"
ALL = [TAG, PUBLIC, MEDIA_202, MEDIA_200, VIDEO_STATUS, TWO_IMAGES, EDITED]
NOW = "2030-01-01T00:00:00+00:00"

T = TypeVar("T")


def _all_of(items: list[Any], cls: type[T]) -> TypeGuard[list[T]]:
    """Whether every item is a ``cls``; asserted, it also narrows the list's type."""
    return all(isinstance(item, cls) for item in items)


def _posts(path: Path) -> list[RawPost]:
    records = list(read_file(path))
    assert _all_of(records, RawPost)
    return records


def _load(fixtures: Path, name: str):
    return orjson.loads((fixtures / name).read_bytes())


@pytest.mark.parametrize("name", ALL)
def test_mastodon_files_are_detected(fixtures: Path, name: str) -> None:
    assert detect_format(fixtures / name) == "mastodon"


def test_hashtag_timeline_from_many_instances(fixtures: Path) -> None:
    records = list(read_file(fixtures / TAG))
    assert len(records) == 20 and _all_of(records, RawPost)
    statuses = _load(fixtures, TAG)
    # The API id is friends.nico's; the shoal id is the origin's objectId from the uri.
    first = records[0]
    assert statuses[0]["id"] == 714859
    assert first.id == "mastodon.social/3610569"
    assert {r.id.split("/")[0] for r in records} >= {
        "mastodon.social",
        "pawoo.net",
        "framapiaf.org",
    }
    assert len({r.id for r in records}) == 20

    rows = [normalise(r.format, r.payload, NOW) for r in records]
    for n in rows:
        assert set(n.post) == set(POST_COLUMNS) - {"collectors"}
        assert all(isinstance(v, str) for v in n.post.values())
        assert "<" not in n.post["text"] and n.post["text"]
        assert "mastodon" in n.post["hashtags"].split("|")
        assert n.post["author.username"].count("@") == 1
        assert n.user is not None and n.user["id"] == n.post["author_id"]
        assert re.match(r"^2017-04-[0-3]\dT\d\d:\d\d:\d\d\+00:00$", n.post["created_at"])

    with_media = [n for n in rows if n.media]
    assert len(with_media) == 3
    photos = [m for n in with_media for m in n.media]
    assert len(photos) == 4 and {m.type for m in photos} == {"photo"}
    for m in photos:
        assert m.url.startswith("https://d2zoeobnny43zx.cloudfront.net/")
        assert "/original/" in m.url
        remote, preview = m.alternatives
        assert "/original/" in remote and "cloudfront" not in remote  # the origin's file
        assert "/small/" in preview
        assert m.source_post_id == ""
    two = next(n for n in with_media if len(n.media) == 2)
    assert two.post["media_types"] == "photo|photo"
    assert two.post["media_keys"] == "46315|46316"


def test_html_becomes_plain_text(fixtures: Path) -> None:
    rows = [normalise(r.format, r.payload, NOW) for r in _posts(fixtures / TAG)]
    first = rows[0].post["text"]
    # Mention and hashtag links lose their markup; URLs hidden in "invisible" spans are whole.
    assert first.startswith("@alexl @deadsuperhero")
    assert "#Mastodon" in first
    user = rows[0].user
    assert user is not None and "https://jeroenpraat.nl" in user["description"]
    public = [normalise(r.format, r.payload, NOW) for r in _posts(fixtures / PUBLIC)]
    assert len(public) == 20 and not any(n.media for n in public)
    assert public[0].post["text"] == "電話であれ、テキストであれ、伝達能力はしっかり鍛えてほしい。"


def test_replies_and_threads(fixtures: Path) -> None:
    rows = [normalise(r.format, r.payload, NOW).post for r in _posts(fixtures / TAG)]
    replies = [p for p in rows if p["reference_type"] == "replied_to"]
    others = [p for p in rows if not p["reference_type"]]
    assert len(replies) == 8 and len(others) == 12
    # Parents are numbered by the serving instance: not nameable for federated statuses.
    assert all(p["referenced_tweet_id"] == "" and p["conversation_id"] == "" for p in replies)
    assert all(p["conversation_id"] == p["id"] for p in others)


def test_local_statuses_keep_host_and_id(fixtures: Path) -> None:
    for name, kind, count in ((VIDEO_STATUS, "video", 1), (TWO_IMAGES, "photo", 2)):
        (record,) = read_file(fixtures / name)
        assert isinstance(record, RawPost)
        status = record.payload
        assert record.id == f"localhost:3000/{status['id']}"
        n = normalise(record.format, record.payload, NOW)
        assert [m.type for m in n.media] == [kind] * count
        assert n.post["source"] == "Mastodon.py test suite"
        assert n.post["lang"] == "en" and n.post["text"] == "LOL check this out"
        assert n.post["author.username"] == "mastodonpy_test@localhost:3000"
        assert n.post["author.protected"] == "true"  # a locked account
        assert n.post["author.public_metrics.tweet_count"] == "2"
        assert [m.media_key for m in n.media] == [a["id"] for a in status["media_attachments"]]
    (edited,) = read_file(fixtures / EDITED)
    assert isinstance(edited, RawPost)
    n = normalise(edited.format, edited.payload, NOW)
    assert n.media[0].url.endswith(".mp4") and n.media[0].alternatives[0].endswith(".jpeg")


def test_bare_media_attachments_are_not_posts(fixtures: Path) -> None:
    for name in (MEDIA_202, MEDIA_200):
        records = list(read_file(fixtures / name))
        assert len(records) == 1 and isinstance(records[0], Control)
        assert records[0].kind == "media-attachment"


def test_processing_attachment_is_not_downloadable(fixtures: Path) -> None:
    status = _load(fixtures, VIDEO_STATUS)
    processing = _load(fixtures, MEDIA_202)
    assert processing["url"] is None and processing["preview_url"]
    status["media_attachments"] = [processing]
    n = normalise("mastodon-status", status, NOW)
    assert n.media == [] and n.post["media_urls"] == ""
    status["media_attachments"] = [processing, _load(fixtures, MEDIA_200)]
    n = normalise("mastodon-status", status, NOW)
    assert len(n.media) == 1 and n.media[0].position == 0
    assert n.media[0].url.endswith("/original/eeff5cc9d35a00aa.mp4")


def test_boost_shows_the_boosted_status(fixtures: Path) -> None:
    original = _load(fixtures, TWO_IMAGES)
    booster = _load(fixtures, EDITED)
    boost = {
        **booster,
        "id": "999",
        "uri": "http://localhost:3000/users/admin/statuses/999/activity",
        "url": None,
        "content": "",
        "media_attachments": [],
        "reblog": original,
    }
    n = normalise("mastodon-status", boost, NOW)
    assert n.id == "localhost:3000/999"
    assert n.post["reference_type"] == "retweeted"
    assert n.post["referenced_tweet_id"] == f"localhost:3000/{original['id']}"
    assert n.post["text"] == "LOL check this out"
    assert n.post["author.username"] == "admin@localhost:3000"
    assert len(n.media) == 2
    assert {m.source_post_id for m in n.media} == {f"localhost:3000/{original['id']}"}


def test_attachment_types(fixtures: Path) -> None:
    status = _load(fixtures, TWO_IMAGES)
    base = status["media_attachments"][0]
    status["media_attachments"] = [
        {**base, "id": str(i), "type": t, "url": f"https://x.example/{i}"}
        for i, t in enumerate(["gifv", "audio", "video", "image", "unknown"])
    ]
    n = normalise("mastodon-status", status, NOW)
    assert n.post["media_types"] == "gif|audio|video|photo|unknown"


def test_hostile_inputs(fixtures: Path, tmp_path: Path) -> None:
    statuses = _load(fixtures, PUBLIC)
    anonymous = dict(statuses[1])
    anonymous.pop("uri")
    anonymous.pop("url")
    path = tmp_path / "timeline.json"
    path.write_bytes(orjson.dumps([statuses[0], anonymous, {"foo": 1}, 42]))
    records = list(read_file(path, "mastodon"))
    assert isinstance(records[0], RawPost)
    rejected = records[1:]
    assert _all_of(rejected, DeadLetter)
    assert "without uri or url" in rejected[0].reason
    assert all("not a Mastodon" in r.reason for r in rejected[1:])
    assert rejected[2].source == f"{path}[3]" and rejected[2].raw == b"42"

    broken = tmp_path / "broken.json"
    broken.write_bytes(b'[{"id": 1, "account": {}')
    (dead,) = read_file(broken, "mastodon")
    assert isinstance(dead, DeadLetter) and dead.reason.startswith("truncated JSON")

    lines = tmp_path / "statuses.jsonl"
    lines.write_bytes(orjson.dumps(statuses[0]) + b"\n{oops\n" + orjson.dumps(statuses[2]) + b"\n")
    kinds = [type(r) for r in read_file(lines, "mastodon")]
    assert kinds == [RawPost, DeadLetter, RawPost]

    with pytest.raises(BadPost, match="uri or url"):
        normalise("mastodon-status", anonymous, NOW)
    dateless = dict(statuses[0], created_at=None)
    with pytest.raises(BadPost, match="created_at"):
        normalise("mastodon-status", dateless, NOW)
    ancient = dict(statuses[0], created_at="1970-01-01T00:00:00Z")
    with pytest.raises(BadPost, match="absurd"):
        normalise("mastodon-status", ancient, NOW)
