"""The app in a real headless Chromium: clicking the first three examples of every tab that has examples runs
them, shows results and raises no error toast (Gradio's lazy example cache used to fail on the first click,
which the `?example=i` start-up links of the screenshot script do not exercise).

Needs the Debian Chromium (`apt-get install -y chromium`) and the playwright Python package (its own browser
download is not needed: the system Chromium is launched); skips cleanly without either."""

from __future__ import annotations

import os

import pytest

from scripts.screenshot_tabs import CHROMIUM_ARGS, chromium_path

# tab id -> (status element, drawing element, text the status shows once a result is there)
TABS = {
    "explore": ("#explore-status", "#explore-drawing", "person(s), network"),
    "compare": ("#compare-status", "#compare-drawing", "through"),
    "sweep": ("#sweep-status", "#sweep-drawing", "keypoints are called present"),
}
ERRORS = ("Could not run", "Internal error", "Traceback")
TIMEOUT_MS = 180_000  # one example on 2 busy CPU cores; a tiny model, but the detector runs on the full image


def _chromium() -> str:
    path = chromium_path()
    if not path or not os.access(path, os.X_OK):
        pytest.skip("no Chromium binary (apt-get install -y chromium, or set PROBPOSE_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = _chromium()
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Exception as e:  # a binary that cannot start here (missing libraries, ...)
            pytest.skip(f"Chromium at {executable} does not start: {e}")
        yield b
        b.close()


def _drawing_src(page, selector: str) -> str | None:
    img = page.locator(f"{selector} img")
    return img.first.get_attribute("src") if img.count() else None


@pytest.mark.parametrize("tab", sorted(TABS))
def test_clicking_examples_runs_them(browser, served, tab):
    app, url, _ = served
    n = min(3, len(app.examples.example_images()))
    if n == 0:
        pytest.skip("no example images in examples/ or the shared data")
    status_sel, drawing_sel, done = TABS[tab]
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    toasts: list[str] = []
    page.on("console", lambda m: toasts.append(m.text) if m.type == "error" and "toast" in m.text else None)
    try:
        page.goto(f"{url}?tab={tab}", wait_until="load")
        page.locator(drawing_sel).wait_for(state="visible", timeout=60_000)  # `?tab=` has switched to the tab
        items = page.locator(".tabitem:visible .gallery-item")
        items.first.wait_for(state="visible", timeout=60_000)
        assert items.count() >= n
        seen = set()
        for i in range(n):
            before = _drawing_src(page, drawing_sel)
            items.nth(i).click()
            # a new drawing (a new file URL per run) and the tab's result text
            page.wait_for_function(
                """([sel, draw, before, done]) => {
                    const s = document.querySelector(sel), img = document.querySelector(draw + ' img');
                    return s && img && img.getAttribute('src') !== before && s.innerText.includes(done)
                           && !document.body.innerText.includes('processing |');
                }""", arg=[status_sel, drawing_sel, before, done], timeout=TIMEOUT_MS)
            status = page.locator(status_sel).inner_text()
            assert not any(e in status for e in ERRORS), (tab, i, status)
            if tab == "explore":  # the run is on the photo clicked: its people's boxes (or the whole image)
                mode, boxes = app.examples.example_boxes(app.examples.example_images()[i])
                people = 1 if mode == app.examples.BOX_WHOLE else boxes.count("\n") + 1
                assert f"{people} person(s)" in status, (i, status[:300])
            errors = page.locator(".toast-body.error, .toast-body.warning")
            assert errors.count() == 0, (tab, i, errors.all_inner_texts())
            seen.add(_drawing_src(page, drawing_sel))
        assert len(seen) == n and not toasts
    finally:
        page.close()


def test_arrow_keys_on_the_threshold_slider_redraw(browser, served):
    """Gradio fires a slider's `release` on pointer-up only; app.SLIDER_KEYS_JS makes a key that moves it redraw too
    (the score chart's threshold line follows the slider)."""
    app, url, _ = served
    if not app.examples.example_images():
        pytest.skip("no example images")
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    try:
        page.goto(f"{url}?tab=explore", wait_until="load")
        items = page.locator(".tabitem:visible .gallery-item")
        items.first.wait_for(state="visible", timeout=60_000)
        items.first.click()
        page.wait_for_function("() => document.querySelector('#explore-status').innerText.includes('person(s), "
                               "network') && !document.body.innerText.includes('processing |')", timeout=TIMEOUT_MS)
        page.wait_for_function("() => document.querySelector('#explore-bars').innerText.includes('threshold 0.30')",
                               timeout=60_000)  # plotly draws the chart after the response
        slider = page.locator("#explore-threshold input[type=range]")
        slider.focus()
        for _ in range(20):
            page.keyboard.press("ArrowRight")
        page.wait_for_function("() => document.querySelector('#explore-bars').innerText.includes('threshold 0.50')",
                               timeout=TIMEOUT_MS)
        assert page.locator(".toast-body.error, .toast-body.warning").count() == 0
    finally:
        page.close()


def test_cropcoco_tab_opens_on_a_case(browser, served):
    """The CropCOCO explorer shows case 0 (or why there is none) when the page loads, not empty panels."""
    _, url, _ = served
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    try:
        page.goto(f"{url}?tab=cropcoco", wait_until="load")
        # text, not the timer or Gradio's "processing | 0.5s" overlay (seen on a busy machine)
        page.wait_for_function("() => { const e = document.querySelector('#cropcoco-case');"
                               " return e && /[a-z]{3}/i.test(e.innerText)"
                               " && !/processing|queue/i.test(e.innerText); }", timeout=60_000)
        text = page.locator("#cropcoco-case").inner_text()
        assert "Case 0" in text or "no " in text.lower() or "could not" in text.lower(), text
    finally:
        page.close()
