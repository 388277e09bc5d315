"""Tests of lsutils.book.regularizers (chapter 8)."""
from __future__ import annotations

import math
import types

import matplotlib
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.book import regularizers as ch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------- confidence penalty
def test_confidence_penalty_is_ce_minus_beta_entropy():
    g = torch.Generator().manual_seed(0)
    z, y = 3 * torch.randn(16, 5, generator=g), torch.randint(0, 5, (16,), generator=g)
    p = z.softmax(1)
    entropy = -(p * p.log()).sum(1).mean()
    assert float(ch.confidence_penalty(z, y, 0.0)) == pytest.approx(float(F.cross_entropy(z, y)), rel=1e-6)
    assert float(ch.confidence_penalty(z, y, 0.7)) == pytest.approx(float(F.cross_entropy(z, y) - 0.7 * entropy),
                                                                     rel=1e-5)
    # CE - beta H(p) = CE + beta KL(p || u) - beta log K
    kl_pu = (p * (p.log() + math.log(5))).sum(1).mean()
    assert float(ch.confidence_penalty(z, y, 0.3)) == pytest.approx(
        float(F.cross_entropy(z, y) + 0.3 * kl_pu - 0.3 * math.log(5)), rel=1e-5)


def test_confidence_penalty_errors():
    z, y = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="beta"):
        ch.confidence_penalty(z, y, -0.1)
    with pytest.raises(ValueError, match="beta"):
        ch.confidence_penalty(z, y, math.inf)
    with pytest.raises(TypeError):
        ch.confidence_penalty(z, y.float(), 0.1)
    with pytest.raises(ValueError, match="target"):
        ch.confidence_penalty(z, torch.tensor([0]), 0.1)
    with pytest.raises(ValueError):
        ch.confidence_penalty(z, torch.tensor([0, 3]), 0.1)


def test_confidence_penalty_through_registry_and_runspec():
    loss = ls.losses.build_loss({"name": "confidence_penalty", "beta": 0.2})
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert float(loss(z, y)) == pytest.approx(float(ch.confidence_penalty(z, y, 0.2)))
    spec = ls.RunSpec.from_profile(ls.get_profile("smoke"), loss={"name": "confidence_penalty", "beta": 0.2}, seed=0)
    assert "lsutils.book.regularizers" in ls.train._loss_modules(spec.loss_spec())   # its code is in the cache key
    with pytest.raises(ValueError, match="beta"):
        ls.RunSpec.from_profile(ls.get_profile("smoke"), loss={"name": "confidence_penalty", "beta": -1}, seed=0)


def test_confidence_penalty_raises_entropy_in_training(fashion_mnist_small):
    ds = fashion_mnist_small
    x, y = ds.train.x[:512], ds.train.y[:512]
    entropy = {}
    for beta in (0.0, 1.0):
        torch.manual_seed(0)
        model = ls.build_model("mlp", 10, 1, width=32)
        loss = ls.losses.build_loss({"name": "confidence_penalty", "beta": beta})
        ls.fit(model, x, y, loss, epochs=10, batch_size=64, lr=3e-3, device="cpu", progress=False)
        p = ls.predict_logits(model, x).softmax(1)
        entropy[beta] = float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())
    assert entropy[1.0] > entropy[0.0] + 0.5, entropy          # nats


def test_matching_beta_gives_ls_the_same_weight():
    # H(q', p) = (1 - eps) [CE + eps/(1 - eps) KL(u || p)] + eps log K
    g = torch.Generator().manual_seed(1)
    z, y, eps, k = torch.randn(8, 6, generator=g), torch.randint(0, 6, (8,), generator=g), 0.2, 6
    logp = z.log_softmax(1)
    kl_up = (-(1 / k) * logp.sum(1) - math.log(k)).mean()
    rhs = (1 - eps) * (F.cross_entropy(z, y) + ch.matching_beta(eps) * kl_up) + eps * math.log(k)
    assert float(F.cross_entropy(z, y, label_smoothing=eps)) == pytest.approx(float(rhs), rel=1e-5)
    assert ch.matching_beta(0.0) == 0.0
    with pytest.raises(ValueError):
        ch.matching_beta(1.0)


