"""Results over seeds: mean ± standard deviation, and paired comparisons with a t-test.

Every experiment of the book runs each setting with several seeds. Two settings trained with the same seed share
their initialisation and batch order, so the honest comparison is *paired*: one difference per seed, then a paired
t-test on those differences (:func:`paired_comparison`). With 3 seeds, "the mean difference exceeds twice its
standard deviation" is a paired t of 2·√3 ≈ 3.46 with 2 degrees of freedom: a two-sided p of about 0.07, not 0.05.

>>> fmt_mean_std([0.881, 0.884, 0.879], scale=100, digits=1)
'88.1 ± 0.3'
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

from ._validate import as_real

__all__ = ["mean_std", "fmt_mean_std", "summarize", "paired_comparison", "PairedComparison", "p_text"]


def _as_floats(name: str, values: Iterable[Any]) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be an iterable of numbers, got {type(values).__name__}")
    out = [as_real(f"{name}[{i}]", v) for i, v in enumerate(values)]
    if not out:
        raise ValueError(f"{name} is empty; need at least one value")
    if any(math.isnan(v) for v in out):
        raise ValueError(f"{name} contains NaN: {out}")
    return out


def mean_std(values: Iterable[Any]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for a single value) of ``values``.

    >>> mean_std([1, 2, 3])
    (2.0, 1.0)
    """
    xs = _as_floats("values", values)
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def fmt_mean_std(values: Iterable[Any], *, digits: int = 2, scale: float = 1.0) -> str:
    """``"mean ± std"`` of ``values`` times ``scale`` (e.g. ``scale=100`` for percentages)."""
    m, s = mean_std(values)
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def _frame(rows: Any):
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, Mapping) or isinstance(rows, (str, bytes)):
        raise TypeError(f"rows must be a pandas DataFrame or a list of dicts (one per run), got {type(rows).__name__}")
    rows = list(rows)  # a generator is consumed once, here
    if not rows:
        raise ValueError("rows is empty; need at least one run")
    if not all(isinstance(r, Mapping) for r in rows):
        raise TypeError("rows must be a pandas DataFrame or a list of dicts (one per run)")
    return pd.DataFrame.from_records(rows)


def summarize(rows: Any, by: Sequence[str], metrics: Sequence[str], *, digits: int = 2,
              scale: Mapping[str, float] | None = None, seed_key: str = "seed"):
    """Group ``rows`` (a DataFrame or a list of dicts, one per run) by ``by`` and report each metric as ``mean ± std``.

    Returns a ``pandas.DataFrame`` indexed by the ``by`` columns with one string column per metric
    (``"88.1 ± 0.3"``), ``n`` (runs per group) and ``seeds`` (when the rows have a ``seed_key`` column).

    >>> rows = [{"loss": "ce", "seed": s, "acc": a} for s, a in enumerate([0.88, 0.89])]
    >>> summarize(rows, by=["loss"], metrics=["acc"], scale={"acc": 100}, digits=1).loc["ce", "acc"]
    '88.5 ± 0.7'
    """
    import pandas as pd

    df = _frame(rows)
    if isinstance(by, str) or isinstance(metrics, str):
        raise TypeError("by and metrics must be sequences of column names, e.g. by=['loss'], metrics=['acc']")
    missing = sorted({k for k in list(by) + list(metrics) if k not in df.columns})
    if missing:
        raise ValueError(f"rows lack the columns {missing}; columns present: {sorted(df.columns)}")
    scale = dict(scale or {})
    records = []
    for key, group in df.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rec: dict[str, Any] = dict(zip(by, key))
        for m in metrics:
            rec[m] = fmt_mean_std(group[m], digits=digits, scale=scale.get(m, 1.0))
        rec["n"] = len(group)
        if seed_key in group.columns:
            rec["seeds"] = ", ".join(str(s) for s in group[seed_key])
        records.append(rec)
    return pd.DataFrame.from_records(records).set_index(list(by))


