"""Tests of lsutils.book.distillation (chapter 5)."""
from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.book import distillation as ch  # noqa: E402
from lsutils.train import Batch  # noqa: E402


# --------------------------------------------------------------------------------------------- settings and specs
def test_settings_and_specs_share_the_ce_ls_models():
    p = ls.get_profile("cpu")
    s = ch.chapter_settings(p)
    assert s["transfer_n_train"] == 4 * p.n_train and s["transfer_epochs"] == p.epochs // 2
    assert s["student_model"] == "mlp" and s["student_width"] == 2 * p.width and s["tiny_width"] < s["student_width"]
    assert {0.0, 0.1}.issubset(s["route_eps"]) and set(s["route_eps"]) <= set(s["teacher_eps"])
    assert s["aug_seeds"] == p.seeds[:1] and s["beta"] == 1.0
    smoke = ch.chapter_settings(ls.get_profile("smoke"))
    assert smoke["mi_per_class"] == 500 // 20 and smoke["transfer_n_train"] == 2000
    # the teacher is the very model of chapters 3-4 (one cache entry)
    t = ch.teacher_spec(p, 0.1, 2)
    assert t == ls.RunSpec.from_profile(p, loss=ls.smoothing_spec(0.1), seed=2) and ch.teacher_spec(p, 0.0, 0).loss_spec() == {"name": "ce"}
    assert ch.teacher_spec(p, 0.0, 0, augment=True).augment
    st = ch.student_spec(p, 1, ch.kd(t, 4.0), n_train=12000, epochs=8)
    assert (st.model, st.width, st.n_train, st.epochs, st.seed) == ("mlp", 2 * p.width, 12000, 8, 1)
    assert ls.RunSpec.from_dict(st.loss_spec()["teacher"]) == t
    assert ch.student_spec(p, 0).loss_spec() == {"name": "ce"}
    # the student is much smaller than the teacher
    n_params = lambda m: sum(q.numel() for q in m.parameters())  # noqa: E731
    assert n_params(ls.build_model("mlp", 10, 1, width=s["student_width"])) < 0.25 * n_params(
        ls.build_model(p.model, 10, 1, width=p.width))


def test_settings_and_loss_specs_reject_bad_input():
    gpu = ls.config._table("cpu")["gpu"]
    assert ch.chapter_settings(gpu)["transfer_n_train"] == 4 * gpu.n_train     # CIFAR-10: 40,000 of its 45,000
    import dataclasses

    with pytest.raises(ValueError, match="finite training set"):
        ch.chapter_settings(dataclasses.replace(gpu, n_train=None))
    with pytest.raises(TypeError, match="lsutils Profile"):
        ch.chapter_settings({"n_train": 3})
    p = ls.get_profile("smoke")
    t = ch.teacher_spec(p, 0.0, 0)
    with pytest.raises(TypeError, match="teacher must be a RunSpec"):
        ch.kd(t.to_dict(), 2.0)
    with pytest.raises(ValueError, match="temperature"):
        ch.kd(t, 0.0)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        ch.kd_rescaled(t, 2.0, scale=-1.0)
    # the registered losses validate their specs when a RunSpec is built
    assert ch.student_spec(p, 0, ch.pseudo_labels(t)).loss_spec()["name"] == "pseudo_label"
    assert ch.student_spec(p, 0, ch.kd_rescaled(t, 8.0, 0.5)).loss_spec()["scale"] == 0.5
    with pytest.raises(ValueError, match="scale"):
        ch.student_spec(p, 0, {**ch.kd_rescaled(t, 8.0, 0.5), "scale": 0.0})
    with pytest.raises(TypeError, match="teacher must be the teacher's RunSpec"):
        ch.student_spec(p, 0, {"name": "pseudo_label", "teacher": "ce"})
    assert ch.teacher_name(0.0) == "CE" and ch.teacher_name(0.3) == "LS ε = 0.3"


# --------------------------------------------------------------------------------------------- the two trainer losses
def _teacher():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()


def test_pseudo_label_loss_is_ce_on_the_teachers_argmax():
    teacher, x = _teacher(), torch.randn(12, 1, 4, 4)
    loss = ch.PseudoLabelLoss(teacher, x)
    s = torch.randn(12, 5, requires_grad=True)
    labels = torch.randint(0, 5, (12,))                          # the true labels are ignored
    got = loss(s, labels, Batch(x, torch.arange(12)))
    t = teacher(x).detach()
    assert torch.allclose(got, F.cross_entropy(s, t.argmax(1)))
    # an augmented batch (inputs that are not train_x[index]) is labelled by the teacher on those inputs
    x_aug = x.flip(3)
    got_aug = loss(s[:6], labels[:6], Batch(x_aug[:6], torch.arange(6)))
    assert loss.augmented and torch.allclose(got_aug, F.cross_entropy(s[:6], teacher(x_aug[:6]).argmax(1)))
    with pytest.raises(TypeError, match="batch"):
        loss(s, labels, None)


