"""Tests of lsutils.book.distillation (chapter 5)."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.book import distillation as ch  # noqa: E402


class _Counting(nn.Module):
    """A small teacher that counts the examples it has seen."""

    def __init__(self, k: int = 3, side: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(side * side, k))
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.net(x)


def _teacher_spec_dict(seed: int = 0) -> dict:
    return ls.RunSpec.from_profile(ls.get_profile("smoke"), loss=ls.smoothing_spec(0.1), seed=seed).to_dict()


def _fake_rows():
    rows = []
    for seed in (0, 1, 2):
        for eps, offset in ((0.0, 0.0), (0.1, -0.01)):
            for T, bump in ((1.0, 0.0), (4.0, 0.02)):
                acc = 0.8 + offset + bump * (eps == 0.0) + 0.001 * seed
                rows.append({"teacher_eps": eps, "temperature": T, "seed": seed, "val_acc": acc, "test_acc": acc})
        rows.append({"teacher_eps": None, "temperature": None, "seed": seed, "val_acc": 0.79, "test_acc": 0.79})
    return rows


def test_chapter_settings_and_specs_reuse_the_ce_ls_models():
    for name in ("smoke", "cpu", "gpu"):
        p = ls.get_profile(name) if name != "gpu" else ls.config._table("cpu")["gpu"]
        s = ch.chapter_settings(p)
        assert {0.0, 0.1}.issubset(s["teacher_epsilons"]) and max(s["teacher_epsilons"]) > 0.1
        assert {1.0, 2.0, 4.0, 8.0}.issubset(s["temperatures"]) and s["beta"] == 1.0
        assert len(s["seeds"]) >= 2
    p = ls.get_profile("cpu")
    s = ch.chapter_settings(p)
    specs = ch.distillation_specs(p)
    assert len(specs) == len(s["teacher_epsilons"]) * len(s["temperatures"]) * len(s["seeds"]) + len(s["seeds"])
    labels, spec = specs[0]
    # the teacher inside the student's spec is exactly the CE/LS model other chapters train (same cache key)
    teacher = ls.RunSpec.from_dict(spec.loss_spec()["teacher"])
    want = ls.RunSpec.from_profile(p, loss=ls.smoothing_spec(labels["teacher_eps"]), seed=labels["seed"])
    assert teacher == want and teacher.key() == want.key()
    assert spec.model == s["student_model"] and spec.width == s["student_width"]
    # the student is much smaller than the teacher
    n_params = lambda m: sum(q.numel() for q in m.parameters())  # noqa: E731
    t_model = ls.build_model(p.model, 10, 1, width=p.width)
    s_model = ls.build_model(s["student_model"], 10, 1, width=s["student_width"])
    assert n_params(s_model) < 0.25 * n_params(t_model)
    baselines = [(lab, sp) for lab, sp in specs if lab["teacher_eps"] is None]
    assert len(baselines) == len(s["seeds"]) and all(sp.loss_spec() == {"name": "ce"} for _, sp in baselines)
    longer = ch.student_spec(p, 0, teacher=want, temperature=2.0, epochs=3 * p.epochs)
    assert longer.epochs == 3 * p.epochs and longer.model == s["student_model"]
    with pytest.raises(ValueError, match="temperature is required"):
        ch.student_spec(p, 0, teacher=want)
    with pytest.raises(TypeError, match="teacher must be a RunSpec"):
        ch.student_spec(p, 0, teacher=want.to_dict(), temperature=2.0)


def test_student_table_and_paired_differences():
    rows = _fake_rows()
    table = ch.student_table(rows)
    assert list(table.columns) == ["T = 1", "T = 4"]
    assert table.loc["ε = 0", "T = 4"] == "82.1 ± 0.1" and table.loc["ε = 0.1", "T = 1"] == "79.1 ± 0.1"
    assert table.loc["hard labels (no teacher)", "T = 1"] == "79.0 ± 0.0"
    assert ch.best_temperature(rows, 0.0) == 4.0 and ch.best_temperature(rows, 0.1) in (1.0, 4.0)
    assert ch.paired_differences(rows, 0.1, 1.0) == pytest.approx([-0.01] * 3)
    assert ch.paired_differences(rows, 0.1, 1.0, reference_temperature="best") == pytest.approx([-0.03] * 3)
    assert ch.paired_differences(rows, 0.0, 4.0, reference_eps=None) == pytest.approx([0.03, 0.031, 0.032])
    with pytest.raises(ValueError, match="temperature must be one of"):
        ch.paired_differences(rows, 0.1, 3.0)
    with pytest.raises(ValueError, match="no students of a teacher"):
        ch.paired_differences(rows, 0.5, 1.0)
    with pytest.raises(ValueError, match="rows is empty"):
        ch.student_table([])


def test_plots_render():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _fake_rows()
    ax = ch.plot_student_heatmap(rows)
    assert "hard-label student" in ax.get_title() and ax.get_xlabel() == "distillation temperature T"
    ax = ch.plot_student_vs_temperature(rows)
    assert len(ax.get_legend().get_texts()) == 3
    m = ch.class_similarity_matrix(torch.randn(40, 4), torch.arange(40) % 4)
    axes = ch.plot_similarity_matrices({"a": m, "b": m}, class_names=list("wxyz"))
    assert [a.get_title() for a in axes] == ["a", "b"]
    axes = ch.plot_logit_gaps({"CE": (torch.randn(20), torch.randn(20))}, class_names=("Shirt", "T-shirt"))
    assert "Shirt" in axes[0].get_xlabel()
    plt.close("all")


def test_class_similarity_matrix_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(50, 4, generator=g) * 2, torch.arange(50) % 4
    for T in (1.0, 3.0):
        m = ch.class_similarity_matrix(z, y, temperature=T)
        p = F.softmax(z / T, 1)
        want = torch.stack([p[y == c].mean(0) for c in range(4)])
        assert torch.allclose(m, want, atol=1e-6) and torch.allclose(m.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="every class at least once; missing \\[3\\]"):
        ch.class_similarity_matrix(z, y % 3)
    with pytest.raises(ValueError, match="temperature"):
        ch.class_similarity_matrix(z, y, temperature=0)


def test_nontarget_divergence():
    k = 5
    y = torch.tensor([0, 1, 2])
    z = torch.tensor([[9.0, 1.0, 1.0, 1.0, 1.0],       # wrong classes all equal -> 0
                      [0.0, 9.0, 50.0, 0.0, 0.0],      # all wrong mass on class 2 -> log(K-1)
                      [1.0, 2.0, 5.0, 3.0, 0.5]])
    d = ch.nontarget_divergence(z, y)
    assert d[0] == pytest.approx(0.0, abs=1e-6) and d[1] == pytest.approx(math.log(k - 1), abs=1e-4)
    q = F.softmax(torch.tensor([1.0, 2.0, 3.0, 0.5]), 0)
    assert d[2] == pytest.approx(float((q * (q * (k - 1)).log()).sum()), abs=1e-6)
    # hotter temperature -> the wrong classes look more alike
    assert ch.nontarget_divergence(z, y, temperature=8.0)[2] < d[2]
    with pytest.raises(ValueError, match="at least 3 classes"):
        ch.nontarget_divergence(torch.zeros(2, 2), torch.tensor([0, 1]))


def test_logit_gap_statistics():
    g = torch.Generator().manual_seed(0)
    n = 4000
    y = torch.cat([torch.full((n,), 2), torch.full((n,), 0), torch.full((10,), 1)])
    z = torch.zeros(2 * n + 10, 3)
    z[:n, 2] = 3.0 + 0.5 * torch.randn(n, generator=g)       # class 2: d = z2 - z0 ~ N(3, 0.5²)
    z[n:2 * n, 2] = -1.0 + 1.5 * torch.randn(n, generator=g)  # class 0: d ~ N(-1, 1.5²)
    st = ch.logit_gap_statistics(z, y, class_a=2, class_b=0)
    assert st["mean_a"] == pytest.approx(3.0, abs=0.05) and st["std_a"] == pytest.approx(0.5, abs=0.03)
    assert st["mean_b"] == pytest.approx(-1.0, abs=0.1) and st["std_b"] == pytest.approx(1.5, abs=0.06)
    assert st["gap"] == pytest.approx(4.0, abs=0.1)
    assert st["spread_ratio"] == pytest.approx(math.sqrt((0.25 + 2.25) / 2) / 4, abs=0.02)
    # within variance (0.25 + 2.25)/2 = 1.25; between (2²) = 4 -> within fraction 1.25 / 5.25
    assert st["within_fraction"] == pytest.approx(1.25 / 5.25, abs=0.02)
    with pytest.raises(ValueError, match="class_a and class_b must differ"):
        ch.logit_gap_statistics(z, y, 1, 1)
    with pytest.raises(ValueError, match="class_b must be a class index"):
        ch.logit_gap_statistics(z, y, 0, 3)


def test_logit_difference_views_on_real_images(fashion_mnist_small):
    x = fashion_mnist_small.train.x[:40]
    torch.manual_seed(0)
    model = ls.build_model("cnn", 10, 1, width=4)
    d = ch.logit_difference_views(model, x, 6, 0, views=3, seed=1)
    assert d.shape == (40, 3)
    assert torch.equal(d, ch.logit_difference_views(model, x, 6, 0, views=3, seed=1))      # seeded
    assert not torch.equal(d[:, 0], d[:, 1])                                              # views differ
    z = ls.predict_logits(model, x)
    plain = ch.logit_difference_views(model, x, 6, 0, views=2, max_shift=0, noise_std=0.0)
    assert torch.allclose(plain[:, 0], z[:, 6] - z[:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="views must be an int >= 2"):
        ch.logit_difference_views(model, x, 6, 0, views=1)
    with pytest.raises(ValueError, match="class_a must be a class index"):
        ch.logit_difference_views(model, x, 10, 0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\)"):
        ch.logit_difference_views(model, x[0], 6, 0)


def test_mi_of_separated_examples_is_log_n():
    n, L = 200, 5
    g = torch.Generator().manual_seed(0)
    d = 100.0 * torch.arange(n, dtype=torch.float64)[:, None] + 0.1 * torch.randn(n, L, generator=g, dtype=torch.float64)
    assert ch.gaussian_mutual_information(d) == pytest.approx(math.log(n), abs=1e-6)


def test_mi_of_two_tight_clusters_is_log_2():
    """What Müller et al. see with LS: within a class, the examples become indistinguishable."""
    n, L = 300, 60
    g = torch.Generator().manual_seed(1)
    cls = (torch.arange(n) % 2).double()[:, None]
    d = 20.0 * cls + torch.randn(n, L, generator=g, dtype=torch.float64)      # same mean within a class
    mi = ch.gaussian_mutual_information(d)
    assert mi == pytest.approx(math.log(2), abs=0.02)
    # with few views the estimate sits above log 2 by about ½·log(L / (L − 1)) (μ_x estimated from L values)
    d5 = d[:, :5]
    assert ch.gaussian_mutual_information(d5) == pytest.approx(math.log(2) + 0.5 * math.log(5 / 4), abs=0.05)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_mi_matches_the_gaussian_channel(tau):
    """μ_x ~ N(0, τ²), views = μ_x + N(0, 1): I = ½ log(1 + τ²/σ²) for many examples and views."""
    n, L = 600, 40
    g = torch.Generator().manual_seed(2)
    mu = tau * torch.randn(n, 1, generator=g, dtype=torch.float64)
    d = mu + torch.randn(n, L, generator=g, dtype=torch.float64)
    assert ch.gaussian_mutual_information(d) == pytest.approx(0.5 * math.log(1 + tau ** 2), abs=0.04)


def test_mi_of_pure_noise_is_near_zero_and_invariant():
    g = torch.Generator().manual_seed(3)
    d = torch.randn(500, 20, generator=g)
    mi = ch.gaussian_mutual_information(d)
    # the small positive bias comes from estimating μ_x from L views: ≈ ½·log(L / (L − 1)) = 0.026
    assert mi == pytest.approx(0.5 * math.log(20 / 19), abs=0.02)
    d2 = (torch.randn(100, 5, generator=g) * torch.linspace(0.5, 3, 100)[:, None]
          + torch.randn(100, 1, generator=g)).double()
    base = ch.gaussian_mutual_information(d2)
    assert ch.gaussian_mutual_information(-3.0 * d2 + 7.0) == pytest.approx(base, abs=1e-9)
    assert ch.gaussian_mutual_information(d2, chunk=7) == pytest.approx(base, abs=1e-9)


@pytest.mark.parametrize("d, exc, match", [
    (torch.zeros(10), ValueError, r"shape \(N, L\)"),
    (torch.zeros(1, 5), ValueError, "at least 2 examples"),
    (torch.zeros(5, 1), ValueError, "2 views"),
    (torch.arange(10.0)[:, None].repeat(1, 3), ValueError, "no spread within rows"),
    (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), ValueError, "NaN"),
    (torch.zeros(3, 3, dtype=torch.long), TypeError, "floating"),
])
def test_mi_errors(d, exc, match):
    with pytest.raises(exc, match=match):
        ch.gaussian_mutual_information(d)


def test_nontarget_logit_std_and_two_class_subset(fashion_mnist_small):
    z = torch.tensor([[5.0, 1.0, 3.0, 2.0], [0.0, 7.0, 7.0, 7.0]])
    got = ch.nontarget_logit_std(z, torch.tensor([0, 0]))
    assert got[0] == pytest.approx(float(torch.tensor([1.0, 3.0, 2.0]).std(unbiased=False)))
    assert got[1] == pytest.approx(0.0)
    x, y = ch.two_class_subset(fashion_mnist_small.train, 6, 0, per_class=30)
    assert x.shape == (60, 1, 28, 28) and y[:30].eq(6).all() and y[30:].eq(0).all()
    with pytest.raises(ValueError, match="has only"):
        ch.two_class_subset(fashion_mnist_small.train, 6, 0, per_class=10_000)
    with pytest.raises(TypeError, match="split must have"):
        ch.two_class_subset(x, 6, 0, per_class=3)


def test_teacher_diagnostics_on_real_data(tmp_data_root, fashion_mnist_root, monkeypatch):
    """Trains two tiny smoke teachers (CE and LS 0.3) and measures them; LS flattens the wrong classes."""
    p = ls.get_profile("smoke")
    real = ch.chapter_settings(p)
    monkeypatch.setattr(ch, "chapter_settings",
                        lambda profile: {**real, "seeds": (0,), "teacher_epsilons": (0.0, 0.3), "mi_per_class": 40})
    rows = ch.teacher_diagnostics(p)
    assert [(r["eps"], r["seed"]) for r in rows] == [(0.0, 0), (0.3, 0)]
    keys = {f"nontarget_kl_T{t:g}" for t in real["dk_temperatures"]} | {f"mi[{n}]" for n in real["mi_augmentations"]}
    assert keys | {"nontarget_logit_std", "spread_ratio", "within_fraction"} <= set(rows[0])
    for r in rows:
        assert 0.0 < r["mi[noise 0.1]"] <= math.log(80) + 1e-9
        assert r["nontarget_kl_T1"] > r["nontarget_kl_T4"] > r["nontarget_kl_T16"] >= 0.0
    assert rows[1]["nontarget_kl_T1"] < rows[0]["nontarget_kl_T1"]       # ε = 0.3 erases wrong-class structure


def test_paired_verdict():
    v = ch.paired_verdict([0.004, 0.005, 0.003])
    assert v["verdict"] == "higher" and v["text"] == "+0.4 ± 0.1"
    assert v["mean"] == pytest.approx(0.4) and v["std"] == pytest.approx(0.1)
    assert ch.paired_verdict([-0.01, -0.012], higher="up", lower="down")["verdict"] == "down"
    assert ch.paired_verdict([0.01, -0.002, 0.0])["verdict"] == "no clear difference"
    with pytest.raises(ValueError, match="at least 2"):
        ch.paired_verdict([0.01])