@dataclass(frozen=True)
class PairedComparison:
    """A paired comparison of two arms over seeds: ``diffs`` = arm a − arm b, one per shared seed (times ``scale``).

    ``t`` and ``p``: the paired t-test (two-sided; ``p`` = 1 when every difference is 0); ``ci_low``/``ci_high``:
    the 95 % confidence interval of the mean difference (t distribution, ``n − 1`` degrees of freedom);
    ``verdict``: ``higher``/``lower`` when ``p < alpha``, else ``same``. ``text`` is a one-line summary.
    """

    n: int
    seeds: tuple
    diffs: tuple
    mean: float
    std: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    alpha: float
    verdict: str
    higher: str
    lower: str
    same: str

    @property
    def significant(self) -> bool:
        """Whether ``p < alpha``."""
        return self.p < self.alpha

    def text(self, digits: int = 2) -> str:
        """``"+1.23 ± 0.45 (95 % CI [0.1, 2.3], p = 0.03, n = 3)"``: mean ± std of the paired differences."""
        def f(x: float) -> str:
            return f"{x:+.{digits}f}" if math.isfinite(x) else ("+inf" if x > 0 else "-inf")

        return (f"{self.mean:+.{digits}f} ± {self.std:.{digits}f} (95 % CI [{f(self.ci_low)}, {f(self.ci_high)}], "
                f"{p_text(self.p)}, n = {self.n})")

    def word(self) -> str:
        """The verdict in words: the ``higher``, ``lower`` or ``same`` text given to :func:`paired_comparison`."""
        return {"higher": self.higher, "lower": self.lower, "same": self.same}[self.verdict]

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (for a DataFrame row)."""
        return asdict(self)


def p_text(p: float) -> str:
    """A p-value as the book writes it: ``"p < 0.001"``, else ``"p = "`` with three decimals below 0.01, two above.

    Near the 0.05 threshold two decimals would print "p = 0.05" for a significant 0.048 and for a non-significant
    0.052 alike, so there the value gets as many decimals as it takes to tell which side of 0.05 it is on.

    >>> p_text(0.0004), p_text(0.0061), p_text(0.234)
    ('p < 0.001', 'p = 0.006', 'p = 0.23')
    >>> p_text(0.048), p_text(0.052), p_text(0.04996), p_text(0.05)
    ('p = 0.048', 'p = 0.052', 'p = 0.04996', 'p = 0.05')
    """
    p = as_real("p", p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    if p < 0.001:
        return "p < 0.001"
    if p < 0.01:
        return f"p = {p:.3f}"
    text = f"{p:.2f}"
    digits = 2
    while text == "0.05" and p != 0.05 and digits < 6:   # which side of 0.05 must be visible
        digits += 1
        text = f"{p:.{digits}f}".rstrip("0")
    return f"p = {text}"


def _select(df, name: str, where: Any):
    if not isinstance(where, Mapping) or not where:
        raise TypeError(f"{name} must be a non-empty dict of column → value selecting one arm, e.g. "
                        f"{{'eps': 0.1}}, got {where!r}")
    missing = sorted(k for k in where if k not in df.columns)
    if missing:
        raise ValueError(f"{name} names columns {missing} that the rows lack; columns: {sorted(df.columns)}")
    mask = None
    for col, value in where.items():
        m = df[col] == value if not (isinstance(value, float) and math.isnan(value)) else df[col].isna()
        mask = m if mask is None else mask & m
    sel = df[mask]
    if sel.empty:
        raise ValueError(f"no rows match {name}={dict(where)}")
    return sel


def paired_comparison(rows: Any, metric: str, a: Mapping[str, Any], b: Mapping[str, Any], *, on: str = "seed",
                      metric_b: str | None = None, scale: float = 1.0, alpha: float = 0.05, higher: str = "higher",
                      lower: str = "lower", same: str = "no significant difference") -> PairedComparison:
    """Compare arm ``a`` with arm ``b`` on ``metric``, paired by ``on`` (the seed): a paired t-test.

    ``rows``: a DataFrame (or list of dicts) with one row per run. ``a`` and ``b`` select the two arms by
    column values, e.g. ``a={"eps": 0.1}, b={"eps": 0.0}``; each arm must have one row per ``on`` value, and
    the comparison uses the values both arms share. ``metric_b`` (default ``metric``) is the column read for
    arm ``b`` (e.g. the test ECE of LS against the temperature-scaled ECE of CE). Differences are
    ``(a − b) · scale``.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"eps": [0, 0, 0, .1, .1, .1], "seed": [0, 1, 2] * 2,
    ...                    "ece": [.08, .07, .09, .02, .02, .03]})
    >>> r = paired_comparison(df, "ece", {"eps": .1}, {"eps": 0}, scale=100, lower="LS lower")
    >>> r.text(1), r.word()
    ('-5.7 ± 0.6 (95 % CI [-7.1, -4.2], p = 0.003, n = 3)', 'LS lower')
    """
    from scipy import stats as sps

    df = _frame(rows)
    metric_b = metric if metric_b is None else metric_b
    for m in (metric, metric_b):
        if not isinstance(m, str) or m not in df.columns:
            raise ValueError(f"metric {m!r} is not a column of rows; columns: {sorted(df.columns)}")
    if on not in df.columns:
        raise ValueError(f"on={on!r} is not a column of rows; columns: {sorted(df.columns)}")
    scale = as_real("scale", scale)
    alpha = as_real("alpha", alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    arms = []
    for name, where, col in (("a", a, metric), ("b", b, metric_b)):
        sel = _select(df, name, where)
        dup = sel[on][sel[on].duplicated()].tolist()
        if dup:
            raise ValueError(f"arm {name}={dict(where)} has several rows for {on} = {dup}; select one run per {on}")
        arms.append(dict(zip(sel[on], sel[col].astype(float))))
    keys = [k for k in arms[0] if k in arms[1]]
    if len(keys) < 2:
        raise ValueError(f"a paired comparison needs at least 2 shared {on} values, got {keys} "
                         f"(a has {sorted(arms[0])}, b has {sorted(arms[1])})")
    keys = sorted(keys)
    diffs = [(arms[0][k] - arms[1][k]) * scale for k in keys]
    if any(math.isnan(d) for d in diffs):
        raise ValueError(f"{metric} holds NaN for some runs: differences {diffs}")
    n = len(diffs)
    mean, std = mean_std(diffs)
    se = std / math.sqrt(n)
    q = float(sps.t.ppf(1 - alpha / 2, n - 1))
    if se > 0:
        t = mean / se
        p = float(2 * sps.t.sf(abs(t), n - 1))
    else:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0 else 0.0
    verdict = "same" if p >= alpha else ("higher" if mean > 0 else "lower")
    return PairedComparison(n=n, seeds=tuple(keys), diffs=tuple(diffs), mean=mean, std=std, t=t, p=p,
                            ci_low=mean - q * se, ci_high=mean + q * se, alpha=alpha, verdict=verdict,
                            higher=higher, lower=lower, same=same)
