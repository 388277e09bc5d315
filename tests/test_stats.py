"""Tests of lsutils.stats: mean ± std, summaries over seeds, paired comparisons."""
from __future__ import annotations

import math

import matplotlib
import pytest

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402


def test_mean_std_matches_statistics_module():
    import statistics

    xs = [0.1, 0.4, 0.35, 0.2]
    m, s = ls.mean_std(xs)
    assert m == pytest.approx(statistics.mean(xs))
    assert s == pytest.approx(statistics.stdev(xs))
    assert ls.mean_std([3.0]) == (3.0, 0.0)


def test_fmt_and_summarize():
    assert ls.stats.fmt_mean_std([0.881, 0.884, 0.879], scale=100, digits=1) == "88.1 ± 0.3"
    rows = [{"loss": l, "seed": s, "acc": a} for l, s, a in [("ce", 0, 0.8), ("ce", 1, 0.9), ("ls", 0, 0.7)]]
    df = ls.stats.summarize(rows, by=["loss"], metrics=["acc"], digits=2)
    assert df.loc["ce", "acc"] == f"0.85 ± {math.sqrt(0.005):.2f}"
    assert df.loc["ls", "n"] == 1 and df.loc["ce", "seeds"] == "0, 1"


@pytest.mark.parametrize("bad, exc", [([], ValueError), ([float("nan")], ValueError), (["x"], TypeError)])
def test_bad_values(bad, exc):
    with pytest.raises(exc):
        ls.mean_std(bad)


def test_summarize_errors():
    with pytest.raises(ValueError, match="lack the columns"):
        ls.stats.summarize([{"loss": "ce"}], by=["loss"], metrics=["acc"])
    with pytest.raises(ValueError, match="empty"):
        ls.stats.summarize([], by=["loss"], metrics=["acc"])
    with pytest.raises(TypeError):
        ls.stats.summarize([{"loss": "ce", "acc": 1}], by="loss", metrics=["acc"])
