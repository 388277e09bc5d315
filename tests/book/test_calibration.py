"""Tests of lsutils.book.calibration (chapter 4)."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.book import calibration as ch  # noqa: E402

SMOKE = ls.get_profile("smoke")


def _run(eps, seed, conf, acc, ece=None):
    """A stand-in for a TrainedRun: a real spec and a history with the given per-epoch confidence and accuracy."""
    n = len(conf)
    hist = {"train_loss": [1.0] * n, "train_acc": [0.9] * n, "val_loss": [0.5] * n, "val_acc": list(acc),
            "val_ece": list(ece if ece is not None else [abs(c - a) for c, a in zip(conf, acc)]),
            "val_conf": list(conf)}
    return SimpleNamespace(spec=ls.RunSpec.from_profile(SMOKE, loss=ls.smoothing_spec(eps), seed=seed), history=hist)


def test_grid_and_table3():
    assert ch.EPSILONS[0] == 0.0 and list(ch.EPSILONS) == sorted(ch.EPSILONS)
    assert {0.01, 0.02, 0.05, 0.1, 0.3} <= set(ch.EPSILONS)
    keys = set(ch.MULLER2019_TABLE3[0])
    assert all(set(row) == keys for row in ch.MULLER2019_TABLE3)
    assert [row["ECE as trained"] for row in ch.MULLER2019_TABLE3] == ["0.150", "0.071", "0.056"]


def test_epsilon_and_names():
    spec = ls.RunSpec.from_profile(SMOKE, loss=ls.smoothing_spec(0.05), seed=1)
    assert ch.epsilon_of(spec) == 0.05 and ch.epsilon_of(spec.replace(loss=ls.smoothing_spec(0.0))) == 0.0
    assert ch.loss_name(0.0) == "CE" and ch.loss_name(0.02) == "LS ε=0.02"
    with pytest.raises(ValueError, match="'ce' or 'ls'"):
        ch.epsilon_of({"name": "als", "lam": 0.1})
    with pytest.raises(ValueError, match="eps"):
        ch.loss_name(1.5)


def test_history_frame_and_crossing_epoch():
    runs = [_run(0.0, 0, conf=[0.5, 0.80, 0.90, 0.95], acc=[0.7, 0.80, 0.85, 0.86]),
            _run(0.0, 1, conf=[0.5, 0.82, 0.91, 0.96], acc=[0.7, 0.80, 0.85, 0.85]),
            _run(0.05, 0, conf=[0.5, 0.75, 0.84, 0.87], acc=[0.7, 0.80, 0.85, 0.86])]
    hist = ch.history_frame(runs)
    assert len(hist) == 12 and set(hist["eps"]) == {0.0, 0.05} and hist["epoch"].min() == 1
    ce = hist[hist.eps == 0.0].groupby("epoch")["overconfidence"].mean()
    assert ce.loc[3] == pytest.approx(0.055)
    assert ch.positive_from(ce) == 2            # epoch 2: +0.01 on average, and positive from then on
    assert ch.positive_from(hist[hist.eps == 0.05].groupby("epoch")["overconfidence"].mean()) == 4
    assert ch.positive_from([-0.2, 0.01, -0.01, 0.03]) == 4 and ch.positive_from([0.1, -0.1]) is None
    with pytest.raises(ValueError, match="empty"):
        ch.positive_from([])
    with pytest.raises(ValueError, match="NaN"):
        ch.positive_from([0.1, float("nan")])
    bad = _run(0.0, 0, conf=[0.5], acc=[0.5])
    del bad.history["val_conf"]
    with pytest.raises(ValueError, match="val_conf"):
        ch.history_frame([bad])
    with pytest.raises(TypeError, match="TrainedRun"):
        ch.history_frame([{"spec": None}])
    with pytest.raises(ValueError, match="empty"):
        ch.history_frame([])


def test_select_epsilon_uses_positive_eps_and_flags_the_edge():
    import pandas as pd

    df = pd.DataFrame({"eps": [0, 0, 0.01, 0.01, 0.05, 0.05, 0.3, 0.3],
                       "val_ece": [0.001, 0.002, 0.04, 0.05, 0.02, 0.03, 0.2, 0.1],
                       "ece": [0.9, 0.9, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]})
    eps, means = ch.select_epsilon(df)                 # CE's lower ECE does not count; the test ECE is not read
    assert eps == 0.05 and means.loc[0.3] == pytest.approx(0.15)
    assert ch.select_epsilon(df, "ece")[0] == 0.01
    assert not ch.at_grid_edge(0.05, ch.EPSILONS) and ch.at_grid_edge(0.01, ch.EPSILONS)
    assert ch.at_grid_edge(0.3, ch.EPSILONS)
    with pytest.raises(ValueError, match="column"):
        ch.select_epsilon(df, "nll")
    with pytest.raises(ValueError, match="ε > 0"):
        ch.select_epsilon(df[df.eps == 0])
    with pytest.raises(ValueError, match="not a positive value"):
        ch.at_grid_edge(0.07, ch.EPSILONS)


def test_verdicts_and_texts():
    rows = [{"eps": e, "seed": s, "ece": v} for e, s, v in
            [(0, 0, 0.08), (0, 1, 0.07), (0, 2, 0.09), (0.05, 0, 0.02), (0.05, 1, 0.02), (0.05, 2, 0.03)]]
    pc = ls.paired_comparison(rows, "ece", a={"eps": 0.05}, b={"eps": 0}, scale=100)
    assert ch.verdict(pc, "lower") == "reproduces" and ch.verdict(pc, "higher") == "opposite"
    assert ch.comparison_text(pc, 1).startswith("-5.7 ± 0.6") and "p = 0.003" in ch.comparison_text(pc, 1)
    assert ch.p_text(1e-5) == "p < 0.001"
    with pytest.raises(TypeError, match="PairedComparison"):
        ch.verdict(None, "lower")


def test_plots_draw_and_check_their_input():
    import matplotlib.pyplot as plt
    import pandas as pd

    runs = [_run(e, s, conf=[0.5, 0.9, 0.95], acc=[0.6, 0.85, 0.86]) for e in (0.0, 0.05) for s in (0, 1)]
    hist = ch.history_frame(runs)
    fig = ch.plot_training_curves(hist, [0.0, 0.05], mark_epoch=2, first_epoch=2)
    assert len(fig.axes) == 4 and fig.axes[1].get_xlim()[0] > 1.5
    plt.close(fig)
    with pytest.raises(ValueError, match="not in hist"):
        ch.plot_training_curves(hist, [0.1])
    with pytest.raises(ValueError, match="first_epoch"):
        ch.plot_training_curves(hist, [0.0], first_epoch=9)
    with pytest.raises(TypeError, match="history_frame"):
        ch.plot_training_curves([1, 2], [0.0])

    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(600, 10, generator=g)
    y = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)
    rows = []
    for eps in (0.0, 0.05, 0.1):
        for seed in (0, 1):
            r = ls.metrics.temperature_scaled_report(z[:300] * (1 - eps), y[:300], z[300:] * (1 - eps), y[300:],
                                                     mce_min_count=6)
            rows.append({"eps": eps, "seed": seed, **r})
    fig = ch.plot_sweep(pd.DataFrame(rows), 0.05)
    assert len(fig.axes) == 6 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "0.05", "0.1"]
    plt.close(fig)
    with pytest.raises(ValueError, match="not one of the swept"):
        ch.plot_sweep(pd.DataFrame(rows), 0.2)
    with pytest.raises(ValueError, match="missing"):
        ch.plot_sweep(pd.DataFrame(rows).drop(columns="mce_ts"), 0.05)

    fig = ch.plot_reliability_row({"a": (z.softmax(1), y), "b": ((z / 2).softmax(1), y)})
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "b"
    plt.close(fig)
    with pytest.raises(TypeError, match="pair"):
        ch.plot_reliability_row({"a": z.softmax(1)})

    cmp_rows = [{"eps": e, "seed": s, "ece": v} for e, s, v in
                [(0, 0, 0.08), (0, 1, 0.07), (0, 2, 0.09), (0.05, 0, 0.02), (0.05, 1, 0.02), (0.05, 2, 0.03)]]
    pc = ls.paired_comparison(cmp_rows, "ece", a={"eps": 0.05}, b={"eps": 0}, scale=100)
    fig = ch.plot_claims({"LS − CE": pc, "CE − LS": ls.paired_comparison(cmp_rows, "ece", a={"eps": 0},
                                                                        b={"eps": 0.05}, scale=100)})
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["CE − LS", "LS − CE"]
    plt.close(fig)
    with pytest.raises(TypeError, match="PairedComparison"):
        ch.plot_claims({"x": 0.5})
    plt.close("all")
