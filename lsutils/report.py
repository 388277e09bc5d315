"""Tables of results over seeds: mean ± standard deviation, the way every chapter reports them.

>>> fmt_mean_std([0.881, 0.884, 0.879], scale=100, digits=1)
'88.1 ± 0.3'
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["mean_std", "fmt_mean_std", "summarize", "glue"]


def _as_floats(name: str, values: Iterable[Any]) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an iterable of numbers: {exc}") from None
    if not out:
        raise ValueError(f"{name} is empty; need at least one value")
    if any(math.isnan(v) for v in out):
        raise ValueError(f"{name} contains NaN: {out}")
    return out


def mean_std(values: Iterable[Any]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for a single value) of ``values``."""
    xs = _as_floats("values", values)
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return m, 0.0
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var)


def fmt_mean_std(values: Iterable[Any], *, digits: int = 2, scale: float = 1.0) -> str:
    """``"mean ± std"`` of ``values`` times ``scale`` (e.g. ``scale=100`` for percentages)."""
    m, s = mean_std(values)
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def summarize(rows: Sequence[Mapping[str, Any]], by: Sequence[str], metrics: Sequence[str], *,
              digits: int = 2, scale: Mapping[str, float] | None = None, seed_key: str = "seed"):
    """Group ``rows`` (one dict per run) by the ``by`` keys and report each metric as ``mean ± std``.

    Returns a ``pandas.DataFrame`` indexed by the ``by`` keys with one string column per metric
    (``"88.1 ± 0.3"``), a column ``n`` (runs per group) and ``seeds`` (the seeds seen, when rows carry ``seed_key``).

    >>> rows = [{"loss": "ce", "seed": s, "acc": a} for s, a in enumerate([0.88, 0.89])]
    >>> summarize(rows, by=["loss"], metrics=["acc"], scale={"acc": 100}, digits=1).loc["ce", "acc"]
    '88.5 ± 0.7'
    """
    import pandas as pd

    if not rows:
        raise ValueError("rows is empty; need at least one run")
    if isinstance(by, str) or isinstance(metrics, str):
        raise TypeError("by and metrics must be sequences of column names, e.g. by=['loss'], metrics=['acc']")
    missing = {k for r in rows for k in list(by) + list(metrics) if k not in r}
    if missing:
        raise ValueError(f"rows lack the keys {sorted(missing)}; keys present: {sorted(rows[0])}")
    scale = dict(scale or {})
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    records = []
    for key, members in groups.items():
        rec: dict[str, Any] = dict(zip(by, key))
        for m in metrics:
            rec[m] = fmt_mean_std([r[m] for r in members], digits=digits, scale=scale.get(m, 1.0))
        rec["n"] = len(members)
        if all(seed_key in r for r in members):
            rec["seeds"] = ", ".join(str(r[seed_key]) for r in members)
        records.append(rec)
    return pd.DataFrame.from_records(records).set_index(list(by))


def glue(name: str, value: Any, *, display: bool = False) -> Any:
    """Store ``value`` under ``name`` for the book's ``{glue:text}`name``` role and return it.

    Uses ``myst_nb.glue`` when myst-nb is installed (the book build); elsewhere (e.g. Colab) it is a quiet no-op,
    so chapters run anywhere. Prose numbers are glued, never typed by hand.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"glue name must be a non-empty str, got {name!r}")
    try:
        from myst_nb import glue as _myst_glue
    except ImportError:
        return value
    _myst_glue(name, value, display=display)
    return value
