"""lsutils.metrics against scikit-learn / torchmetrics, hand-computed examples and bad input."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torchmetrics.classification import MulticlassCalibrationError

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.metrics import (accuracy, calibration_bins, calibration_report, energy_score,  # noqa: E402
                             expected_calibration_error, fit_temperature, max_calibration_error, max_logit_score,
                             msp_score, nll, ood_metrics, plot_reliability, temperature_scaled_report)


def _random_case(n=3000, k=10, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, k, generator=g)
    labels = torch.randint(0, k, (n,), generator=g)
    # make it a half-decent classifier: the true class gets a boost for 70 % of the examples
    boost = (torch.rand(n, generator=g) < 0.7).float() * 4.0
    logits[torch.arange(n), labels] += boost
    return logits, labels


def _tm_ce(probs, labels, norm, n_bins=15):
    metric = MulticlassCalibrationError(num_classes=probs.shape[1], n_bins=n_bins, norm=norm)
    return float(metric(probs.float(), labels))


@pytest.fixture(scope="module")
def real_logits(fashion_mnist_small):
    """Softmax regression (zero init, 60 full-batch Adam steps: deterministic) trained on 1,000 real
    Fashion-MNIST images; its test logits (float32) and labels. It over-fits: over-confident on test."""
    ds = fashion_mnist_small
    x, y = ds.train.x.flatten(1), ds.train.y
    w = torch.zeros(x.shape[1], 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(x @ w + b, y).backward()
        opt.step()
    with torch.no_grad():
        return ds.test.x.flatten(1) @ w + b, ds.test.y


@pytest.fixture(scope="module")
def real_case(real_logits):
    """The real model's probabilities, softened by T = 4 so that no float32 confidence saturates at 1.0."""
    logits, labels = real_logits
    return (logits / 4).softmax(1), labels


@pytest.fixture(scope="module")
def real_overconfident(real_logits):
    """The real model's own probabilities (float32): some confidences are exactly 1.0."""
    logits, labels = real_logits
    return logits.softmax(1), labels


def test_exported_from_package():
    for name in ["accuracy", "nll", "expected_calibration_error", "fit_temperature", "plot_reliability", "msp_score",
                 "max_logit_score", "energy_score", "ood_metrics", "risk_coverage_curve", "aurc"]:
        assert getattr(ls, name) is getattr(ls.metrics, name)


# --------------------------------------------------------------------------------------------- accuracy / NLL
def test_accuracy_and_nll_match_torch():
    logits, labels = _random_case()
    assert accuracy(logits, labels) == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert nll(logits, labels) == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)
    # numpy input works too
    assert accuracy(logits.numpy(), labels.numpy()) == accuracy(logits, labels)


# --------------------------------------------------------------------------------------------- ECE / MCE
@pytest.mark.parametrize("seed, scale, k", [(0, 3.0, 10), (1, 1.0, 10), (2, 2.0, 3), (3, 0.3, 100)])
def test_ece_mce_equal_torchmetrics_random(seed, scale, k):
    logits, labels = _random_case(k=k, scale=scale, seed=seed)
    probs = logits.softmax(1)
    assert (probs.float().max(1).values < 1.0).all()  # no confidence on the edge 1.0 (see the next tests)
    assert expected_calibration_error(probs, labels) == pytest.approx(_tm_ce(probs, labels, "l1"), abs=1e-6)
    assert max_calibration_error(probs, labels) == pytest.approx(_tm_ce(probs, labels, "max"), abs=1e-6)
    for n_bins in (1, 7, 30):
        assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(
            _tm_ce(probs, labels, "l1", n_bins), abs=1e-6)


def test_ece_mce_equal_torchmetrics_real(real_case):
    probs, labels = real_case
    assert (probs.float().max(1).values < 1.0).all()
    ece = expected_calibration_error(probs, labels)
    assert ece > 0.005  # a real model is measurably mis-calibrated, so the comparison is not trivial
    assert ece == pytest.approx(_tm_ce(probs, labels, "l1"), abs=1e-6)
    assert max_calibration_error(probs, labels) == pytest.approx(_tm_ce(probs, labels, "max"), abs=1e-6)


