"""``shoal report day`` over a data dir made by the real pipeline: the same figures as the
day report file the sealer writes, and a chart where a dead collector and a missing hour show."""

from __future__ import annotations

import contextlib
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from PIL import Image

from shoal.app.cli import main
from shoal.charts import DAY_SIZE, day_chart
from shoal.day_report import HourRow, build
from tests.pipeline import pipeline, report_lines
from tests.posts import Post, write_pages

T0 = datetime(2023, 6, 1, 9, 0, tzinfo=UTC)


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def day_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hours 09, 10 and 12 have posts, 11 none; collector "b" is dead from 10 on."""
    root = tmp_path_factory.mktemp("day")
    posts = [Post(T0 + timedelta(hours=h, minutes=m), "u", seq=h * 100 + m)
             for h in (0, 1, 3) for m in range(0, 60, 3)]
    a = write_pages(root / "a.jsonl", posts)
    b = write_pages(root / "b.jsonl", [p for p in posts if p.when < T0 + timedelta(hours=1)][:15])
    pipeline(root / "out", [("a", a), ("b", b)], partitions=2)
    return root / "out"


def test_day_table_equals_the_sealed_day_report(day_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "day.png"
    code, out, err = run(["report", "day", "--data-dir", str(day_dir), "2023-06-01",
                          "--format", "json", "--png", str(png), "--html",
                          str(tmp_path / "day.html")])
    assert code == 0, err
    rows = [orjson.loads(line) for line in out.splitlines()]
    file_rows = report_lines(day_dir / "twitter/2023-06-01/2023-06-01_report.txt")
    header = file_rows[0].split("\t")
    assert [list(r) for r in rows] == [header] * len(rows)
    as_text = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()]
               for r in rows]
    assert as_text == [line.split("\t") for line in file_rows[1:]]
    assert [r["hour"] for r in rows] == ["09", "10", "12"]
    assert [(r["a"], r["b"]) for r in rows] == [(20, 15), (20, 0), (20, 0)]
    assert rows[0]["diff"] == 5 and rows[0]["diff %"] == 25.0
    assert "dead letters 2023-06-01" in err
    with Image.open(png) as img:
        img.load()
        assert img.format == "PNG" and img.size == DAY_SIZE
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 20
        # The gap hours are shaded: plenty of the grey the chart uses for them.
        grey = sum(n for n, c in colours if c == (0xDD, 0xDD, 0xDD))
        assert grey > 0.2 * img.size[0] * img.size[1]
    assert "<table" in (tmp_path / "day.html").read_text()


def test_series_show_gaps_and_a_dead_collector() -> None:
    rows = [HourRow("twitter", "09", 0, {"a": 5, "b": 3}, 6, 2, 0),
            HourRow("twitter", "10", 3600, {"a": 4, "b": 0}, 4, 4, 1)]
    report = build("2023-06-01", rows, {"unreadable": 2})
    series = report.series()
    assert series["b"][9:12] == [3, 0, None]  # alive, dead, nothing sealed
    assert report.gaps() == [f"{h:02d}" for h in range(24) if h not in (9, 10)]
    assert report.table()[1] == ["10", "4", "0", "4", "4", "100.00", "1"]
    assert report.deadletter_total == 2
    assert day_chart(report, fmt="svg").startswith(b"<?xml")


def test_bad_day_is_one_line(day_dir: Path) -> None:
    code, _out, err = run(["report", "day", "--data-dir", str(day_dir), "01/06/2023"])
    assert code == 2 and err.startswith("shoal: error: DAY must look like")


def test_dead_letters_are_counted_by_kind_not_by_bad_value() -> None:
    """A day of bad dates is one row of the report, not one row per date; reasons that are
    different kinds stay apart, and words with an apostrophe are not taken for quotes."""
    from connectors.store.deadletters import reason_of

    def kind(reason: str) -> str:
        return reason_of({"reason": reason})

    dates = {kind(f"absurd created_at '{y}-12-31T23:59:59Z'") for y in (9999, 1900, 2150)}
    assert dates == {"absurd created_at '…'"}
    ids = {kind(f"tweet with an invalid id '{i}' (must be a positive integer)") for i in "0-7x"}
    assert len(ids) == 1
    cut = {kind(f"file unreadable after {n} records: EOF") for n in (0, 12, 40000)}
    assert cut == {"file unreadable after N records"}
    assert kind("UTF-16 file") == "UTF-16 file"  # a number inside a word stays
    assert kind("the collector can't read 'x'") == "the collector can't read '…'"
    assert len({kind("line too large: 5 bytes"), kind("invalid JSON line: x"), dates.pop()}) == 3


def test_axis_follows_the_days_hours_around_summer_time_changes() -> None:
    """On the spring day the skipped hour is no gap (nothing can be sealed for it); on the
    autumn day the repeated hour is on the axis even when nothing was sealed for it."""
    spring = build("2021-03-14", [HourRow("twitter", "01", 0, {"a": 5}, 5, 0, 0)],
                   tz="America/St_Johns")
    assert len(spring.axis()) == 23 and "02" not in spring.axis()
    assert "02" not in spring.gaps()
    autumn = build("2021-10-31", [HourRow("twitter", "02", 0, {"a": 5}, 5, 0, 0)],
                   tz="Europe/Paris")
    assert autumn.axis()[:5] == ["00", "01", "02", "02b", "03"] and len(autumn.axis()) == 25
    assert "02b" in autumn.gaps()
    assert len(build("2021-03-14", [], tz="Asia/Kolkata").axis()) == 24
    # 01:00 Paris on 2021-03-28 starts at 00:00 UTC: named in Paris, not in UTC.
    paris = build("2021-03-28", [HourRow("twitter", "01", 1616889600, {"a": 1}, 1, 0, 0)])
    assert paris.misnamed("Europe/Paris") == [] and paris.misnamed("UTC") == ["01"]


def test_day_command_takes_the_zone_the_hours_were_named_in(day_dir: Path) -> None:
    code, _out, err = run(["report", "day", "--data-dir", str(day_dir), "2021-03-28",
                           "--tz", "Europe/Paris", "--format", "csv"])
    assert code == 0, err
    code, _out, err = run(["report", "day", "--data-dir", str(day_dir), "2021-03-28",
                           "--tz", "Mars/Olympus"])
    assert code == 2 and "unknown time zone" in err, err


def test_dead_letters_are_filed_under_the_local_day_of_the_report(tmp_path: Path) -> None:
    """With --tz Europe/Paris, a letter that arrived at 00:30 local on 2021-10-31 (22:30 UTC
    the day before) belongs in that local day's report, like the posts of that hour; the
    repeated autumn hour gets its own file, as the posts' does."""
    from connectors.store.deadletters import DeadLetterSink, reasons_on
    from shoal.model import DeadLetter

    sink = DeadLetterSink(tmp_path, None, "Europe/Paris").build("dead-letters", 0, 1)
    sink.write_batch([DeadLetter("not JSON", f"t/0/{i}", b"x" * (i + 1), at=at)
                      for i, at in enumerate(("2021-10-30T22:30:00+00:00",
                                              "2021-10-31T01:30:00+00:00"))])
    folder = tmp_path / "_deadletter" / "2021-10-31"
    assert sorted(p.name for p in folder.glob("*.xz")) == [
        "2021-10-31_00_deadletter.jsonl.xz", "2021-10-31_02b_deadletter.jsonl.xz"]
    assert reasons_on(tmp_path, "2021-10-31") == {"not JSON": 2}
    assert not (tmp_path / "_deadletter" / "2021-10-30").exists()


