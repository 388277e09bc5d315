"""A real-browser test of the built book: headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

Run by ``make test`` after the book is built from the committed outputs. For every page in ``_toc.yml`` it checks
that the page loads, that no image is broken, that math was typeset by the (offline) MathJax, that chapter notebooks
show a Colab launch link to their own notebook and at least one citation; it saves a screenshot of each page under
``_build/screenshots/`` for a person to look at. Skipped, with the reason, where Chromium is not installed
(``.ci/run`` installs it).
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("LSBOOK_HTML", ROOT / "_build" / "committed" / "_build" / "html"))
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part.get("chapters", [])]
    files += [c["file"] for c in toc.get("chapters", [])]
    return files


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")


pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="headless Chromium not installed: apt-get install chromium chromium-driver (.ci/run does)"),
    pytest.mark.skipif(not (HTML / "index.html").exists(),
                       reason=f"no built book at {HTML}: run `make book-committed` (part of `make test`) first"),
]


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(HTML))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.mark.parametrize("page", toc_files())
def test_page(page, server, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server}/{page}.html")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    assert browser.find_elements("css selector", "article, main"), f"{page}: no article content"
    title = browser.title
    assert "404" not in title and title.strip(), f"{page}: bad title {title!r}"

    # images: every <img> must have loaded
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert not broken, f"{page}: broken images {broken}"

    source = (ROOT / f"{page}.ipynb") if (ROOT / f"{page}.ipynb").exists() else (ROOT / f"{page}.md")
    text = source.read_text()
    if "$" in text:  # math: MathJax (served from the book itself) must have typeset it
        WebDriverWait(browser, 30).until(
            lambda d: d.execute_script("return !!(window.MathJax && MathJax.startup && MathJax.startup.document)"))
        browser.execute_script("return MathJax.startup.promise")
        WebDriverWait(browser, 30).until(
            lambda d: d.execute_script("return document.querySelectorAll('mjx-container').length") > 0)
        errors = browser.execute_script("return document.querySelectorAll('mjx-merror').length")
        assert errors == 0, f"{page}: {errors} math expressions failed to typeset"
        mj = browser.execute_script(
            "return Array.from(document.scripts).map(s => s.src).filter(s => s.includes('mathjax'))")
        assert mj and all(s.startswith(server) for s in mj), f"{page}: MathJax not served locally: {mj}"

    if source.suffix == ".ipynb":
        links = browser.execute_script(
            "return Array.from(document.querySelectorAll('a')).map(a => a.href).filter(h => h.includes('colab.research.google.com'))")
        want = f"{repository_url().replace('https://github.com/', '')}/blob/main/{page}.ipynb"
        assert any(h.endswith(want) for h in links), f"{page}: no Colab link to {want}; found {links}"
        cites = browser.execute_script(
            "return Array.from(document.querySelectorAll('a')).filter(a => a.getAttribute('href') && "
            "a.getAttribute('href').includes('bibliography.html#')).length")
        assert cites > 0, f"{page}: no citation linking to the bibliography"

    # the book reads offline: every resource the page loaded came from the book itself
    external = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(arguments[0]) && !n.startsWith('data:'))", server)
    assert not external, f"{page}: resources loaded from outside the book: {external}"

    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{page.replace('/', '__')}.png"))