def _ece_reference(probs, labels, n_bins=15):
    """Guo et al.'s reference loop: bins (lower, upper], gt/le comparisons."""
    conf, pred = probs.double().max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    ece, mce = 0.0, 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            gap = abs(correct[in_bin].mean().item() - conf[in_bin].mean().item())
            ece += in_bin.double().mean().item() * gap
            mce = max(mce, gap)
    return ece, mce


def test_ece_hand_computed_and_confidence_one():
    # 4 examples, 2 bins (0, .5], (.5, 1]: all land in bin 2 with conf .9, .8, 1.0, .7 and correctness 1, 0, 1, 1
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [1.0, 0.0], [0.3, 0.7]])
    labels = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(abs(0.75 - 0.85))
    assert max_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.10)
    # a confident float32 model: many confidences are exactly 1.0; we follow Guo's (lower, upper] bins ...
    logits, labels = _random_case(scale=12.0, seed=5)
    probs = logits.softmax(1)
    assert (probs.max(1).values == 1.0).sum() > 50
    ece, mce = _ece_reference(probs, labels)
    assert expected_calibration_error(probs, labels) == pytest.approx(ece, abs=1e-12)
    assert max_calibration_error(probs, labels) == pytest.approx(mce, abs=1e-12)
    # ... while torchmetrics gives those a 16th bin [1, 1] of their own, so the two differ there (documented):
    # two wrong answers at confidence 1.0 and two right ones at 0.95 share Guo's last bin (14/15, 1]:
    # acc 0.5, conf 0.975 -> ECE 0.475; torchmetrics: 0.5 · |1 − 0.95| + 0.5 · |0 − 1| = 0.525
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.95, 0.05], [0.95, 0.05]])
    labels = torch.tensor([1, 1, 0, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.475)
    assert _tm_ce(probs, labels, "l1") == pytest.approx(0.525)


def test_ece_on_saturated_real_model(real_overconfident):
    """Where float32 confidences hit 1.0, ours follows Guo's bins exactly; torchmetrics differs by at most
    twice the fraction of examples at 1.0 (the mass it moves into its extra bin)."""
    probs, labels = real_overconfident
    at_one = (probs.max(1).values == 1.0).double().mean().item()
    assert at_one >= 0.005
    ece, mce = _ece_reference(probs, labels)
    assert expected_calibration_error(probs, labels) == pytest.approx(ece, abs=1e-12)
    assert max_calibration_error(probs, labels) == pytest.approx(mce, abs=1e-12)
    assert abs(expected_calibration_error(probs, labels) - _tm_ce(probs, labels, "l1")) <= 2 * at_one + 1e-6


def test_calibration_bins_consistent_with_ece(real_case):
    probs, labels = real_case
    b = calibration_bins(probs, labels)
    assert set(b) == {"lower", "upper", "count", "accuracy", "confidence"}
    assert all(v.shape == (15,) for v in b.values())
    assert b["count"].sum() == len(labels) and b["count"].dtype == np.int64
    np.testing.assert_allclose(b["upper"] - b["lower"], 1 / 15)
    full = b["count"] > 0
    assert np.isnan(b["accuracy"][~full]).all() and not np.isnan(b["accuracy"][full]).any()
    assert (b["confidence"][full] > b["lower"][full]).all() and (b["confidence"][full] <= b["upper"][full]).all()
    ece = np.sum(b["count"][full] / len(labels) * np.abs(b["accuracy"][full] - b["confidence"][full]))
    assert ece == pytest.approx(expected_calibration_error(probs, labels), abs=1e-12)
    # the weighted mean of the per-bin accuracies is the overall accuracy
    assert np.sum(b["count"][full] * b["accuracy"][full]) / len(labels) == pytest.approx(accuracy(probs, labels))


def test_calibration_report_and_temperature_invariance():
    logits, labels = _random_case()
    r1 = calibration_report(logits, labels)
    r2 = calibration_report(logits, labels, temperature=2.5)
    assert set(r1) == {"acc", "nll", "ece", "mce", "conf"} and all(isinstance(v, float) for v in r1.values())
    assert r1["acc"] == r2["acc"]  # temperature never changes the predicted class
    assert r2["nll"] == pytest.approx(nll(logits / 2.5, labels), rel=1e-9)
    assert r2["ece"] == pytest.approx(expected_calibration_error((logits / 2.5).softmax(1), labels), abs=1e-6)


# --------------------------------------------------------------------------------------------- temperature
@pytest.mark.parametrize("t_true", [0.5, 1.0, 2.0, 4.0])
def test_fit_temperature_recovers_known_temperature(t_true):
    g = torch.Generator().manual_seed(1)
    z = 2.5 * torch.randn(10000, 10, generator=g)                        # a calibrated model's logits ...
    y = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)        # ... labels drawn from its probabilities
    t = fit_temperature(t_true * z, y)                                    # over- (T > 1) or under-confident
    assert t == pytest.approx(t_true, rel=0.05)
    assert fit_temperature(t_true * z, y) == t                             # deterministic
    # it is the minimum of the NLL: nearby temperatures are worse
    base = nll(t_true * z / t, y)
    assert base <= nll(t_true * z / (t * 1.02), y) and base <= nll(t_true * z / (t / 1.02), y)


