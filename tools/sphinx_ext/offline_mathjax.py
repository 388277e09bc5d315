"""Sphinx extension: serve MathJax 3 from the built book instead of a CDN, so the book reads offline.

MathJax's files come from the PyPI package ``django-static-mathjax`` (a plain copy of MathJax 3's ``es5``
build; no Django is needed or imported). The extension copies the CHTML renderer, its fonts and the TeX
extensions into ``_static/mathjax/`` of the HTML output and points Sphinx's ``mathjax_path`` there.
If the package is missing, the build fails with a message saying how to install it.
"""
from __future__ import annotations

import shutil
from importlib.util import find_spec
from pathlib import Path

SKIP = ("sre", "mml-svg.js", "tex-svg.js", "tex-svg-full.js", "tex-mml-svg.js", "tex-chtml-full-speech.js",
        "node-main.js")


def _source() -> Path:
    spec = find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("offline MathJax needs the PyPI package django-static-mathjax "
                           "(pip install 'django-static-mathjax>=3.2'); it is in requirements.txt")
    es5 = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        raise RuntimeError(f"MathJax's tex-chtml.js is not in {es5}; reinstall django-static-mathjax")
    return es5


def _copy(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    dest = Path(app.outdir) / "_static" / "mathjax"
    if (dest / "tex-chtml.js").is_file():
        return
    shutil.copytree(_source(), dest, ignore=lambda d, names: [n for n in names if n in SKIP or n.endswith(".map")],
                    dirs_exist_ok=True)


def setup(app):
    _source()  # fail early, with the fix, if MathJax is missing
    app.connect("config-inited", lambda app, config: setattr(config, "mathjax_path", "mathjax/tex-chtml.js"))
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
