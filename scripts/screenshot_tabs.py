"""Start the app on loopback and take a headless-Chromium screenshot of every tab; exit 1 if a tab shows an error.

    python scripts/screenshot_tabs.py [--out out/screenshots] [--browser /usr/bin/chromium] [--tabs explore sweep]

Each tab is opened by its URL (`/?tab=<id>`); on the tabs with example photos the first example is then clicked,
as a visitor would (the click path, not a start-up shortcut), and the script waits until the result is drawn.
Needs the Debian Chromium (`apt-get install -y chromium`) and the playwright Python package (`pip install
playwright`; its own browser download is not used). The page must hold the tab's marker text and no error
(Gradio's error toast, our "Could not run", a traceback); the PNG and the DOM (.html) go to --out.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# tab id -> text that must be on the page once the tab has rendered
TABS = {
    "explore": "poses on a padded canvas",
    "compare": "heatmap baseline",
    "cropcoco": "CropCOCO",
    "calibration": "Calibration",
    "sweep": "Threshold sweep",
}
# tabs with example photos: (drawing element, status element, text the status holds once a result is there)
EXAMPLE_TABS = {
    "explore": ("#explore-drawing", "#explore-status", "person(s), network"),
    "compare": ("#compare-drawing", "#compare-status", "through"),
    "sweep": ("#sweep-drawing", "#sweep-status", "keypoints are called present"),
}
ERROR_PATTERNS = [r"toast-body error", r"Could not run", r"Internal error", r"Connection errored out",
                  r"Something went wrong", r"Traceback \(most recent call last\)"]
# headless Chromium as this script, tests/studio/test_browser.py and benchmarks/bench_app.py launch it
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars"]


def chromium_path() -> str | None:
    """The Chromium binary: $PROBPOSE_CHROMIUM, else `chromium` / `chromium-browser` on the PATH; None if none."""
    return os.environ.get("PROBPOSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def shoot(page, url: str, tab: str, png: Path, timeout_ms: int) -> str:
    """Open the tab, click its first example (if it has examples), wait for the result; return the DOM."""
    page.goto(url, wait_until="load")
    page.wait_for_timeout(2000)
    if tab in EXAMPLE_TABS:
        drawing, status, done = EXAMPLE_TABS[tab]
        page.locator(drawing).wait_for(state="visible", timeout=timeout_ms)
        item = page.locator(".tabitem:visible .gallery-item").first
        item.wait_for(state="visible", timeout=timeout_ms)
        item.click()
        try:
            page.wait_for_function("([s, d, done]) => { const e = document.querySelector(s);"
                                   " return e && (e.innerText.includes(done) || e.innerText.includes('Could not'))"
                                   " && document.querySelector(d + ' img'); }",
                                   arg=[status, drawing, done], timeout=timeout_ms)
        except Exception as e:  # noqa: BLE001  (reported as the tab's error below, with the screenshot)
            print(f"{tab}: no result within {timeout_ms} ms ({type(e).__name__})", file=sys.stderr)
    try:  # every tab has plots; plotly draws them once the data is there (the analysis tabs load it on page load)
        page.locator(".tabitem:visible .js-plotly-plot .main-svg").first.wait_for(state="visible",
                                                                                   timeout=min(timeout_ms, 60000))
    except Exception:  # noqa: BLE001  (a tab whose plots stay empty still gets its screenshot)
        print(f"{tab}: no plot drawn", file=sys.stderr)
    deadline = timeout_ms
    while "processing |" in page.inner_text("body") and deadline > 0:
        page.wait_for_timeout(500)
        deadline -= 500
    page.wait_for_timeout(3000)  # plotly draws after the data arrives
    page.screenshot(path=str(png), full_page=True)
    return page.content()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "out" / "screenshots"))
    ap.add_argument("--browser", default=chromium_path() or "chromium")
    ap.add_argument("--timeout-ms", type=int, default=180000, help="longest wait for a tab's results")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--tabs", nargs="*", default=list(TABS), choices=list(TABS))
    args = ap.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("error: needs the playwright package (pip install playwright) and Chromium (apt-get install -y "
              "chromium)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import app  # builds the demo

    _, url, _ = app.demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                                theme=app.THEME, allowed_paths=app.settings.allowed_paths())
    failures = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.browser, args=CHROMIUM_ARGS)
            for tab in args.tabs:
                page = browser.new_page(viewport={"width": args.width, "height": 1200})
                png = out / f"{tab}.png"
                dom = shoot(page, f"{url}?tab={tab}", tab, png, args.timeout_ms)
                page.close()
                (out / f"{tab}.html").write_text(dom)
                errors = [pat for pat in ERROR_PATTERNS if re.search(pat, dom)]
                if "processing |" in dom:
                    errors.append("still processing")
                if TABS[tab] not in dom:
                    errors.append(f"marker {TABS[tab]!r} missing")
                status = "OK" if not errors else "ERROR: " + ", ".join(errors)
                print(f"{tab:12s} {png}  {status}", flush=True)
                if errors:
                    failures.append(tab)
            browser.close()
    finally:
        app.demo.close()
    if failures:
        print(f"tabs with errors: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.exit(main())
