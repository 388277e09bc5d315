"""A real-browser test of the built book: headless Chromium and ChromeDriver (see ``browserkit.py`` for where they are
looked up; Debian's ``chromium`` + ``chromium-driver`` here).

Run by ``make test`` after the book is built from the committed outputs. Every page in ``_toc.yml`` is opened once
(at 1280 px wide) and:

* ``test_page``: the page loads, no image is broken, math was typeset by the (offline) MathJax, chapter notebooks
  show a Colab launch link to their own notebook and at least one citation, and nothing is loaded from outside the
  book;
* ``test_nothing_scrolls_sideways``: no display equation, code block, code cell input or text output is wider than
  its box (``scrollWidth > clientWidth + 1``: the reader would have to scroll it sideways), folded cells included;
  the failure names the page, the kind of element and the first 80 characters of its text.

A full-page screenshot of each page (the whole page, as a reader scrolls it, not only the window) is saved under
``_build/screenshots/`` for a person to look at. Skipped, with the reason, where Chromium is not installed
(``.ci/run`` installs it) or the book is not built.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from browserkit import (ROOT, SHOTS, WINDOW, full_page_screenshot, open_folded_cells, requires_browser, serve,
                        sideways_scrollers)

HTML = Path(os.environ.get("LSBOOK_HTML", ROOT / "_build" / "committed" / "_build" / "html"))


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
    requires_browser,
    pytest.mark.skipif(not (HTML / "index.html").exists(),
                       reason=f"no built book at {HTML}: run `make book-committed` (part of `make test`) first"),
]


@pytest.fixture(scope="module")
def server():
    url, httpd = serve(HTML)
    yield url
    httpd.shutdown()


_VISITS: dict[str, dict | str] = {}


def visit(page: str, server: str, browser) -> dict:
    """Open ``page`` once (the two tests share the visit), wait for MathJax, save the full-page screenshot, and
    measure everything the tests check. Returns the measurements; a page that failed to load fails both tests."""
    if page not in _VISITS:
        try:
            _VISITS[page] = _measure(page, server, browser)
        except Exception as exc:  # e.g. a timeout: record it, so that the second test does not wait again
            _VISITS[page] = f"{page}: {type(exc).__name__}: {str(exc).strip() or repr(exc)}"
    found = _VISITS[page]
    if isinstance(found, str):
        pytest.fail(found, pytrace=False)
    return found


def _measure(page: str, server: str, browser) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server}/{page}.html")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    source = (ROOT / f"{page}.ipynb") if (ROOT / f"{page}.ipynb").exists() else (ROOT / f"{page}.md")
    # math: the page has elements that Sphinx marks as math; MathJax (served from the book itself) must have
    # typeset them before anything is measured
    has_math = browser.execute_script("return document.querySelectorAll('.math').length") > 0
    if has_math:
        WebDriverWait(browser, 30).until(
            lambda d: d.execute_script("return !!(window.MathJax && MathJax.startup && MathJax.startup.document)"),
            f"{page}: MathJax did not start within 30 s")
        browser.execute_script("return MathJax.startup.promise")
        WebDriverWait(browser, 30).until(
            lambda d: d.execute_script("return document.querySelectorAll('mjx-container').length") > 0,
            f"{page}: the page has math but MathJax typeset none of it within 30 s")
    js = browser.execute_script
    result = {
        "source": source,
        "has_math": has_math,
        "article": bool(browser.find_elements("css selector", "article, main")),
        "title": browser.title,
        "broken_images": js("return Array.from(document.images)"
                            ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"),
        "math_errors": js("return document.querySelectorAll('mjx-merror').length"),
        "mathjax_scripts": js("return Array.from(document.scripts).map(s => s.src).filter(s => s.includes('mathjax'))"),
        "colab_links": js("return Array.from(document.querySelectorAll('a')).map(a => a.href)"
                          ".filter(h => h.includes('colab.research.google.com'))"),
        "citations": js("return Array.from(document.querySelectorAll('a')).filter(a => a.getAttribute('href') && "
                        "a.getAttribute('href').includes('bibliography.html#')).length"),
        "external": js("return performance.getEntriesByType('resource').map(e => e.name)"
                       ".filter(n => !n.startsWith(arguments[0]) && !n.startsWith('data:'))", server),
    }
    # what a reader sees first (folded cells folded), then unfold everything and measure widths
    result["screenshot"] = full_page_screenshot(browser, SHOTS / f"{page.replace('/', '__')}.png")
    open_folded_cells(browser)
    result["sideways"] = sideways_scrollers(browser)
    return result


@pytest.mark.parametrize("page", toc_files())
def test_page(page, server, browser):
    v = visit(page, server, browser)
    assert v["article"], f"{page}: no article content"
    assert "404" not in v["title"] and v["title"].strip(), f"{page}: bad title {v['title']!r}"
    assert not v["broken_images"], f"{page}: broken images {v['broken_images']}"
    if v["has_math"]:
        assert v["math_errors"] == 0, f"{page}: {v['math_errors']} math expressions failed to typeset"
        mj = v["mathjax_scripts"]
        assert mj and all(s.startswith(server) for s in mj), f"{page}: MathJax not served locally: {mj}"
    if v["source"].suffix == ".ipynb":
        want = f"{repository_url().replace('https://github.com/', '')}/blob/main/{page}.ipynb"
        assert any(h.endswith(want) for h in v["colab_links"]), \
            f"{page}: no Colab link to {want}; found {v['colab_links']}"
        assert v["citations"] > 0, f"{page}: no citation linking to the bibliography"
    # the book reads offline: every resource the page loaded came from the book itself
    assert not v["external"], f"{page}: resources loaded from outside the book: {v['external']}"


@pytest.mark.parametrize("page", toc_files())
def test_nothing_scrolls_sideways(page, server, browser):
    wide = visit(page, server, browser)["sideways"]
    if wide:
        shown = "\n".join(f"  - {w}" for w in wide[:25]) + (f"\n  ... and {len(wide) - 25} more" if len(wide) > 25 else "")
        pytest.fail(f"{page}: {len(wide)} element(s) wider than their box at {WINDOW[0]} px (the reader must scroll "
                    f"them sideways; wrap the line, shorten it, or split the equation):\n{shown}", pytrace=False)
