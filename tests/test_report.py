import math

import pytest

from lsutils.report import fmt_mean_std, mean_std, summarize


def test_mean_std_matches_statistics_module():
    import statistics

    xs = [0.1, 0.4, 0.35, 0.2]
    m, s = mean_std(xs)
    assert m == pytest.approx(statistics.mean(xs))
    assert s == pytest.approx(statistics.stdev(xs))
    assert mean_std([3.0]) == (3.0, 0.0)


def test_fmt_and_summarize():
    assert fmt_mean_std([0.881, 0.884, 0.879], scale=100, digits=1) == "88.1 ± 0.3"
    rows = [{"loss": l, "seed": s, "acc": a} for l, s, a in [("ce", 0, 0.8), ("ce", 1, 0.9), ("ls", 0, 0.7)]]
    df = summarize(rows, by=["loss"], metrics=["acc"], digits=2)
    assert df.loc["ce", "acc"] == f"0.85 ± {math.sqrt(0.005):.2f}"
    assert df.loc["ls", "n"] == 1 and df.loc["ce", "seeds"] == "0, 1"


@pytest.mark.parametrize("bad, exc", [([], ValueError), ([float("nan")], ValueError), (["x"], TypeError)])
def test_bad_values(bad, exc):
    with pytest.raises(exc):
        mean_std(bad)


def test_summarize_errors():
    with pytest.raises(ValueError, match="lack the keys"):
        summarize([{"loss": "ce"}], by=["loss"], metrics=["acc"])
    with pytest.raises(ValueError, match="empty"):
        summarize([], by=["loss"], metrics=["acc"])
    with pytest.raises(TypeError):
        summarize([{"loss": "ce", "acc": 1}], by="loss", metrics=["acc"])
