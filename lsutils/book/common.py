"""What every chapter of the book shares: generated prose.

Numbers in the book's prose are produced by the cell that computes them, as Markdown that the book, JupyterLab,
Colab and GitHub all render (a ``{glue}`` role renders only in the book)::

    ch.md(f"The CE models reach **{acc:.1f} %** test accuracy.")
"""
from __future__ import annotations

from typing import Any

from lsutils.stats import p_text

__all__ = ["md", "glue", "verdict", "p_text", "comparison_text"]


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


def verdict(comparison: Any, expect: str) -> str:
    """A claim's verdict from a :class:`~lsutils.stats.PairedComparison` (arm a minus arm b).

    ``expect``: the sign the claim predicts for the difference (``"lower"`` or ``"higher"``). Returns
    ``"reproduces"`` (significant, in the claimed direction), ``"opposite"`` (significant, against it) or
    ``"not significant"``.

    >>> from types import SimpleNamespace as NS
    >>> verdict(NS(verdict="lower"), "lower"), verdict(NS(verdict="higher"), "lower"), verdict(NS(verdict="same"), "higher")
    ('reproduces', 'opposite', 'not significant')
    """
    if expect not in ("lower", "higher"):
        raise ValueError(f"expect must be 'lower' or 'higher', got {expect!r}")
    word = getattr(comparison, "verdict", None)
    if word not in ("lower", "higher", "same"):
        raise TypeError(f"comparison must be a PairedComparison (from ls.paired_comparison), got {comparison!r}")
    if word == "same":
        return "not significant"
    return "reproduces" if word == expect else "opposite"


def comparison_text(comparison: Any, digits: int = 2) -> str:
    """``"+1.23 ± 0.45 (95 % CI [+0.1, +2.3], p = 0.03, n = 3)"``: a paired comparison's one-line summary.

    :meth:`lsutils.stats.PairedComparison.text` with the p-value written by :func:`lsutils.stats.p_text`
    (``p < 0.001``, not ``p = < 0.001``).
    """
    if not hasattr(comparison, "text") or not hasattr(comparison, "p"):
        raise TypeError(f"comparison must be a PairedComparison (from ls.paired_comparison), got {comparison!r}")
    return comparison.text(digits).replace("p = < 0.001", "p < 0.001")