def test_fit_temperature_lowers_ece_of_overconfident_model():
    logits, labels = _random_case(n=5000, seed=3)
    t = fit_temperature(logits[:2500], labels[:2500])
    before = calibration_report(logits[2500:], labels[2500:])
    after = calibration_report(logits[2500:], labels[2500:], temperature=t)
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"]


def test_temperature_scaled_report_real(real_logits):
    logits, labels = real_logits
    r = temperature_scaled_report(logits[:250], labels[:250], logits[250:], labels[250:])
    t = fit_temperature(logits[:250], labels[:250])
    assert r["temperature"] == t and r["temperature"] > 1  # the over-fitted model is over-confident
    assert r["val_ece"] == calibration_report(logits[:250], labels[:250])["ece"]
    before = calibration_report(logits[250:], labels[250:])
    after = calibration_report(logits[250:], labels[250:], temperature=t)
    assert {k: r[k] for k in before} == before
    assert (r["nll_ts"], r["ece_ts"], r["mce_ts"]) == (after["nll"], after["ece"], after["mce"])
    assert r["nll_ts"] < r["nll"]
    with pytest.raises(ValueError, match="same number of classes"):
        temperature_scaled_report(logits, labels, logits[:, :5], labels % 5)


def test_fit_temperature_warns_at_edge_of_range():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    with pytest.warns(RuntimeWarning, match="edge"):
        t = fit_temperature(logits, torch.tensor([0, 1]))  # separable: NLL keeps falling as T -> 0
    assert t < 0.02


# --------------------------------------------------------------------------------------------- plot
def test_plot_reliability_draws_the_bins(real_case):
    import matplotlib.pyplot as plt

    probs, labels = real_case
    ax = plot_reliability(probs, labels, title="softmax regression")
    b = calibration_bins(probs, labels)
    full = b["count"] > 0
    bars = ax.containers[0]
    np.testing.assert_allclose([r.get_height() for r in bars], b["accuracy"][full])
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() == "softmax regression"
    assert any("ECE" in t.get_text() for t in ax.texts)
    assert ax.get_legend() is not None
    plt.close(ax.figure)
    ax = plot_reliability(probs, labels, legend=False)
    assert ax.get_legend() is None and len(ax.get_legend_handles_labels()[0]) == 3
    plt.close(ax.figure)
    with pytest.raises(TypeError, match="legend"):
        plot_reliability(probs, labels, legend="yes")


