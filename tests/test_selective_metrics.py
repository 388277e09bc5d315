"""Tests of lsutils.metrics' selective classification: risk-coverage curves with ties, AURC / E-AURC, MaxLogit-pNorm."""
from __future__ import annotations

import itertools
import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402


def _brute_force_curve(conf: list[float], correct: list[bool]) -> np.ndarray:
    """Average the risk curve over every order consistent with the confidences (all tie-breaks)."""
    n = len(conf)
    curves = []
    for perm in itertools.permutations(range(n)):
        c = [conf[i] for i in perm]
        if any(c[j] < c[j + 1] for j in range(n - 1)):
            continue  # not sorted by decreasing confidence
        errs = np.cumsum([0 if correct[i] else 1 for i in perm])
        curves.append(errs / np.arange(1, n + 1))
    return np.mean(curves, axis=0)


@pytest.fixture(scope="module")
def small_trained(fashion_mnist_small):
    """A small MLP trained for 2 epochs on real Fashion-MNIST (1,000 images): (model, test split)."""
    ds = fashion_mnist_small
    model = ls.build_model("mlp", 10, 1, width=32)
    ls.fit(model, ds.train.x, ds.train.y, F.cross_entropy, epochs=2, batch_size=100, lr=3e-3, device="cpu",
           progress=False)
    return model, ds.test


@pytest.mark.parametrize("seed", range(5))
def test_curve_breaks_ties_in_expectation(seed):
    g = torch.Generator().manual_seed(seed)
    conf = torch.randint(0, 3, (7,), generator=g).double() / 2        # many ties
    correct = torch.rand(7, generator=g) < 0.6
    curve = ls.risk_coverage_curve(conf, correct)
    expected = _brute_force_curve(conf.tolist(), correct.tolist())
    np.testing.assert_allclose(curve["risk"], expected, atol=1e-12)
    np.testing.assert_allclose(curve["coverage"], np.arange(1, 8) / 7)
    assert np.all(np.diff(curve["threshold"]) <= 0)


def test_aurc_matches_a_plain_loop_without_ties():
    rng = np.random.default_rng(0)
    conf = rng.random(500)
    correct = rng.random(500) < 0.8
    order = np.argsort(-conf)
    risks = [np.mean(~correct[order[:i]]) for i in range(1, 501)]
    assert ls.aurc(torch.from_numpy(conf), torch.from_numpy(correct)) == pytest.approx(np.mean(risks), abs=1e-12)
    # numpy inputs and 0/1 ints are accepted too
    assert ls.aurc(conf, correct.astype(np.int64)) == pytest.approx(np.mean(risks), abs=1e-12)


def test_perfect_and_worst_rankings():
    correct = torch.tensor([True] * 7 + [False] * 3)
    perfect = correct.double()                      # every right prediction more confident than every wrong one
    assert ls.metrics.excess_aurc(perfect, correct) == pytest.approx(0.0, abs=1e-12)
    assert ls.aurc(perfect, correct) == pytest.approx(ls.metrics.optimal_aurc(0.3, 10))
    worst = ls.aurc(1 - perfect, correct)
    constant = ls.aurc(torch.zeros(10), correct)       # no information: every prefix has the base error rate
    assert constant == pytest.approx(0.3)
    assert ls.aurc(perfect, correct) < constant < worst
    assert ls.metrics.selective_risk(perfect, correct, 0.7) == 0.0
    assert ls.metrics.selective_risk(perfect, correct, 1.0) == pytest.approx(0.3)


def test_optimal_aurc_closed_form_for_large_n():
    for e in (0.05, 0.12, 0.4):
        assert ls.metrics.optimal_aurc(e, 200_000) == pytest.approx(e + (1 - e) * math.log(1 - e), abs=1e-4)
    assert ls.metrics.optimal_aurc(0.0, 5) == 0.0 and ls.metrics.optimal_aurc(1.0, 4) == 1.0