def test_rescaled_distillation_is_distillation_from_scaled_logits():
    teacher, x = _teacher(), torch.randn(10, 1, 4, 4)
    s = torch.randn(10, 5)
    t = teacher(x).detach()
    for T, scale in ((1.0, 0.125), (8.0, 8.0), (4.0, 1 / 1.7)):
        loss = ch.RescaledDistillationLoss(teacher, x, temperature=T, scale=scale)
        got = loss(s, torch.zeros(10, dtype=torch.long), Batch(x, torch.arange(10)))
        assert torch.allclose(got, ls.distillation_loss(s, scale * t, None, temperature=T, beta=1.0), atol=1e-6)
    # scale 1 is the core's distillation loss
    one = ch.RescaledDistillationLoss(teacher, x, temperature=2.0, scale=1.0)
    core = ls.losses.DistillationLoss(teacher, x, temperature=2.0)
    b = Batch(x, torch.arange(10))
    assert torch.allclose(one(s, None, b), core(s, None, b))


def test_students_train_through_the_trainer(tmp_data_root, fashion_mnist_root, monkeypatch):
    """A tiny teacher, then pseudo-label and rescaled students on a transfer set, all through train_model."""
    monkeypatch.setenv("LSUTILS_DATA", str(fashion_mnist_root))
    p = ls.get_profile("smoke")
    teacher = ch.teacher_spec(p, 0.0, 0, epochs=2, n_train=200, n_val=100)
    runs = {name: ls.train_model(ch.student_spec(p, 0, loss, n_train=400, n_val=100, epochs=2), progress=False)
            for name, loss in (("pl", ch.pseudo_labels(teacher)), ("cal", ch.kd_rescaled(teacher, 4.0, 0.5)))}
    data = ls.load_dataset("fashion_mnist", n_train=400, n_val=100, n_test=200, seed=0)
    rows = ch.evaluate_runs([({"arm": k}, r) for k, r in runs.items()], data)
    assert [r["arm"] for r in rows] == ["pl", "cal"] and all(r["trained"] for r in rows)
    assert all(10.0 < r["test_acc"] <= 100.0 and 10.0 < r["val_acc"] <= 100.0 for r in rows)
    again = ls.train_model(ch.student_spec(p, 0, ch.pseudo_labels(teacher), n_train=400, n_val=100, epochs=2),
                           progress=False)
    assert again.from_cache
    z = ch.teacher_logits(teacher, data.test.x, "test")
    assert z.shape == (200, 10) and ch.teacher_logits(teacher, data.test.x, "test") is z      # memoised
    with pytest.raises(TypeError, match="spec must be a RunSpec"):
        ch.teacher_logits(teacher.to_dict(), data.test.x, "test")


# --------------------------------------------------------------------------------------------- measurements
def test_route_deltas_pairs_by_route_and_seed():
    rows = [{"route": r, "arm": a, "seed": sd, "test_acc": v}
            for r, base in (("same", 80.0), ("transfer", 81.0)) for sd in (0, 1)
            for a, v in (("hard labels", base + sd), ("kd", base + sd + 0.5 * (r == "transfer")))]
    d = ch.route_deltas(rows)
    assert set(d["arm"]) == {"kd"} and len(d) == 4
    assert d.set_index(["route", "seed"])["delta"].to_dict() == {("same", 0): 0.0, ("same", 1): 0.0,
                                                                 ("transfer", 0): 0.5, ("transfer", 1): 0.5}
    with pytest.raises(ValueError, match="no 'hard labels' arm"):
        ch.route_deltas([r for r in rows if not (r["route"] == "same" and r["arm"] == "hard labels")])
    with pytest.raises(ValueError, match="needs the columns"):
        ch.route_deltas([{"route": "r", "arm": "a"}])


