"""Tests of lsutils.book.foundations (chapters 1 and 2)."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import lsutils as ls  # noqa: E402
from lsutils.book import foundations as ch  # noqa: E402


# ------------------------------------------------------------------------------------------- resample_labels
def test_resample_labels_expectation_is_the_smoothed_target():
    """Averaged over many draws, the one-hot of the redrawn label is label smoothing's target."""
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 3, 7])
    draws = torch.stack([ch.resample_labels(y, 10, 0.2, generator=g) for _ in range(20_000)])
    mean_target = F.one_hot(draws, 10).double().mean(dim=0)
    assert torch.allclose(mean_target, ls.smooth_targets(y, 10, 0.2, dtype=torch.float64), atol=0.01)


def test_resample_labels_extremes_shape_and_reproducibility():
    y = torch.randint(0, 5, (4, 6), generator=torch.Generator().manual_seed(1))
    assert torch.equal(ch.resample_labels(y, 5, 0.0), y)                    # ε = 0: nothing changes
    out = ch.resample_labels(y, 5, 1.0, generator=torch.Generator().manual_seed(2))
    assert out.shape == y.shape and out.dtype == torch.long and bool(((out >= 0) & (out < 5)).all())
    a = ch.resample_labels(y, 5, 0.5, generator=torch.Generator().manual_seed(3))
    b = ch.resample_labels(y, 5, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # with ε = 1 every label is uniform over all K classes (the true one included)
    big = ch.resample_labels(torch.zeros(50_000, dtype=torch.long), 5, 1.0,
                             generator=torch.Generator().manual_seed(4))
    freq = torch.bincount(big, minlength=5).double() / big.numel()
    assert torch.allclose(freq, torch.full((5,), 0.2, dtype=torch.float64), atol=0.01)


def test_resample_labels_rejects_bad_input():
    with pytest.raises(TypeError, match="integer"):
        ch.resample_labels(torch.tensor([0.5]), 3, 0.1)
    with pytest.raises(ValueError):
        ch.resample_labels(torch.tensor([3]), 3, 0.1)                       # class out of range
    with pytest.raises(ValueError):
        ch.resample_labels(torch.tensor([0]), 3, 1.5)                       # ε outside [0, 1]
    with pytest.raises(TypeError, match="generator"):
        ch.resample_labels(torch.tensor([0]), 3, 0.1, generator=0)


# ------------------------------------------------------------------------------------ looks_like_probabilities
def test_looks_like_probabilities():
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(64, 10, generator=g)
    assert not ch.looks_like_probabilities(z)
    assert ch.looks_like_probabilities(z.softmax(dim=1))
    assert ch.looks_like_probabilities(z.softmax(dim=0), dim=0) and not ch.looks_like_probabilities(z.softmax(dim=0))
    # in [0, 1] but rows not summing to 1 (e.g. sigmoid outputs) are not a distribution
    assert not ch.looks_like_probabilities(torch.sigmoid(z))
    # rows summing to 1 with a negative entry are not probabilities
    assert not ch.looks_like_probabilities(torch.tensor([[1.5, -0.5]]))
    # token sequences (N, K, T)
    assert ch.looks_like_probabilities(torch.randn(2, 5, 7, generator=g).softmax(dim=1))


def test_looks_like_probabilities_rejects_bad_input():
    with pytest.raises(TypeError):
        ch.looks_like_probabilities([[0.5, 0.5]])
    with pytest.raises(TypeError, match="floating"):
        ch.looks_like_probabilities(torch.tensor([[1, 0]]))
    with pytest.raises(ValueError, match="dim"):
        ch.looks_like_probabilities(torch.rand(3, 4), dim=2)


# ---------------------------------------------------------------------------------------------- source_excerpt
def _long_function(x):
    keep = x  # a comment that goes
    total = keep + keep + keep + keep + keep + keep + keep + keep + keep + keep + keep + keep
    return total


def test_source_excerpt_is_the_same_code_and_fits():
    text = ch.source_excerpt(_long_function, "keep = x", width=40)
    assert "comment" not in text and text.splitlines()[0] == "keep = x"
    assert max(len(line) for line in text.splitlines()) <= 40
    assert text.count("\\\n") >= 2                                         # continued, not cut
    env = {"x": 2}
    exec(compile(text.replace("return total", "result = total"), "<excerpt>", "exec"), env)
    assert env["result"] == 24
    # the book's use: the heart of the hand-written loss fits a 76-character page
    heart = ch.source_excerpt(ls.smoothed_cross_entropy, "keep = target")
    assert max(len(line) for line in heart.splitlines()) <= 76 and "per = (1.0 - epsilon)" in heart


def test_source_excerpt_rejects_bad_input():
    with pytest.raises(ValueError, match="does not occur"):
        ch.source_excerpt(_long_function, "no such line")
    with pytest.raises(TypeError):
        ch.source_excerpt("not a function", "x")
    with pytest.raises(TypeError):
        ch.source_excerpt(_long_function, "")
    with pytest.raises(ValueError):
        ch.source_excerpt(_long_function, "keep", width=5)


def test_source_excerpt_refuses_to_break_inside_a_string():
    def f():
        s = "a string with many words that cannot be broken anywhere safely at all"
        return s

    with pytest.raises(ValueError):
        ch.source_excerpt(f, "s = ", width=30)


# --------------------------------------------------------------------------------------------------- figures
def test_plot_target_schemes():
    fig = ch.plot_target_schemes({"redrawn": [1, 1, 0, 1], "flipped": [0, 0, 0, 0]}, smoothed=0.91)
    ax = fig.axes[0]
    means = [line.get_ydata() for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert any(list(m) == [1.0, 1.0, 2 / 3, 0.75] for m in means)           # running mean of the redrawn label
    assert any(float(line.get_ydata()[0]) == 0.91 for line in ax.get_lines())
    plt.close(fig)
    with pytest.raises(TypeError):
        ch.plot_target_schemes([1, 0], smoothed=0.9)
    with pytest.raises(ValueError):
        ch.plot_target_schemes({"a": []}, smoothed=0.9)
    with pytest.raises(ValueError):
        ch.plot_target_schemes({"a": [1]}, smoothed=1.5)


def test_plot_logit_gap():
    alphas, dots = [0.01, 0.1, 0.5], [0.1]
    closed = {10: [ls.optimal_logit_gap(10, a) for a in alphas]}
    fig = ch.plot_logit_gap(alphas, closed, dots, {10: [4.51]})
    assert len(fig.axes[0].get_lines()) >= 2 and fig.axes[0].get_xscale() == "log"
    plt.close(fig)
    with pytest.raises(ValueError, match="same keys"):
        ch.plot_logit_gap(alphas, closed, dots, {100: [6.8]})
    with pytest.raises(ValueError, match="closed-form values"):
        ch.plot_logit_gap(alphas, {10: [1.0]}, dots, {10: [4.51]})
    with pytest.raises(ValueError, match="positive"):
        ch.plot_logit_gap([0.0, 0.1], {10: [1.0, 2.0]}, dots, {10: [4.51]})


def test_plot_double_softmax():
    h = {"loss": [2.3, 1.0], "grad_norm": [1.0, 0.1], "gap": [0.0, 4.5]}
    fig = ch.plot_double_softmax({"right": h}, {"H(q')": 0.5, "floor": math.log(math.e + 9) - 0.91})
    assert len(fig.axes) == 3 and fig.axes[1].get_yscale() == "log"
    assert len(fig.axes[0].get_lines()) == 3                                 # the run and two floors
    plt.close(fig)
    with pytest.raises(ValueError, match="keys"):
        ch.plot_double_softmax({"right": {"loss": [1.0]}}, {})
    with pytest.raises(TypeError):
        ch.plot_double_softmax({}, {})
    with pytest.raises(TypeError):
        ch.plot_double_softmax({"right": h}, [0.5])