@pytest.mark.parametrize("call, exc", [
    (lambda: ls.aurc(torch.zeros(3), torch.zeros(4)), ValueError),
    (lambda: ls.aurc(torch.zeros(3, 1), torch.zeros(3)), ValueError),
    (lambda: ls.aurc([0.1, 0.2], [True, False]), TypeError),
    (lambda: ls.aurc(torch.tensor([0.1, float("nan")]), torch.tensor([True, False])), ValueError),
    (lambda: ls.aurc(torch.tensor([0.1, 0.2]), torch.tensor([2, 0])), ValueError),
    (lambda: ls.metrics.selective_risk(torch.zeros(3), torch.ones(3), 0.0), ValueError),
    (lambda: ls.metrics.optimal_aurc(1.5, 3), ValueError),
    (lambda: ls.metrics.optimal_aurc(0.1, 0), ValueError),
])
def test_bad_inputs_raise(call, exc):
    with pytest.raises(exc):
        call()


def test_pnorm_score_formula_and_invariances():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 10, generator=g) * 3
    for p in (1, 2, 3.5, math.inf):
        zc = z.double() - z.double().mean(1, keepdim=True)
        manual = (zc / zc.norm(p=p, dim=1, keepdim=True)).amax(1)
        got = ls.metrics.pnorm_logit_score(z, p)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, manual)
        torch.testing.assert_close(ls.metrics.pnorm_logit_score(7.0 * z + 2.0, p), got)       # scale and shift free
        uncentred = ls.metrics.pnorm_logit_score(z, p, center=False)
        torch.testing.assert_close(uncentred, (z.double() / z.double().norm(p=p, dim=1, keepdim=True)).amax(1))
    msp_norm = ls.metrics.pnorm_logit_score(z, 2, temperature=0.1)
    zc = z.double() - z.double().mean(1, keepdim=True)
    torch.testing.assert_close(msp_norm, (zc / zc.norm(dim=1, keepdim=True) / 0.1).softmax(1).amax(1))


def test_pnorm_score_degenerate_rows_and_errors():
    z = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
    s = ls.metrics.pnorm_logit_score(z, 2)
    assert s[0] == 0.0 and torch.isfinite(s).all()
    assert ls.metrics.pnorm_logit_score(z, 2, temperature=1.0)[0] == pytest.approx(1 / 3)
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            ls.metrics.pnorm_logit_score(z, bad)
    for bad in (True, "2"):
        with pytest.raises(TypeError):
            ls.metrics.pnorm_logit_score(z, bad)
    with pytest.raises(ValueError):
        ls.metrics.pnorm_logit_score(torch.zeros(3), 2)
    with pytest.raises(TypeError):
        ls.metrics.pnorm_logit_score(torch.zeros(3, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError):
        ls.metrics.pnorm_logit_score(z, 2, temperature=0.0)


def test_select_pnorm_returns_the_argmin_and_msp_baseline():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(400, 10, generator=g) * torch.rand(400, 1, generator=g) * 5
    y = torch.randint(0, 10, (400,), generator=g)
    y[:300] = z[:300].argmax(1)                                  # 75 % right
    r = ls.metrics.select_pnorm(z, y, ps=(1, 2, 4, math.inf))
    correct = z.argmax(1) == y
    for p, value in r["aurc"].items():
        assert value == pytest.approx(ls.aurc(ls.metrics.pnorm_logit_score(z, p), correct))
    assert r["aurc"][r["p"]] == min(r["aurc"].values())
    assert r["msp_aurc"] == pytest.approx(ls.aurc(ls.msp_score(z), correct))
    with pytest.raises(ValueError):
        ls.metrics.select_pnorm(z, y, ps=())
    with pytest.raises(ValueError):
        ls.metrics.select_pnorm(z, y[:10])


def test_selective_report_on_a_real_model(small_trained):
    """The report agrees with the functions it is made of, on a model trained on real data."""
    model, test = small_trained
    z = ls.predict_logits(model, test.x)
    r = ls.metrics.selective_report(z, test.y, coverages=(0.5, 1.0))
    correct = z.argmax(1) == test.y
    assert r["acc"] == pytest.approx(ls.accuracy(z, test.y))
    assert r["risk@100"] == pytest.approx(1 - r["acc"])
    assert r["aurc"] == pytest.approx(ls.aurc(ls.msp_score(z), correct))
    assert r["e_aurc"] == pytest.approx(r["aurc"] - ls.metrics.optimal_aurc(1 - r["acc"], len(correct)))
    # a trained model's confidence ranks its errors better than chance: risk at 50 % coverage < overall risk
    assert r["risk@50"] < r["risk@100"]
    assert 0 <= r["e_aurc"] < r["aurc"]
