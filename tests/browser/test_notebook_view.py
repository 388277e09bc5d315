"""The chapter notebooks as JupyterLab and GitHub-like viewers show them, in headless Chromium.

Every chapter notebook is converted with nbconvert's ``lab`` template (``jupyter nbconvert --to html --template
lab``: JupyterLab's own rendering of the committed outputs, what a reader sees who opens the ``.ipynb`` outside
the book) and opened in Chromium. The network is off under ``make test``, so the template's external scripts
(require.js and MathJax from a CDN) do not load: the test checks what the page shows without them, which is also
what a viewer that runs no JavaScript shows. For each notebook it fails when

* raw ``{glue`` text is visible (a ``{glue}`` role renders only in the book; CONTRIBUTING.md: generate the
  sentence with ``ch.md(...)`` instead);
* the number of images rendered in the outputs differs from the notebook's ``image/png`` outputs (an image that
  did not render, or one that appears from nowhere);
* an output shows an error: a traceback, an ``...Error: ...`` line, or ``Error`` in an error/stderr output.

A full-page screenshot of each is saved under ``_build/screenshots/notebooks/``. To check other notebooks (a
draft, say), list them in ``LSBOOK_NOTEBOOKS`` (separated by ``:``).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from browserkit import ROOT, SHOTS, full_page_screenshot, requires_browser, serve

CHAPTERS = ([Path(p).resolve() for p in os.environ["LSBOOK_NOTEBOOKS"].split(":") if p]
            if os.environ.get("LSBOOK_NOTEBOOKS") else sorted((ROOT / "chapters").glob("*.ipynb")))
pytestmark = requires_browser

# an exception line as Python prints it (``ValueError: ...``, ``torch.OutOfMemoryError: ...``), or a traceback
ERROR_LINE = re.compile(r"^\s*(Traceback \(most recent call last\)|[A-Za-z_][\w.]*(Error|Exception)\b: )", re.M)


def png_outputs(path: Path) -> int:
    """How many ``image/png`` outputs the committed notebook holds (each should render as one image)."""
    nb = nbformat.read(path, as_version=4)
    return sum("image/png" in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """All chapter notebooks converted with nbconvert's lab template (one nbconvert run), served over HTTP."""
    out = tmp_path_factory.mktemp("notebook-view")
    cmd = [sys.executable, "-m", "nbconvert", "--to", "html", "--template", "lab", "--output-dir", str(out),
           *map(str, CHAPTERS)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"nbconvert failed (exit {run.returncode}):\n{run.stderr[-3000:]}"
    url, httpd = serve(out)
    yield url
    httpd.shutdown()


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_as_jupyterlab_shows_it(path, converted, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{converted}/{path.stem}.html")
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")
    full_page_screenshot(browser, SHOTS / "notebooks" / f"{path.stem}.png")
    js = browser.execute_script
    problems = []

    text = js("return document.body.innerText")
    glue = [text[max(0, m.start() - 30):m.start() + 50].replace("\n", " ") for m in re.finditer(r"\{glue", text)]
    if glue:
        problems.append(f"{len(glue)} raw {{glue}} role(s) shown as text, e.g. " + "; ".join(repr(g) for g in glue[:3]))

    images = js("return Array.from(document.querySelectorAll('.jp-OutputArea-output img'))"
                ".map(i => i.complete && i.naturalWidth > 0)")
    want = png_outputs(path)
    if sum(images) != want or not all(images):
        problems.append(f"{sum(images)} image(s) rendered in the outputs ({images.count(False)} broken), "
                        f"but the notebook has {want} image/png output(s)")

    outputs = js("return Array.from(document.querySelectorAll('.jp-OutputArea-output')).map(o => "
                 "[o.getAttribute('data-mime-type') || '', o.innerText])")
    for mime, body in outputs:
        stderr = mime == "application/vnd.jupyter.stderr"
        if ERROR_LINE.search(body) or (stderr and re.search(r"Error|Traceback", body)):
            first = next((line for line in body.splitlines() if re.search(r"Error|Exception|Traceback", line)), body)
            kind = "an error/stderr output" if stderr else "an output"
            problems.append(f"{kind} shows an error: {first.strip()[:120]!r}")

    if problems:
        pytest.fail(f"{path.name} as JupyterLab renders it:\n" + "\n".join(f"  - {p}" for p in problems), pytrace=False)