# --------------------------------------------------------------------------------------------- OOD scores
def test_ood_scores():
    logits, _ = _random_case(n=50)
    assert torch.allclose(msp_score(logits), logits.double().softmax(1).max(1).values)
    assert torch.equal(max_logit_score(logits), logits.double().max(1).values)
    assert torch.allclose(energy_score(logits), torch.logsumexp(logits.double(), 1))
    assert torch.allclose(energy_score(logits, temperature=2.0), 2.0 * torch.logsumexp(logits.double() / 2.0, 1))
    assert torch.allclose(energy_score(logits, temperature=1e-3), max_logit_score(logits), atol=1e-2)  # T -> 0
    for s in (msp_score(logits), max_logit_score(logits), energy_score(logits)):
        assert s.shape == (50,) and s.dtype == torch.float64
    # float64 keeps confident examples apart where a float32 softmax ties them at 1.0
    z = torch.tensor([[0.0, 20.0], [0.0, 30.0]])
    assert z.softmax(1).max(1).values.tolist() == [1.0, 1.0]
    assert msp_score(z)[0] < msp_score(z)[1]


# --------------------------------------------------------------------------------------------- OOD metrics
def _fpr95_brute_force(s_id, s_ood):
    best = 1.0
    for t in np.unique(np.concatenate([s_id, s_ood])):
        if np.mean(s_id >= t) >= 0.95:
            best = min(best, float(np.mean(s_ood >= t)))
    return best


@pytest.mark.parametrize("seed, shift, ties", [(0, 1.0, False), (1, 0.3, False), (2, 2.0, True), (3, -0.5, False)])
def test_ood_metrics_match_sklearn(seed, shift, ties):
    rng = np.random.default_rng(seed)
    s_id, s_ood = rng.normal(shift, 1, 700), rng.normal(0, 1, 400)
    if ties:
        s_id, s_ood = np.round(s_id), np.round(s_ood)
    m = ood_metrics(torch.from_numpy(s_id), s_ood)  # tensors and numpy arrays both accepted
    y = np.r_[np.ones(700), np.zeros(400)]
    s = np.r_[s_id, s_ood]
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert m["aupr_in"] == pytest.approx(average_precision_score(y, s))
    assert m["aupr_out"] == pytest.approx(average_precision_score(1 - y, -s))
    assert m["fpr95"] == pytest.approx(_fpr95_brute_force(s_id, s_ood))
    # AUROC is the probability that an ID example outscores an OOD one (ties count 1/2)
    diff = s_id[:, None] - s_ood[None, :]
    assert m["auroc"] == pytest.approx(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def test_ood_metrics_hand_computed():
    # ID scores 1..20: keeping >= 95 % of them (19 of 20) means threshold 2; OOD scores >= 2: 2.5 and 3 -> 2 of 4
    m = ood_metrics(torch.arange(1.0, 21.0), torch.tensor([0.5, 1.5, 2.5, 3.0]))
    assert m["fpr95"] == 0.5
    perfect = ood_metrics(torch.tensor([5.0, 6.0, 7.0]), torch.tensor([1.0, 2.0]))
    assert perfect == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    reversed_ = ood_metrics(torch.tensor([1.0, 2.0]), torch.tensor([5.0, 6.0, 7.0]))
    assert reversed_["auroc"] == 0.0 and reversed_["fpr95"] == 1.0
    # ID positive: swapping the roles of the sets (and negating) swaps AUPR-In and AUPR-Out
    a, b = torch.randn(300, generator=torch.Generator().manual_seed(0)) + 1, torch.randn(200)
    m1, m2 = ood_metrics(a, b), ood_metrics(-b, -a)
    assert m1["aupr_in"] == pytest.approx(m2["aupr_out"]) and m1["auroc"] == pytest.approx(m2["auroc"])


# --------------------------------------------------------------------------------------------- bad input
GOOD_P = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
GOOD_Y = torch.tensor([0, 1])


@pytest.mark.parametrize("fn", [expected_calibration_error, max_calibration_error, calibration_bins])
@pytest.mark.parametrize("probs, labels, exc, match", [
    (torch.tensor([0.7, 0.3]), GOOD_Y, ValueError, r"probs must have shape \(N, K\)"),
    (torch.rand(2, 2, 2), GOOD_Y, ValueError, r"probs must have shape \(N, K\)"),
    (torch.ones(2, 1), GOOD_Y, ValueError, "at least 2 columns"),
    (GOOD_P, torch.tensor([[0], [1]]), ValueError, r"labels must be a 1-D"),
    (GOOD_P, torch.tensor([0, 1, 1]), ValueError, "3 entries but the predictions have 2 rows"),
    (torch.empty(0, 3), torch.empty(0, dtype=torch.long), ValueError, "probs is empty"),
    (torch.tensor([[0.7, 0.2], [0.4, 0.6]]), GOOD_Y, ValueError, "row 0 sums to 0.9"),
    (torch.tensor([[2.0, -1.0], [0.4, 0.6]]), GOOD_Y, ValueError, r"must lie in \[0, 1\]"),
    (torch.tensor([[float("nan"), 0.3], [0.4, 0.6]]), GOOD_Y, ValueError, "NaN"),
    (GOOD_P, torch.tensor([0, 2]), ValueError, r"class index 2, .* \[0, 1\]"),
    (GOOD_P, torch.tensor([-1, 0]), ValueError, "class index -1"),
    (GOOD_P, torch.tensor([0.0, 1.0]), TypeError, "labels must hold integer"),
    (torch.tensor([[1, 0], [0, 1]]), GOOD_Y, TypeError, "floating-point"),
    ([[0.7, 0.3], [0.4, 0.6]], GOOD_Y, TypeError, "torch.Tensor"),
])
def test_bad_probs_and_labels(fn, probs, labels, exc, match):
    with pytest.raises(exc, match=match):
        fn(probs, labels)


@pytest.mark.parametrize("fn", [expected_calibration_error, max_calibration_error, calibration_bins, plot_reliability])
@pytest.mark.parametrize("n_bins, exc", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)])
def test_bad_n_bins(fn, n_bins, exc):
    with pytest.raises(exc, match="n_bins"):
        fn(GOOD_P, GOOD_Y, n_bins=n_bins)