def test_smoothing_cap_and_gap_depend_on_k():
    assert ch.smoothing_cap(2, 0.1) > ch.smoothing_cap(10, 0.1) > 0.9
    assert ch.smoothing_cap(10, 0.0) == 1.0
    with pytest.raises(ValueError):
        ch.smoothing_cap(1, 0.1)
    with pytest.raises(ValueError):
        ch.smoothing_cap(10, 1.5)


def test_decay_factor():
    p = ls.get_profile("cpu")
    assert ch.decay_factor(p, 0.0) == 1.0
    f = [ch.decay_factor(p, lam) for lam in (0.01, 0.5, 2.0)]
    assert 1.0 > f[0] > f[1] > f[2] > 0.0
    # by hand: the trainer's schedule, step by step
    steps = p.epochs * math.ceil(p.n_train / p.batch_size)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=p.lr)
    sched = ls.train.one_cycle_schedule(opt, p.lr, steps)
    prod = 1.0
    for _ in range(steps):
        prod *= 1 - opt.param_groups[0]["lr"] * 2.0
        opt.step()
        sched.step()
    assert f[2] == pytest.approx(prod, rel=1e-9)
    with pytest.raises(ValueError):
        ch.decay_factor(p, -1.0)
    with pytest.raises(TypeError):
        ch.decay_factor("cpu", 1.0)
    with pytest.raises(ValueError, match="n_train"):
        ch.decay_factor(ls.get_profile("gpu") if torch.cuda.is_available() else
                        types.SimpleNamespace(epochs=1, n_train=None, batch_size=1, lr=1e-3), 1.0)


# --------------------------------------------------------------------------------------------- settings and subsets
def test_chapter_settings():
    s = ch.chapter_settings(ls.get_profile("cpu"))
    assert s["seeds"] == ls.get_profile("cpu").seeds and s["class_sets"][-1] is None
    sets = [set(c) for c in s["class_sets"][:-1]]
    assert all(a < b for a, b in zip(sets, sets[1:]))          # nested
    with pytest.raises(TypeError):
        ch.chapter_settings(object())


def test_subset_spec_keeps_images_per_class_and_steps():
    p = ls.get_profile("cpu")
    full = ch.subset_spec(p, None, {"name": "ce"}, 1)
    assert full == ls.RunSpec.from_profile(p, loss={"name": "ce"}, seed=1)
    assert ch.subset_spec(p, tuple(range(10)), {"name": "ce"}, 1).key() == full.key()   # shares the cached model
    for classes in ((2, 4), (0, 2, 3, 4, 6)):
        s = ch.subset_spec(p, classes, ls.smoothing_spec(0.1), 0)
        k = len(classes)
        assert s.classes == classes and s.n_train == p.n_train * k // 10 and s.n_val == p.n_val * k // 10
        assert math.ceil(s.n_train / s.batch_size) == math.ceil(p.n_train / p.batch_size)
        assert (s.epochs, s.lr, s.width) == (p.epochs, p.lr, p.width)
    with pytest.raises(TypeError):
        ch.subset_spec(object(), (0, 1), {"name": "ce"}, 0)