def test_output_sharpness():
    z = torch.tensor([[20.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    r = ch.output_sharpness(z, torch.tensor([0, 2]))
    assert r["acc"] == pytest.approx(0.5) and r["max_prob"] == pytest.approx((1.0 + 1 / 3) / 2, abs=1e-6)
    assert r["entropy"] == pytest.approx(math.log(3) / 2, abs=1e-6) and r["wrong_kl"] == pytest.approx(0.0, abs=1e-6)


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
    # hotter temperature (or smaller logits) -> the wrong classes look more alike: the measure depends on scale
    assert ch.nontarget_divergence(z, y, temperature=8.0)[2] < d[2]
    assert torch.allclose(ch.nontarget_divergence(z / 8.0, y), ch.nontarget_divergence(z, y, temperature=8.0))
    with pytest.raises(ValueError, match="at least 3 classes"):
        ch.nontarget_divergence(torch.zeros(2, 2), torch.tensor([0, 1]))


def test_wrong_class_rank_agreement_is_scale_free():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(200, 6, generator=g), torch.randint(0, 6, (200,), generator=g)
    same = ch.wrong_class_rank_agreement(z, 3.0 * z + 2.0, y)
    assert torch.allclose(same, torch.ones(200, dtype=same.dtype))
    assert torch.allclose(ch.wrong_class_rank_agreement(z, -z, y), -torch.ones(200, dtype=same.dtype))
    # the true class is left out: changing only its logit changes nothing
    z2 = z.clone()
    z2[torch.arange(200), y] += 100.0
    assert torch.allclose(ch.wrong_class_rank_agreement(z, z2, y), same)
    # unrelated orders agree about 0 on average; Spearman of 5 ranks: 1 - 6 Σd² / (n(n² - 1))
    other = torch.randn(200, 6, generator=g)
    assert abs(float(ch.wrong_class_rank_agreement(z, other, y).mean())) < 0.1
    a, b = torch.tensor([[9.0, 5.0, 4.0, 3.0, 2.0, 1.0]]), torch.tensor([[9.0, 4.0, 5.0, 3.0, 2.0, 1.0]])
    assert float(ch.wrong_class_rank_agreement(a, b, torch.tensor([0]))) == pytest.approx(1 - 6 * 2 / (5 * 24))
    with pytest.raises(ValueError, match="same shape"):
        ch.wrong_class_rank_agreement(z, z[:, :5], y)


def test_class_similarity_matrix_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(50, 4, generator=g) * 2, torch.arange(50) % 4
    for T in (1.0, 3.0):
        m = ch.class_similarity_matrix(z, y, temperature=T)
        p = F.softmax(z / T, 1)
        want = torch.stack([p[y == c].mean(0) for c in range(4)])
        assert torch.allclose(m, want, atol=1e-6) and torch.allclose(m.sum(1), torch.ones(4))
        w = ch.class_similarity_matrix(z, y, temperature=T, wrong_only=True)
        off = want * (1 - torch.eye(4))
        assert torch.allclose(w, off / off.sum(1, keepdim=True), atol=1e-6)
    with pytest.raises(ValueError, match="every class at least once; missing \\[3\\]"):
        ch.class_similarity_matrix(z, y % 3)
    with pytest.raises(ValueError, match="temperature"):
        ch.class_similarity_matrix(z, y, temperature=0)
    with pytest.raises(TypeError, match="wrong_only"):
        ch.class_similarity_matrix(z, y, wrong_only=1)


def test_target_entropy():
    z = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    p = F.softmax(z, 1)
    assert ch.target_entropy(z, 1.0) == pytest.approx(float(-(p * p.log()).sum()) / math.log(4), abs=1e-6)
    assert ch.target_entropy(z, 1.0) < ch.target_entropy(z, 4.0) < ch.target_entropy(z, 64.0) < 1.0
    assert ch.target_entropy(torch.zeros(5, 3), 0.5) == pytest.approx(1.0)


def test_cluster_spread():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = torch.arange(300) % 3
    h = centres[y] + 0.5 * torch.randn(300, 2, generator=g)
    spread = ch.cluster_spread(h, y)
    # within: E‖noise‖² = 2 · 0.25; between: mean squared distance of the centres = (100 + 100 + 200) / 3
    assert spread == pytest.approx(0.5 / (400 / 3), rel=0.15)
    assert ch.cluster_spread(7.0 * h + 3.0, y) == pytest.approx(spread, rel=1e-6)          # scale-free
    assert ch.cluster_spread(centres[y] + 2.0 * torch.randn(300, 2, generator=g), y) > spread
    with pytest.raises(ValueError, match="at least 2 classes"):
        ch.cluster_spread(h, torch.zeros(300, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        ch.cluster_spread(h[:, 0], y)
    with pytest.raises(ValueError, match="labels must have shape"):
        ch.cluster_spread(h, y[:10])


def test_t_interval():
    lo, hi = ch.t_interval([1.0, 2.0, 3.0])
    assert (lo + hi) / 2 == pytest.approx(2.0) and hi - lo == pytest.approx(2 * 4.302653 / math.sqrt(3), rel=1e-5)
    assert ch.t_interval([5.0]) == (5.0, 5.0)


# --------------------------------------------------------------------------------------------- mutual information
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
    shifted = ch.logit_difference_views(model, x, 6, 0, views=2, max_shift=2, noise_std=0.0)
    assert not torch.allclose(shifted[:, 0], plain[:, 0])
    with pytest.raises(ValueError, match="views must be an int >= 2"):
        ch.logit_difference_views(model, x, 6, 0, views=1)
    with pytest.raises(ValueError, match="class_a must be a class index"):
        ch.logit_difference_views(model, x, 10, 0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\)"):
        ch.logit_difference_views(model, x[0], 6, 0)


def test_two_class_subset(fashion_mnist_small):
    x, y = ch.two_class_subset(fashion_mnist_small.train, 6, 0, per_class=30)
    assert x.shape == (60, 1, 28, 28) and y[:30].eq(6).all() and y[30:].eq(0).all()
    with pytest.raises(ValueError, match="has only"):
        ch.two_class_subset(fashion_mnist_small.train, 6, 0, per_class=10_000)
    with pytest.raises(TypeError, match="split must have"):
        ch.two_class_subset(x, 6, 0, per_class=3)


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
    assert ch.gaussian_mutual_information(d) == pytest.approx(math.log(2), abs=0.02)
    # with few views the estimate sits above log 2 by about ½·log(L / (L − 1)) (μ_x estimated from L values)
    assert ch.gaussian_mutual_information(d[:, :5]) == pytest.approx(math.log(2) + 0.5 * math.log(5 / 4), abs=0.05)


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
    # the small positive bias comes from estimating μ_x from L views: ≈ ½·log(L / (L − 1)) = 0.026
    assert ch.gaussian_mutual_information(d) == pytest.approx(0.5 * math.log(20 / 19), abs=0.02)
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


# --------------------------------------------------------------------------------------------- figures
def test_figures_render():
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(0)
    hist = [{"teacher": t, "images": i, "max_prob": float(v)} for t in ("CE", "LS ε = 0.1")
            for i in ("train", "held out") for v in torch.rand(50, generator=g) * 0.9 + 0.1]
    axes = ch.plot_sharpness(hist)
    assert [a.get_title() for a in axes] == ["CE", "LS ε = 0.1"]
    deltas = pd.DataFrame([{"route": r, "arm": a, "seed": s, "delta": 0.1 * s}
                           for r in ("same", "transfer") for a in ("kd", "pl") for s in (0, 1, 2)])
    ax = ch.plot_routes(deltas)
    assert "fair baseline" in ax.get_ylabel() and len(ax.get_legend().get_texts()) == 2
    grid = pd.DataFrame([{"teacher": t, "T": T, "seed": s, "test_acc": 80 + s, "entropy": T / 8, "spread": 0.1 * T}
                         for t in ("CE", "LS") for T in (1.0, 2.0, 8.0) for s in (0, 1)])
    ax = ch.plot_temperature(grid, {"hard labels": 79.0})
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "hard labels"
    assert ch.plot_target_entropy(grid).get_xlabel().startswith("entropy")
    assert ch.plot_spread(grid).get_xlabel() == "distillation temperature T"
    m = ch.class_similarity_matrix(torch.randn(40, 4, generator=g), torch.arange(40) % 4, wrong_only=True)
    axes = ch.plot_similarity_matrices({"a": m, "b": m}, class_names=list("wxyz"))
    assert [a.get_title() for a in axes] == ["a", "b"]
    with pytest.raises(ValueError, match="class_names must have 4"):
        ch.plot_similarity_matrices({"a": m}, class_names=list("wxy"))
    er = [{"measure": m_, "teacher": t, "value": v} for m_ in ("KL", "MI") for t in ("CE", "LS") for v in (1.0, 1.2)]
    assert [a.get_title() for a in ch.plot_erasure(er)] == ["KL", "MI"]
    with pytest.raises(ValueError, match="needs the columns"):
        ch.plot_routes([{"route": "r"}])
    plt.close("all")