@pytest.mark.parametrize("fn", [accuracy, nll, calibration_report, fit_temperature])
def test_bad_logits(fn):
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        fn(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="logits contains NaN"):
        fn(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="logits contains NaN or infinite"):
        fn(torch.tensor([[0.0, float("inf")]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="logits is empty"):
        fn(torch.empty(0, 5), torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match="class index 5"):
        fn(torch.zeros(2, 5), torch.tensor([0, 5]))


@pytest.mark.parametrize("t, exc", [(0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError),
                                    ("2", TypeError)])
def test_bad_temperature(t, exc):
    with pytest.raises(exc, match="temperature"):
        calibration_report(torch.zeros(2, 3), torch.tensor([0, 1]), temperature=t)
    with pytest.raises(exc, match="temperature"):
        energy_score(torch.zeros(2, 3), temperature=t)


@pytest.mark.parametrize("fn", [msp_score, max_logit_score, energy_score])
def test_bad_score_logits(fn):
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        fn(torch.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.tensor([[float("nan"), 0.0]]))


@pytest.mark.parametrize("id_s, ood_s, exc, match", [
    (torch.zeros(3, 2), torch.zeros(3), ValueError, r"id_scores must be a 1-D"),
    (torch.zeros(3), torch.zeros(3, 1), ValueError, r"ood_scores must be a 1-D"),
    (torch.empty(0), torch.zeros(3), ValueError, "id_scores is empty"),
    (torch.zeros(3), torch.empty(0), ValueError, "ood_scores is empty"),
    (torch.tensor([0.0, float("nan")]), torch.zeros(3), ValueError, "id_scores contains NaN"),
    (torch.zeros(3), [0.0, 1.0], TypeError, "ood_scores must be a torch.Tensor"),
    (torch.tensor([True, False]), torch.zeros(3), TypeError, "real numbers"),
])
def test_bad_ood_input(id_s, ood_s, exc, match):
    with pytest.raises(exc, match=match):
        ood_metrics(id_s, ood_s)


def test_nll_is_log_k_for_uniform_prediction():
    assert nll(torch.zeros(7, 5), torch.arange(7) % 5) == pytest.approx(math.log(5))
