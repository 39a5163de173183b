"""Draw ``docs/serve.png``, the README's picture of ``shoal serve``, from a real run.

    .venv/bin/python docs/make_serve_png.py

Runs ``shoal up --source demo`` into a temporary data dir, serves it with ``shoal serve``,
and takes a screenshot with Debian's chromium through playwright (no download, no
internet), reduced to a 256-colour PNG so the picture stays small (< 150 KB).
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "shoal-data"
        subprocess.run([sys.executable, "-m", "shoal", "up", "--source", "demo:1500",
                        "--data-dir", str(data), "--idle-exit", "2", "--log-level", "warning"],
                       check=True, timeout=600)
        proc = subprocess.Popen([sys.executable, "-m", "shoal", "serve", "--data-dir", str(data),
                                 "--port", "0", "--refresh", "0"], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[1]
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1100, "height": 1400})
                page.goto(url)
                page.wait_for_selector('body[data-generation="1"]', timeout=60_000)
                page.wait_for_function("() => [...document.querySelectorAll('img.chart')]"
                                       ".every(i => i.naturalWidth > 0)", timeout=60_000)
                png = page.screenshot(full_page=False)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    with Image.open(io.BytesIO(png)) as img:
        small = img.convert("RGB").resize((img.width * 3 // 4, img.height * 3 // 4),
                                          Image.Resampling.LANCZOS)
        out = ROOT / "docs" / "serve.png"
        small.quantize(colors=128).save(out, optimize=True)
    print(f"{out.relative_to(ROOT)}: {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
