"""The researcher's daily tool, as they type it: output that reads well, stops that are clean,
answers that say what is wrong."""

from __future__ import annotations

import json
import lzma
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.pipeline import read_csv_xz

SHOAL = [sys.executable, "-m", "shoal"]


def shoal(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*SHOAL, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"shoal {' '.join(args)} -> {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def log_records(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_sigterm_stops_up_like_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "d"
    proc = subprocess.Popen([*SHOAL, "up", "--source", "demo:4000", "--data-dir", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not list((data / "twitter").glob("*/*_IDs.txt.xz")):
        assert time.monotonic() < deadline and proc.poll() is None, "nothing sealed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    others = [line for line in err.splitlines() if not line.startswith("{")]
    assert others == ["shoal: stopped (SIGTERM)"], err[-3000:]
    assert not [r for r in log_records(err) if r["level"] == "error"], err[-3000:]
    # Nothing half-written: every sealed file decodes, and no temporary file is left.
    for path in (data / "twitter").glob("*/*.xz"):
        lzma.decompress(path.read_bytes())
    assert not [p for p in data.rglob("*.tmp") if p.is_file() and "_work" not in p.parts]


def test_one_sealed_line_per_hour_and_query_answers(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert shoal("query", "--data-dir", str(tmp_path), "SELECT 1", check=False).stderr == (
        f"shoal: error: nothing is sealed in {tmp_path} yet: no hour has been written there "
        "(`shoal up` or `shoal process` with this --data-dir seal hours)\n")
    # With media, hours are re-sealed as files arrive: still one line per hour.
    run = shoal("up", "--source", "demo:400", "--data-dir", str(data), "--idle-exit", "1")
    sealed = [r for r in log_records(run.stderr) if r["msg"] == "hour sealed"]
    hours = {p.name for p in (data / "twitter").glob("*/*_IDs.txt.xz")}
    assert len(sealed) == len(hours) > 1
    # Per-collector counts of the reports come out as JSON in csv and json.
    csv_out = shoal("query", "--data-dir", str(data), "--format", "csv",
                    "SELECT collectors FROM reports ORDER BY hour_start LIMIT 1").stdout
    cell = csv_out.splitlines()[1].strip('"').replace('""', '"')
    assert set(json.loads(cell)) == {"demo-a", "demo-b"}
    row = json.loads(shoal("query", "--data-dir", str(data), "--format", "json",
                           "SELECT collectors FROM reports LIMIT 1").stdout)
    assert set(row["collectors"]) == {"demo-a", "demo-b"}
    bad = shoal("query", "--data-dir", str(data), "SELECT * FROM tweets", check=False)
    assert bad.returncode == 2 and "(the views are posts, users, media, reports)" in bad.stderr
    # The media view's columns are the ones the README names.
    first = next((data / "twitter").glob("*/*_media.csv.xz"))
    assert {"http_status", "error", "sha256"} <= set(read_csv_xz(first)[0])
