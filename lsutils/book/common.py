"""What every chapter of the book shares: generated prose.

Numbers in the book's prose are produced by the cell that computes them, as Markdown that the book, JupyterLab,
Colab and GitHub all render (a ``{glue}`` role renders only in the book)::

    ch.md(f"The CE models reach **{acc:.1f} %** test accuracy.")
"""
from __future__ import annotations

from typing import Any

__all__ = ["md", "glue"]


def md(text: str, **glue_values: Any) -> Any:
    """Display ``text`` as Markdown (in a notebook) and return it; also print-safe outside Jupyter.

    ``glue_values`` (``name=value``) are glued for the book (``myst_nb.glue``) where a *later page* needs a
    number of this one; within a chapter, write the number into ``text`` instead.

    >>> md("**1** + 1 = 2")  # doctest: +SKIP
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str of Markdown, got {type(text).__name__}")
    for name, value in glue_values.items():
        glue(name, value)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython is installed with the book
        print(text)
        return None
    if get_ipython() is None:
        print(text)
        return None
    display(Markdown(text))
    return None


def glue(name: str, value: Any) -> Any:
    """Store ``value`` under ``name`` for another page of the book (``myst_nb.glue``, not displayed); return it.

    A quiet no-op where myst-nb is not installed (e.g. Colab)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"glue name must be a non-empty str, got {name!r}")
    try:
        from myst_nb import glue as _myst_glue
    except ImportError:
        return value
    _myst_glue(name, value, display=False)
    return value