def test_subset_data_matches_the_spec(fashion_mnist_root, monkeypatch):
    monkeypatch.setenv("LSUTILS_DATA", str(fashion_mnist_root))
    p = ls.get_profile("smoke")
    spec = ch.subset_spec(p, (2, 4), {"name": "ce"}, 0)
    d = ch.subset_data(p, spec)
    assert d.classes == ("Pullover", "Coat") and d.num_classes == 2
    assert (len(d.train.y), len(d.val.y), len(d.test.y)) == (spec.n_train, spec.n_val, p.n_test * 2 // 10)
    assert set(d.test.y.tolist()) == {0, 1}
    ls.train._check_data(spec, d)                               # the trainer accepts it as the spec's data
    with pytest.raises(TypeError):
        ch.subset_data(p, "spec")


# --------------------------------------------------------------------------------------------- scores
@pytest.fixture(scope="module")
def trained(fashion_mnist_small):
    """A small MLP trained to over-fit 1,000 real Fashion-MNIST images: (model, data, logits)."""
    ds = fashion_mnist_small
    torch.manual_seed(0)
    model = ls.build_model("mlp", 10, 1, width=64)
    ls.fit(model, ds.train.x, ds.train.y, F.cross_entropy, epochs=25, batch_size=100, lr=3e-3, device="cpu",
           progress=False)
    return model, ds, ch.split_logits(model, ds)


def test_scores_agree_with_the_core_metrics(trained):
    model, ds, z = trained
    assert set(z) == {"train", "val", "test"} and z["test"].shape == (len(ds.test.y), 10)
    assert torch.equal(z["test"], ls.predict_logits(model, ds.test.x).float())
    r = ch.scores(z, ds)
    assert r["acc"] == pytest.approx(ls.accuracy(z["test"], ds.test.y))
    assert r["nll"] == pytest.approx(ls.nll(z["test"], ds.test.y))
    assert r["ece"] == pytest.approx(ls.expected_calibration_error(z["test"].double().softmax(1), ds.test.y))
    assert r["T"] == pytest.approx(ls.fit_temperature(z["val"], ds.val.y))
    assert r["gap"] == pytest.approx(r["train_acc"] - r["acc"])
    assert r["overconf"] == pytest.approx(r["conf"] - r["acc"])
    # an over-fitted MLP: over-confident, and temperature scaling repairs the ECE
    assert r["train_acc"] > r["acc"] and r["T"] > 1 and r["ece_ts"] < r["ece"]
    only_test = ch.scores({"test": z["test"]}, ds)
    assert "T" not in only_test and "train_acc" not in only_test
    with pytest.raises(TypeError):
        ch.scores({"val": z["val"]}, ds)
    with pytest.raises(TypeError):
        ch.split_logits("model", ds)
    with pytest.raises(TypeError):
        ch.split_logits(model, ds, splits=("nope",))


def test_per_class_confidence(trained):
    _, ds, z = trained
    pc = ch.per_class_confidence(z["test"], ds.test.y, ds.classes)
    assert list(pc.index) == list(ds.classes)
    counts = torch.bincount(ds.test.y, minlength=10).double()
    right = (z["test"].argmax(1) == ds.test.y).double()
    per_class_acc = torch.zeros(10, dtype=torch.float64).index_add_(0, ds.test.y, right) / counts
    assert pc["acc"].tolist() == pytest.approx(per_class_acc.tolist())
    # the class means, weighted by class size, give the overall accuracy and confidence
    assert float((pc["acc"].to_numpy() * counts.numpy()).sum() / counts.sum()) == pytest.approx(float(right.mean()))
    with pytest.raises(ValueError):
        ch.per_class_confidence(z["test"], ds.test.y, ["a", "b"])
    with pytest.raises(ValueError):
        ch.per_class_confidence(z["test"], ds.test.y[:-1])


def test_selective_scores(trained):
    _, ds, z = trained
    out = ch.selective_scores(z, ds, ps=(1, 2, 4))
    fit = ls.metrics.select_pnorm(z["val"], ds.val.y, ps=(1, 2, 4))
    assert out["p"] == fit["p"] and out["fallback"] == (fit["msp_aurc"] <= fit["aurc"][fit["p"]])
    assert [r["confidence"] for r in out["rows"]] == ["MSP", "MaxLogit-pNorm"]
    correct = z["test"].argmax(1) == ds.test.y
    assert out["rows"][1]["aurc"] == pytest.approx(ls.aurc(ls.metrics.pnorm_logit_score(z["test"], out["p"]), correct))
    assert out["rows"][0]["e_aurc"] == pytest.approx(ls.metrics.excess_aurc(ls.msp_score(z["test"]), correct))
    assert out["rows"][0]["acc"] == out["rows"][1]["acc"]        # another ranking, the same predictions
    assert torch.equal(out["curves"]["MSP"][1], correct)
    with pytest.raises(TypeError):
        ch.selective_scores({"test": z["test"]}, ds)


# --------------------------------------------------------------------------------------------- comparisons
def _rows():
    vals = {("a", 0): [0.80, 0.82, 0.81], ("a", 1): [0.83, 0.84, 0.84], ("b", 0): [0.5, 0.6, 0.7],
            ("b", 1): [0.5, 0.6, 0.71], ("c", 0): [0.1, 0.2, 0.3]}
    return [{"g": g, "e": e, "seed": s, "acc": v} for (g, e), vs in vals.items() for s, v in enumerate(vs)]


def test_paired_table_matches_paired_comparison():
    rows = _rows()
    t = ch.paired_table(rows, "g", {"acc": 100}, {"e": 1}, {"e": 0})
    assert list(t.index) == [("a", "acc"), ("b", "acc")]       # "c" has no LS arm: skipped
    for g in ("a", "b"):
        r = ls.paired_comparison([x for x in rows if x["g"] == g], "acc", {"e": 1}, {"e": 0}, scale=100)
        assert t.loc[(g, "acc"), "mean"] == pytest.approx(r.mean) and t.loc[(g, "acc"), "p"] == pytest.approx(r.p)
        assert t.loc[(g, "acc"), "text"] == r.text()
    with pytest.raises(ValueError):
        ch.paired_table(rows, "nope", {"acc": 1}, {"e": 1}, {"e": 0})
    with pytest.raises(TypeError):
        ch.paired_table(rows, "g", {}, {"e": 1}, {"e": 0})
    with pytest.raises(ValueError, match="no group"):
        ch.paired_table(rows, "g", {"acc": 1}, {"e": 5}, {"e": 0})


def test_consistency():
    c = lambda m, p: {"mean": m, "p": p}  # noqa: E731
    assert ch.consistency({1: c(1, 0.01), 2: c(2, 0.02)}, "higher") == "all"
    assert ch.consistency({1: c(1, 0.01), 2: c(2, 0.2)}, "higher") == "some"
    assert ch.consistency({1: c(1, 0.3), 2: c(2, 0.2)}, "higher") == "sign"
    assert ch.consistency({1: c(1, 0.3), 2: c(-2, 0.01)}, "higher") == "none"
    assert ch.consistency({1: c(-1, 0.01)}, "lower") == "all"
    df = pd.DataFrame({"e": [0] * 3 + [1] * 3, "seed": [0, 1, 2] * 2, "m": [0, 0, 0, 1, 2, 1.5]})
    assert ch.consistency({0: ls.paired_comparison(df, "m", {"e": 1}, {"e": 0})}, "higher") == "all"
    with pytest.raises(ValueError):
        ch.consistency({1: c(1, 0.01)}, "up")
    with pytest.raises(TypeError):
        ch.consistency({}, "higher")
    with pytest.raises(TypeError):
        ch.consistency({1: 0.5}, "higher")


def test_md_table():
    text = ch.md_table(["x", "y"], [[1, 2], ["a|b", None]])
    assert text.splitlines() == ["| x | y |", "| --- | --- |", "| 1 | 2 |", "| a\\|b | None |"]
    with pytest.raises(ValueError):
        ch.md_table(["x", "y"], [[1]])
    with pytest.raises(ValueError):
        ch.md_table([], [])


# --------------------------------------------------------------------------------------------- figures
def test_plot_points_and_risk_coverage(trained):
    import matplotlib.pyplot as plt

    rows = _rows()
    fig = ch.plot_points(rows, "g", {"acc": ("accuracy", 100)}, hue="e", ref_lines={"acc": 50.0})
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 1 and visible[0].get_ylabel() == "accuracy"
    assert [t.get_text() for t in visible[0].get_xticklabels()] == ["a", "b", "c"]
    plt.close(fig)
    fig = ch.plot_points(rows, "g", {"acc": ("a", 1), "seed": ("s", 1), "e": ("e", 1)}, ncols=2)
    assert sum(ax.get_visible() for ax in fig.axes) == 3
    plt.close(fig)
    with pytest.raises(ValueError, match="lack"):
        ch.plot_points(rows, "g", {"nope": ("x", 1)})
    with pytest.raises(TypeError):
        ch.plot_points(rows, "g", {})

    _, ds, z = trained
    correct = z["test"].argmax(1) == ds.test.y
    ax = ch.plot_risk_coverage({"MSP": (ls.msp_score(z["test"]), correct)}, max_coverage=0.5)
    line = ax.get_lines()[0]
    assert line.get_xdata().max() <= 50.0 + 1e-9 and "AURC" in ax.get_legend().get_texts()[0].get_text()
    plt.close(ax.figure)
    with pytest.raises(TypeError):
        ch.plot_risk_coverage({})
    with pytest.raises(ValueError):
        ch.plot_risk_coverage({"MSP": (ls.msp_score(z["test"]), correct)}, max_coverage=0.0)
