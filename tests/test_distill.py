"""Tests for lsutils.distill: the distillation loss against its formula, the trainer loss "distill",
the dark-knowledge measurements and the Gaussian mutual-information estimate on data with known MI."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lsutils as ls
from lsutils import distill
from lsutils.registry import LossContext, build_loss
from lsutils.train import Batch, RunSpec


# ----------------------------------------------------------------------------------- the loss vs its formula
def _by_formula(s, t, y, T, beta):
    """β·T²·mean_i Σ_k p_t,ik (log p_t,ik − log p_s,ik) + (1−β)·mean_i(−log softmax(s_i)_{y_i}), written out."""
    s, t = s.double(), t.double()
    ps = torch.exp(s / T) / torch.exp(s / T).sum(1, keepdim=True)
    pt = torch.exp(t / T) / torch.exp(t / T).sum(1, keepdim=True)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean()
    out = beta * T ** 2 * kl
    if beta < 1:
        p1 = torch.exp(s) / torch.exp(s).sum(1, keepdim=True)
        out = out + (1 - beta) * (-p1[torch.arange(len(y)), y].log()).mean()
    return out


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
@pytest.mark.parametrize("beta", [0.0, 0.3, 0.9, 1.0])
def test_distillation_loss_matches_formula(T, beta):
    g = torch.Generator().manual_seed(int(T * 10 + beta * 100))
    s, t = torch.randn(32, 10, generator=g) * 3, torch.randn(32, 10, generator=g) * 3
    y = torch.randint(0, 10, (32,), generator=g)
    got = ls.distillation_loss(s, t, y, temperature=T, beta=beta)
    assert got.dim() == 0 and got.dtype == torch.float32
    assert torch.allclose(got.double(), _by_formula(s, t, y, T, beta), rtol=1e-5, atol=1e-6)


def test_distillation_loss_special_cases():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    y = torch.randint(0, 5, (16,), generator=g)
    # beta = 0 is plain cross-entropy, whatever the teacher says
    assert torch.allclose(ls.distillation_loss(s, t, y, 3.0, 0.0), F.cross_entropy(s, y))
    assert torch.allclose(ls.distillation_loss(s, t * 0, y, 3.0, 0.0), F.cross_entropy(s, y))
    # beta = 1 ignores the labels, and target=None is allowed
    assert torch.equal(ls.distillation_loss(s, t, None, 2.0, 1.0), ls.distillation_loss(s, t, y, 2.0, 1.0))
    # a student that equals its teacher has zero KL; any other has positive KL
    assert float(ls.distillation_loss(t, t, None, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(ls.distillation_loss(s, t, None, 4.0, 1.0)) > 0.01
    # adding a constant to a row of logits changes nothing (softmax is shift-invariant)
    shifted = ls.distillation_loss(s + torch.randn(16, 1, generator=g), t, y, 2.0, 0.5)
    assert torch.allclose(shifted, ls.distillation_loss(s, t, y, 2.0, 0.5), atol=1e-6)
    # KL(p_t || p_s) is not symmetric: the teacher is the target distribution
    assert not torch.allclose(ls.distillation_loss(s, t, None, 1.0, 1.0), ls.distillation_loss(t, s, None, 1.0, 1.0))


def test_distillation_gradients():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(8, 10, generator=g).requires_grad_(True)
    t = torch.randn(8, 10, generator=g).requires_grad_(True)
    ls.distillation_loss(s, t, None, 2.0, 1.0).backward()
    assert t.grad is None                       # the teacher is a constant target
    # at temperature T, with T² scaling: d loss / d s = T · (p_s − p_t) / B
    expected = 2.0 * (F.softmax(s / 2, 1) - F.softmax(t / 2, 1)) / 8
    assert torch.allclose(s.grad, expected.detach(), atol=1e-6)
    # Hinton et al.'s high-temperature limit: the gradient becomes logit matching, ((s − s̄) − (t − t̄)) / (K·B)
    s2 = (torch.randn(8, 10, generator=g)).requires_grad_(True)
    t2 = torch.randn(8, 10, generator=g)
    ls.distillation_loss(s2, t2, None, 1000.0, 1.0).backward()
    centred = (s2 - s2.mean(1, keepdim=True)) - (t2 - t2.mean(1, keepdim=True))
    assert torch.allclose(s2.grad, centred.detach() / (10 * 8), rtol=0.02, atol=2e-5)


@pytest.mark.parametrize("bad, exc, match", [
    (dict(temperature=0.0), ValueError, "temperature must be a finite number > 0"),
    (dict(temperature=-1), ValueError, "temperature"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(temperature=float("inf")), ValueError, "temperature"),
    (dict(temperature="2"), TypeError, "temperature must be a real number"),
    (dict(temperature=True), TypeError, "temperature"),
    (dict(beta=-0.1), ValueError, r"beta must be in \[0, 1\]"),
    (dict(beta=1.5), ValueError, "beta"),
    (dict(beta=float("nan")), ValueError, "beta"),
    (dict(beta=None), TypeError, "beta must be a real number"),
    (dict(beta=0.5, target=None), ValueError, "target .* needed when beta < 1"),
    (dict(teacher_logits=torch.zeros(4, 6)), ValueError, "teacher_logits must have the shape"),
    (dict(student_logits=torch.zeros(4)), ValueError, r"student_logits must have shape \(N, K\)"),
    (dict(student_logits=torch.zeros(4, 5, dtype=torch.long)), TypeError, "student_logits"),
    (dict(target=torch.zeros(3, dtype=torch.long)), ValueError, r"target must have shape \(4,\)"),
    (dict(target=torch.full((4,), 7)), ValueError, "class index 7"),
    (dict(target=torch.zeros(4)), TypeError, "target"),
])
def test_distillation_loss_errors(bad, exc, match):
    args = dict(student_logits=torch.zeros(4, 5), teacher_logits=torch.zeros(4, 5),
                target=torch.zeros(4, dtype=torch.long), temperature=2.0, beta=0.5)
    args.update(bad)
    with pytest.raises(exc, match=match):
        ls.distillation_loss(**args)


# ----------------------------------------------------------------------------------- the trainer loss
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


def test_distillation_loss_object_lookup_and_augmented_batches():
    x = torch.randn(20, 1, 4, 4)
    teacher = _Counting()
    loss = distill.DistillationLoss(teacher, x, temperature=2.0, beta=1.0)
    assert teacher.seen == 20 and not any(p.requires_grad for p in teacher.parameters())
    s = torch.randn(5, 3)
    idx = torch.tensor([3, 1, 4, 15, 9])
    with torch.no_grad():
        want = ls.distillation_loss(s, teacher.net(x[idx]), None, 2.0, 1.0)
    got = loss(s, torch.zeros(5, dtype=torch.long), Batch(x[idx], idx))
    assert teacher.seen == 20 and not loss.augmented           # looked up, not recomputed
    assert torch.allclose(got, want, atol=1e-6)
    # an augmented batch (inputs differ from train_x[index]): the teacher sees the augmented inputs
    xa = x[idx].flip(3)
    got = loss(s, torch.zeros(5, dtype=torch.long), Batch(xa, idx))
    with torch.no_grad():
        want = ls.distillation_loss(s, teacher.net(xa), None, 2.0, 1.0)
    assert loss.augmented and teacher.seen == 25
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(TypeError, match="batch"):
        loss(s, torch.zeros(5, dtype=torch.long), None)
    with pytest.raises(TypeError, match="teacher must be a torch.nn.Module"):
        distill.DistillationLoss("teacher", x, 2.0)
    with pytest.raises(ValueError, match="teacher_logits must have shape"):
        distill.DistillationLoss(teacher, x, 2.0, teacher_logits=torch.zeros(3, 3))


@pytest.mark.parametrize("augment", [False, True])
def test_distillation_loss_in_fit_detects_augmentation(augment):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    teacher = ls.build_model("cnn", 3, 1, width=4, image_size=8).eval()
    student = ls.build_model("mlp", 3, 1, width=8, image_size=8)
    loss = distill.DistillationLoss(teacher, x, temperature=4.0)
    h = ls.fit(student, x, y, loss, epochs=2, batch_size=16, lr=1e-2, device="cpu", augment=augment, progress=False)
    assert loss.augmented is augment
    assert all(math.isfinite(v) for v in h["train_loss"])


def test_registered_distill_loss_loads_teacher_once_and_memoises_logits():
    x = torch.randn(30, 1, 4, 4)
    teacher = _Counting()
    asked = []

    def load_model(spec):
        asked.append(spec)
        return teacher

    spec = _teacher_spec_dict(seed=123)
    ctx = LossContext(train_x=x, train_y=torch.zeros(30, dtype=torch.long), device=torch.device("cpu"),
                      load_model=load_model)
    loss = build_loss({"name": "distill", "teacher": spec, "temperature": 4, "beta": 1.0}, ctx)
    assert isinstance(loss, distill.DistillationLoss) and loss.wants_batch
    assert asked == [RunSpec.from_dict(spec)] and teacher.seen == 30
    assert loss.temperature == 4.0 and loss.beta == 1.0
    # a second student of the same teacher on the same data reuses the logits (no new forward pass)
    loss2 = build_loss({"name": "distill", "teacher": spec, "temperature": 8.0, "beta": 1.0}, ctx)
    assert teacher.seen == 30 and loss2.teacher_logits is loss.teacher_logits
    # ... but other training data means new logits
    ctx2 = LossContext(train_x=x.clone(), train_y=ctx.train_y, device=ctx.device, load_model=load_model)
    build_loss({"name": "distill", "teacher": spec, "temperature": 8.0}, ctx2)
    assert teacher.seen == 60


@pytest.mark.parametrize("spec, ctx, exc, match", [
    ({"temperature": 0}, True, ValueError, "temperature"),
    ({"beta": 2}, True, ValueError, "beta"),
    ({"teacher": "cnn"}, True, TypeError, "teacher must be a RunSpec"),
    ({"teacher": {"model": "cnn"}}, True, TypeError, "teacher must be a RunSpec"),
    ({}, False, ValueError, "needs a LossContext"),
    ({"tempreature": 2}, True, TypeError, "bad hyper-parameters"),
])
def test_registered_distill_loss_errors(spec, ctx, exc, match):
    full = {"name": "distill", "teacher": _teacher_spec_dict(), "temperature": 2.0, "beta": 1.0, **spec}
    context = LossContext(train_x=torch.randn(4, 1, 4, 4), load_model=lambda s: _Counting()) if ctx else None
    with pytest.raises(exc, match=match):
        build_loss(full, context)


def test_train_model_distills_from_a_cached_teacher(tmp_data_root, fashion_mnist_root):
    """End to end on real Fashion-MNIST: the student's spec names its teacher, which is trained once and cached."""
    common = dict(dataset="fashion_mnist", n_train=256, n_val=64, data_seed=0, epochs=2, batch_size=32, lr=3e-3,
                  weight_decay=1e-2, augment=False)
    teacher = RunSpec(model="cnn", width=4, loss={"name": "ce"}, seed=0, **common)
    student = RunSpec(model="mlp", width=16, loss={"name": "distill", "teacher": teacher.to_dict(),
                                                   "temperature": 4.0, "beta": 1.0}, seed=0, **common)
    run = ls.train_model(student, progress=False)
    assert not run.from_cache and ls.cache_path(teacher).exists() and ls.cache_path(student).exists()
    assert math.isfinite(run.history["train_loss"][-1]) and 0.0 <= run.history["val_acc"][-1] <= 1.0
    again = ls.train_model(student, progress=False)
    assert again.from_cache
    for a, b in zip(run.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------- the experiment's specs
def test_chapter_settings_and_specs_reuse_the_ce_ls_models():
    for name in ("smoke", "cpu", "gpu"):
        p = ls.get_profile(name) if name != "gpu" else ls.config._table("cpu")["gpu"]
        s = ls.chapter_settings(p)
        assert {0.0, 0.1}.issubset(s["teacher_epsilons"]) and max(s["teacher_epsilons"]) > 0.1
        assert {1.0, 2.0, 4.0, 8.0}.issubset(s["temperatures"]) and s["beta"] == 1.0
        assert len(s["seeds"]) >= 2
    p = ls.get_profile("cpu")
    s = ls.chapter_settings(p)
    specs = ls.distillation_specs(p)
    assert len(specs) == len(s["teacher_epsilons"]) * len(s["temperatures"]) * len(s["seeds"]) + len(s["seeds"])
    labels, spec = specs[0]
    # the teacher inside the student's spec is exactly the CE/LS model other chapters train (same cache key)
    teacher = RunSpec.from_dict(spec.loss_spec()["teacher"])
    want = RunSpec.from_profile(p, loss=ls.smoothing_spec(labels["teacher_eps"]), seed=labels["seed"])
    assert teacher == want and teacher.key() == want.key()
    assert spec.model == s["student_model"] and spec.width == s["student_width"]
    # the student is much smaller than the teacher
    n_params = lambda m: sum(q.numel() for q in m.parameters())  # noqa: E731
    t_model = ls.build_model(p.model, 10, 1, width=p.width)
    s_model = ls.build_model(s["student_model"], 10, 1, width=s["student_width"])
    assert n_params(s_model) < 0.25 * n_params(t_model)
    baselines = [(lab, sp) for lab, sp in specs if lab["teacher_eps"] is None]
    assert len(baselines) == len(s["seeds"]) and all(sp.loss_spec() == {"name": "ce"} for _, sp in baselines)
    longer = ls.student_spec(p, 0, teacher=want, temperature=2.0, epochs=3 * p.epochs)
    assert longer.epochs == 3 * p.epochs and longer.model == s["student_model"]
    with pytest.raises(ValueError, match="temperature is required"):
        ls.student_spec(p, 0, teacher=want)
    with pytest.raises(TypeError, match="teacher must be a RunSpec"):
        ls.student_spec(p, 0, teacher=want.to_dict(), temperature=2.0)


def _fake_rows():
    rows = []
    for seed in (0, 1, 2):
        for eps, offset in ((0.0, 0.0), (0.1, -0.01)):
            for T, bump in ((1.0, 0.0), (4.0, 0.02)):
                acc = 0.8 + offset + bump * (eps == 0.0) + 0.001 * seed
                rows.append({"teacher_eps": eps, "temperature": T, "seed": seed, "val_acc": acc, "test_acc": acc})
        rows.append({"teacher_eps": None, "temperature": None, "seed": seed, "val_acc": 0.79, "test_acc": 0.79})
    return rows


def test_student_table_and_paired_differences():
    rows = _fake_rows()
    table = ls.student_table(rows)
    assert list(table.columns) == ["T = 1", "T = 4"]
    assert table.loc["ε = 0", "T = 4"] == "82.1 ± 0.1" and table.loc["ε = 0.1", "T = 1"] == "79.1 ± 0.1"
    assert table.loc["hard labels (no teacher)", "T = 1"] == "79.0 ± 0.0"
    assert ls.best_temperature(rows, 0.0) == 4.0 and ls.best_temperature(rows, 0.1) in (1.0, 4.0)
    assert ls.paired_differences(rows, 0.1, 1.0) == pytest.approx([-0.01] * 3)
    assert ls.paired_differences(rows, 0.1, 1.0, reference_temperature="best") == pytest.approx([-0.03] * 3)
    assert ls.paired_differences(rows, 0.0, 4.0, reference_eps=None) == pytest.approx([0.03, 0.031, 0.032])
    with pytest.raises(ValueError, match="temperature must be one of"):
        ls.paired_differences(rows, 0.1, 3.0)
    with pytest.raises(ValueError, match="no students of a teacher"):
        ls.paired_differences(rows, 0.5, 1.0)
    with pytest.raises(ValueError, match="rows is empty"):
        ls.student_table([])


def test_plots_render():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _fake_rows()
    ax = ls.plot_student_heatmap(rows)
    assert "hard-label student" in ax.get_title() and ax.get_xlabel() == "distillation temperature T"
    ax = ls.plot_student_vs_temperature(rows)
    assert len(ax.get_legend().get_texts()) == 3
    m = ls.class_similarity_matrix(torch.randn(40, 4), torch.arange(40) % 4)
    axes = ls.plot_similarity_matrices({"a": m, "b": m}, class_names=list("wxyz"))
    assert [a.get_title() for a in axes] == ["a", "b"]
    axes = ls.plot_logit_gaps({"CE": (torch.randn(20), torch.randn(20))}, class_names=("Shirt", "T-shirt"))
    assert "Shirt" in axes[0].get_xlabel()
    plt.close("all")


# ----------------------------------------------------------------------------------- dark knowledge
def test_class_similarity_matrix_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(50, 4, generator=g) * 2, torch.arange(50) % 4
    for T in (1.0, 3.0):
        m = ls.class_similarity_matrix(z, y, temperature=T)
        p = F.softmax(z / T, 1)
        want = torch.stack([p[y == c].mean(0) for c in range(4)])
        assert torch.allclose(m, want, atol=1e-6) and torch.allclose(m.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="every class at least once; missing \\[3\\]"):
        ls.class_similarity_matrix(z, y % 3)
    with pytest.raises(ValueError, match="temperature"):
        ls.class_similarity_matrix(z, y, temperature=0)


def test_nontarget_divergence():
    k = 5
    y = torch.tensor([0, 1, 2])
    z = torch.tensor([[9.0, 1.0, 1.0, 1.0, 1.0],       # wrong classes all equal -> 0
                      [0.0, 9.0, 50.0, 0.0, 0.0],      # all wrong mass on class 2 -> log(K-1)
                      [1.0, 2.0, 5.0, 3.0, 0.5]])
    d = ls.nontarget_divergence(z, y)
    assert d[0] == pytest.approx(0.0, abs=1e-6) and d[1] == pytest.approx(math.log(k - 1), abs=1e-4)
    q = F.softmax(torch.tensor([1.0, 2.0, 3.0, 0.5]), 0)
    assert d[2] == pytest.approx(float((q * (q * (k - 1)).log()).sum()), abs=1e-6)
    # hotter temperature -> the wrong classes look more alike
    assert ls.nontarget_divergence(z, y, temperature=8.0)[2] < d[2]
    with pytest.raises(ValueError, match="at least 3 classes"):
        ls.nontarget_divergence(torch.zeros(2, 2), torch.tensor([0, 1]))


def test_logit_gap_statistics():
    g = torch.Generator().manual_seed(0)
    n = 4000
    y = torch.cat([torch.full((n,), 2), torch.full((n,), 0), torch.full((10,), 1)])
    z = torch.zeros(2 * n + 10, 3)
    z[:n, 2] = 3.0 + 0.5 * torch.randn(n, generator=g)       # class 2: d = z2 - z0 ~ N(3, 0.5²)
    z[n:2 * n, 2] = -1.0 + 1.5 * torch.randn(n, generator=g)  # class 0: d ~ N(-1, 1.5²)
    st = ls.logit_gap_statistics(z, y, class_a=2, class_b=0)
    assert st["mean_a"] == pytest.approx(3.0, abs=0.05) and st["std_a"] == pytest.approx(0.5, abs=0.03)
    assert st["mean_b"] == pytest.approx(-1.0, abs=0.1) and st["std_b"] == pytest.approx(1.5, abs=0.06)
    assert st["gap"] == pytest.approx(4.0, abs=0.1)
    assert st["spread_ratio"] == pytest.approx(math.sqrt((0.25 + 2.25) / 2) / 4, abs=0.02)
    # within variance (0.25 + 2.25)/2 = 1.25; between (2²) = 4 -> within fraction 1.25 / 5.25
    assert st["within_fraction"] == pytest.approx(1.25 / 5.25, abs=0.02)
    with pytest.raises(ValueError, match="class_a and class_b must differ"):
        ls.logit_gap_statistics(z, y, 1, 1)
    with pytest.raises(ValueError, match="class_b must be a class index"):
        ls.logit_gap_statistics(z, y, 0, 3)


def test_logit_difference_views_on_real_images(fashion_mnist_small):
    x = fashion_mnist_small.train.x[:40]
    torch.manual_seed(0)
    model = ls.build_model("cnn", 10, 1, width=4)
    d = ls.logit_difference_views(model, x, 6, 0, views=3, seed=1)
    assert d.shape == (40, 3)
    assert torch.equal(d, ls.logit_difference_views(model, x, 6, 0, views=3, seed=1))      # seeded
    assert not torch.equal(d[:, 0], d[:, 1])                                              # views differ
    z = ls.predict_logits(model, x)
    plain = ls.logit_difference_views(model, x, 6, 0, views=2, max_shift=0, noise_std=0.0)
    assert torch.allclose(plain[:, 0], z[:, 6] - z[:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="views must be an int >= 2"):
        ls.logit_difference_views(model, x, 6, 0, views=1)
    with pytest.raises(ValueError, match="class_a must be a class index"):
        ls.logit_difference_views(model, x, 10, 0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\)"):
        ls.logit_difference_views(model, x[0], 6, 0)


# ----------------------------------------------------------------------------------- mutual information
def test_mi_of_separated_examples_is_log_n():
    n, L = 200, 5
    g = torch.Generator().manual_seed(0)
    d = 100.0 * torch.arange(n, dtype=torch.float64)[:, None] + 0.1 * torch.randn(n, L, generator=g, dtype=torch.float64)
    assert ls.gaussian_mutual_information(d) == pytest.approx(math.log(n), abs=1e-6)


def test_mi_of_two_tight_clusters_is_log_2():
    """What Müller et al. see with LS: within a class, the examples become indistinguishable."""
    n, L = 300, 60
    g = torch.Generator().manual_seed(1)
    cls = (torch.arange(n) % 2).double()[:, None]
    d = 20.0 * cls + torch.randn(n, L, generator=g, dtype=torch.float64)      # same mean within a class
    mi = ls.gaussian_mutual_information(d)
    assert mi == pytest.approx(math.log(2), abs=0.02)
    # with few views the estimate sits above log 2 by about ½·log(L / (L − 1)) (μ_x estimated from L values)
    d5 = d[:, :5]
    assert ls.gaussian_mutual_information(d5) == pytest.approx(math.log(2) + 0.5 * math.log(5 / 4), abs=0.05)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_mi_matches_the_gaussian_channel(tau):
    """μ_x ~ N(0, τ²), views = μ_x + N(0, 1): I = ½ log(1 + τ²/σ²) for many examples and views."""
    n, L = 600, 40
    g = torch.Generator().manual_seed(2)
    mu = tau * torch.randn(n, 1, generator=g, dtype=torch.float64)
    d = mu + torch.randn(n, L, generator=g, dtype=torch.float64)
    assert ls.gaussian_mutual_information(d) == pytest.approx(0.5 * math.log(1 + tau ** 2), abs=0.04)


def test_mi_of_pure_noise_is_near_zero_and_invariant():
    g = torch.Generator().manual_seed(3)
    d = torch.randn(500, 20, generator=g)
    mi = ls.gaussian_mutual_information(d)
    # the small positive bias comes from estimating μ_x from L views: ≈ ½·log(L / (L − 1)) = 0.026
    assert mi == pytest.approx(0.5 * math.log(20 / 19), abs=0.02)
    d2 = (torch.randn(100, 5, generator=g) * torch.linspace(0.5, 3, 100)[:, None]
          + torch.randn(100, 1, generator=g)).double()
    base = ls.gaussian_mutual_information(d2)
    assert ls.gaussian_mutual_information(-3.0 * d2 + 7.0) == pytest.approx(base, abs=1e-9)
    assert ls.gaussian_mutual_information(d2, chunk=7) == pytest.approx(base, abs=1e-9)


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
        ls.gaussian_mutual_information(d)


def test_nontarget_logit_std_and_two_class_subset(fashion_mnist_small):
    z = torch.tensor([[5.0, 1.0, 3.0, 2.0], [0.0, 7.0, 7.0, 7.0]])
    got = ls.nontarget_logit_std(z, torch.tensor([0, 0]))
    assert got[0] == pytest.approx(float(torch.tensor([1.0, 3.0, 2.0]).std(unbiased=False)))
    assert got[1] == pytest.approx(0.0)
    x, y = ls.two_class_subset(fashion_mnist_small.train, 6, 0, per_class=30)
    assert x.shape == (60, 1, 28, 28) and y[:30].eq(6).all() and y[30:].eq(0).all()
    with pytest.raises(ValueError, match="has only"):
        ls.two_class_subset(fashion_mnist_small.train, 6, 0, per_class=10_000)
    with pytest.raises(TypeError, match="split must have"):
        ls.two_class_subset(x, 6, 0, per_class=3)


def test_teacher_diagnostics_on_real_data(tmp_data_root, fashion_mnist_root, monkeypatch):
    """Trains two tiny smoke teachers (CE and LS 0.3) and measures them; LS flattens the wrong classes."""
    p = ls.get_profile("smoke")
    real = distill.chapter_settings(p)
    monkeypatch.setattr(distill, "chapter_settings",
                        lambda profile: {**real, "seeds": (0,), "teacher_epsilons": (0.0, 0.3), "mi_per_class": 40})
    rows = ls.teacher_diagnostics(p)
    assert [(r["eps"], r["seed"]) for r in rows] == [(0.0, 0), (0.3, 0)]
    keys = {f"nontarget_kl_T{t:g}" for t in real["dk_temperatures"]} | {f"mi[{n}]" for n in real["mi_augmentations"]}
    assert keys | {"nontarget_logit_std", "spread_ratio", "within_fraction"} <= set(rows[0])
    for r in rows:
        assert 0.0 < r["mi[noise 0.1]"] <= math.log(80) + 1e-9
        assert r["nontarget_kl_T1"] > r["nontarget_kl_T4"] > r["nontarget_kl_T16"] >= 0.0
    assert rows[1]["nontarget_kl_T1"] < rows[0]["nontarget_kl_T1"]       # ε = 0.3 erases wrong-class structure


def test_paired_verdict():
    v = ls.paired_verdict([0.004, 0.005, 0.003])
    assert v["verdict"] == "higher" and v["text"] == "+0.4 ± 0.1"
    assert v["mean"] == pytest.approx(0.4) and v["std"] == pytest.approx(0.1)
    assert ls.paired_verdict([-0.01, -0.012], higher="up", lower="down")["verdict"] == "down"
    assert ls.paired_verdict([0.01, -0.002, 0.0])["verdict"] == "no clear difference"
    with pytest.raises(ValueError, match="at least 2"):
        ls.paired_verdict([0.01])
