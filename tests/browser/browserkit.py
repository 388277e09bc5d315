"""Shared pieces of the real-browser tests (the fixtures are registered by ``conftest.py``): finding Chromium, a local web server, the driver, full-page screenshots
and the check that nothing on a page scrolls sideways.

Chromium is looked up as ``$CHROME_BIN`` (e.g. the path that CI's set-up step reports), then ``chromium``,
``chromium-browser``, ``google-chrome``, ``google-chrome-stable`` on ``PATH``; ChromeDriver as ``$CHROMEDRIVER``,
then ``chromedriver`` on ``PATH``. Without both, the tests are skipped with the reason (``make test`` prints it).
"""
from __future__ import annotations

import base64
import functools
import http.server
import os
import shutil
import struct
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "_build" / "screenshots"
WINDOW = (1280, 1600)  # a laptop-sized desktop window: the width at which "scrolls sideways" is judged


def _first_executable(env: str, names: tuple[str, ...]) -> str | None:
    explicit = os.environ.get(env, "").strip()
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _first_executable("CHROME_BIN", ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"))
DRIVER = _first_executable("CHROMEDRIVER", ("chromedriver",))
NO_BROWSER_REASON = ("headless Chromium not found: apt-get install chromium chromium-driver (.ci/run does), or set "
                     "CHROME_BIN and CHROMEDRIVER to a Chrome/Chromium and its ChromeDriver"
                     + (f" (CHROME_BIN={os.environ['CHROME_BIN']!r} is not executable)"
                        if os.environ.get("CHROME_BIN") and CHROMIUM is None else "")
                     + (f" (CHROMEDRIVER={os.environ['CHROMEDRIVER']!r} is not executable)"
                        if os.environ.get("CHROMEDRIVER") and DRIVER is None else ""))
requires_browser = pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason=NO_BROWSER_REASON)


def pytest_report_header(config):
    return [f"browser: {CHROMIUM or 'none'}; driver: {DRIVER or 'none'}"]


def serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1 (a free port) from a daemon thread; returns ``(base_url, httpd)``."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args, **kwargs):  # noqa: D401 - silence the per-request log
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (WebDriver via Selenium, the driver found above)."""
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(NO_BROWSER_REASON)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # no background traffic (the tests run with the network off); no scrollbars in screenshots
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def full_page_screenshot(driver, path: Path) -> tuple[int, int]:
    """Save a PNG of the *whole* page (not only the window) at ``path``; returns its ``(width, height)``.

    The viewport is made as tall as the document (DevTools ``Emulation.setDeviceMetricsOverride``, window width
    kept) and captured in one image, then restored. (``captureBeyondViewport`` alone shifted the theme's content
    column sideways in the image, cutting its left part, though the page itself did not scroll.) Fails if the
    image is shorter than the document, i.e. if the page was cut.
    """
    width = driver.execute_script("return window.innerWidth")
    full = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": full, "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    png = base64.b64decode(shot["data"])
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk of a PNG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    document = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    assert height >= document - 2, f"{path.name}: screenshot is {height} px tall, the page {document} px: cut"
    return width, height


# Kinds of element of a Jupyter Book page that must fit the page's width, as CSS selectors, checked in this order
# (an element inside or around one already reported is not reported again). Inline math has no box of its own.
SIDEWAYS_KINDS = [
    ("display math", 'div.math, mjx-container[display="true"]'),
    ("text output", "div.cell_output pre, div.output pre"),
    ("code cell input", "div.cell_input pre"),
    ("code block", "div.highlight pre"),
]

_SIDEWAYS_JS = """
const kinds = arguments[0], found = [], reported = [];
for (const [kind, selector] of kinds) {
  for (const el of document.querySelectorAll(selector)) {
    if (reported.some(r => r.contains(el) || el.contains(r))) continue;
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
      reported.push(el);
      found.push([kind, el.scrollWidth, el.clientWidth, (el.textContent || '').replace(/\\s+/g, ' ').trim().slice(0, 80)]);
    }
  }
}
return found;
"""


def open_folded_cells(driver) -> int:
    """Unfold every ``<details>`` (cells tagged hide-input / hide-cell / hide-output): a reader may open them."""
    return driver.execute_script(
        "const d = Array.from(document.querySelectorAll('details:not([open])')); d.forEach(x => x.open = true);"
        "return d.length")


def sideways_scrollers(driver) -> list[str]:
    """Every display equation, code block, cell input and text output wider than its box (it scrolls sideways
    or spills out), as ``"<kind>: '<first 80 characters>' (content <scrollWidth> px wide in a <clientWidth> px box)"``."""
    rows = driver.execute_script(_SIDEWAYS_JS, SIDEWAYS_KINDS)
    return [f"{kind}: {text!r} (content {scroll} px wide in a {client} px box)" for kind, scroll, client, text in rows]
