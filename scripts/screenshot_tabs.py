"""Start the app on loopback and take a headless-Chromium screenshot of every tab; exit 1 if a tab shows an error.

    python scripts/screenshot_tabs.py [--out out/screenshots] [--browser /usr/bin/chromium]

Each tab is opened by its own URL (`/?tab=<id>&example=0`: the app selects the tab and, for the image tabs, runs
the first example on load). The Debian Chromium (`apt-get install -y chromium`; flags --headless --no-sandbox
--disable-gpu ...) is driven by playwright-core (node; `npm install playwright-core` into out/node on first use),
which waits until no component is processing, takes the screenshot and dumps the DOM. The DOM must hold the tab's
marker text and no error (Gradio's error toast, our "Could not run", a traceback).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
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
ERROR_PATTERNS = [r"toast-body error", r"Could not run", r"Internal error", r"Connection errored out",
                  r"Something went wrong", r"Traceback \(most recent call last\)"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]

# Gradio renders results asynchronously, so a plain `chromium --screenshot` fires before the run ends (virtual
# time does not wait for the server). playwright-core drives the same Debian Chromium and waits for real.
NODE_SCRIPT = r"""
const { chromium } = require('playwright-core');
const [browserPath, url, png, timeoutMs, userDir] = process.argv.slice(2);
(async () => {
  const ctx = await chromium.launchPersistentContext(userDir, { executablePath: browserPath, headless: true,
    args: %s, viewport: { width: 1400, height: 2000 } });
  const page = await ctx.newPage();
  await page.goto(url, { waitUntil: 'load' });
  const deadline = Date.now() + Number(timeoutMs);
  await page.waitForTimeout(3000);
  while (Date.now() < deadline) {  // until no component shows Gradio's progress timer
    const busy = await page.evaluate(() => document.body.innerText.includes('processing |'));
    if (!busy) break;
    await page.waitForTimeout(500);
  }
  await page.waitForTimeout(1500);  // plotly draws after the data arrives
  await page.screenshot({ path: png, fullPage: false });
  process.stdout.write(await page.content());
  await ctx.close();
})().catch(e => { console.error(e); process.exit(2); });
"""


def shoot(browser: str, url: str, png: Path, timeout_ms: int, node_modules: Path) -> str:
    """Screenshot to `png` once the page is idle; return the rendered DOM."""
    import json

    with tempfile.TemporaryDirectory(prefix="chromium_") as user_dir:
        js = Path(user_dir) / "shoot.js"
        js.write_text(NODE_SCRIPT % json.dumps(CHROMIUM_FLAGS))
        env = {**os.environ, "NODE_PATH": str(node_modules)}
        res = subprocess.run(["node", str(js), browser, url, str(png), str(timeout_ms), str(Path(user_dir) / "p")],
                             capture_output=True, text=True, timeout=timeout_ms / 1000 + 120, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"headless Chromium failed: {res.stderr[-2000:]}")
        return res.stdout


def ensure_playwright(folder: Path) -> Path:
    """node_modules with playwright-core (npm install into a git-ignored folder on first use)."""
    nm = folder / "node_modules"
    if not (nm / "playwright-core").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "playwright-core@1"], cwd=folder,
                       check=True, timeout=600)
    return nm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "out" / "screenshots"))
    ap.add_argument("--browser", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    ap.add_argument("--timeout-ms", type=int, default=120000, help="longest wait for a tab's results")
    ap.add_argument("--node-dir", default=str(ROOT / "out" / "node"), help="where playwright-core is installed")
    ap.add_argument("--tabs", nargs="*", default=list(TABS))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    node_modules = ensure_playwright(Path(args.node_dir))
    import app  # builds the demo

    port = _free_port()
    app.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    theme=app.THEME)
    failures = []
    try:
        # warm the model cache so the page's own runs finish within Chromium's budget
        examples = app.H.example_images()
        if examples:
            app.H.explore_run(examples[0])
            app.H.compare_run(examples[0])
        for tab in args.tabs:
            url = f"http://127.0.0.1:{port}/?tab={tab}&example=0"
            png = out / f"{tab}.png"
            dom = shoot(args.browser, url, png, args.timeout_ms, node_modules)
            (out / f"{tab}.html").write_text(dom)
            errors = [p for p in ERROR_PATTERNS if re.search(p, dom)]
            if "processing |" in dom:
                errors.append("still processing")
            if TABS[tab] not in dom:
                errors.append(f"marker {TABS[tab]!r} missing")
            status = "OK" if not errors else "ERROR: " + ", ".join(errors)
            print(f"{tab:12s} {png}  {status}", flush=True)
            if errors:
                failures.append(tab)
    finally:
        app.demo.close()
    if failures:
        print(f"tabs with errors: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.exit(main())