def test_csv_is_csv(day_dir: Path) -> None:
    """Every line of ``--format csv`` is a row of the table; the dead letters go to stderr."""
    code, out, err = run(["report", "day", "--data-dir", str(day_dir), "2023-06-01",
                          "--format", "csv"])
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["hour"] for r in rows] == ["09", "10", "12"]
    assert "dead letters 2023-06-01" in err


def test_a_day_written_without_leading_zeros_is_that_day(day_dir: Path) -> None:
    code, out, err = run(["report", "day", "--data-dir", str(day_dir), "2023-6-1",
                          "--format", "csv"])
    assert code == 0, err
    assert [r["hour"] for r in csv.DictReader(io.StringIO(out))] == ["09", "10", "12"]
    assert "dead letters 2023-06-01" in err


def test_a_collector_named_like_a_column_keeps_its_own_column() -> None:
    """Collectors may be called ``total``, ``late`` or ``hour`` (valid names): the header then
    had two ``total`` columns, so ``--format json`` (a dict per row) kept one number of two,
    the collector's lost, and the HTML tables and live page showed two columns alike."""
    report = build("2024-05-02", [HourRow("twitter", "10", int(datetime(2024, 5, 2, 10,
                                                                         tzinfo=UTC).timestamp()),
                                          {"total": 2, "late": 3, "a": 4}, 4, 2, 0)])
    header = report.header()
    assert len(set(header)) == len(header), header
    row = dict(zip(header, report.values()[0], strict=True))
    assert (row["total (collector)"], row["late (collector)"], row["a"]) == (2, 3, 4)
    assert (row["total"], row["late"]) == (4, 0)
