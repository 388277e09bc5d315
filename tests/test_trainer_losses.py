"""Tests of the losses that later chapters train with (distillation, adaptive LS, ε schedules, online LS) and of
the trainer's loss registry: values against independent formulas, gradients, the trainer's use of them, errors."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402


def _nonmax_std_numpy(logits: np.ndarray) -> np.ndarray:
    """The paper's formula, written independently: sqrt(1/(K-1) Σ_{i≠k} (p_i - p̄)²), k = argmax p."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    out = []
    for row in p:
        rest = np.delete(row, row.argmax())
        out.append(np.sqrt(((rest - rest.mean()) ** 2).sum() / (len(row) - 1)))
    return np.array(out)


def _cv_nonmax(logits: torch.Tensor) -> float:
    """Scale-free spread of the non-maximal probabilities: std / mean of the K-1 of them, averaged over rows."""
    p = logits.double().softmax(1)
    k = p.shape[1]
    return float((ls.losses.non_max_std(logits.double()) * (k - 1) / (1 - p.max(1).values)).mean())


def _optimise_free_logits(loss_fn, steps: int = 300):
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(256, 10, generator=g) * 2
    y = torch.randint(0, 10, (256,), generator=g)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(z, y).backward()
        opt.step()
    return z.detach(), y


@pytest.fixture(scope="module")
def trained_small(fashion_mnist_small):
    """Small MLPs trained on real Fashion-MNIST (1,000 images) with CE, LS (ε = 0.1) and ALS (λ = 5, 20)."""
    data = fashion_mnist_small
    losses = {"ce": {"name": "ce"}, "ls": {"name": "ls", "epsilon": 0.1},
              "als5": {"name": "als", "lam": 5.0}, "als20": {"name": "als", "lam": 20.0}}
    out = {}
    for name, spec in losses.items():
        torch.manual_seed(0)
        model = ls.build_model("mlp", 10, 1, width=64, image_size=28)
        ls.fit(model, data.train.x, data.train.y, ls.losses.build_loss(spec), epochs=8, batch_size=100, lr=3e-3,
               seed=0, device="cpu", progress=False)
        out[name] = ls.predict_logits(model, data.train.x)
    return out, data.train.y


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


def test_loss_equals_the_formula_on_random_logits():
    g = torch.Generator().manual_seed(0)
    for k in (2, 3, 10, 100):
        z = torch.randn(64, k, generator=g, dtype=torch.float64) * 3
        y = torch.randint(0, k, (64,), generator=g)
        for lam in (0.0, 0.5, 5.0):
            want = F.cross_entropy(z, y, reduction="none").numpy() + lam * _nonmax_std_numpy(z.numpy())
            got = ls.als_loss(z, y, lam=lam, reduction="none").numpy()
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6 if k == 2 else 1e-12)


def test_lambda_zero_is_cross_entropy_and_reductions_agree():
    z, y = torch.randn(33, 7), torch.randint(0, 7, (33,))
    assert torch.allclose(ls.als_loss(z, y, lam=0.0), F.cross_entropy(z, y))
    per = ls.als_loss(z, y, lam=2.0, reduction="none")
    assert per.shape == (33,)
    assert torch.allclose(ls.als_loss(z, y, lam=2.0), per.mean())
    assert torch.allclose(ls.als_loss(z, y, lam=2.0, reduction="sum"), per.sum())


def test_regulariser_is_zero_for_equal_non_max_probabilities_whatever_the_max():
    for top in (0.5, 3.0, 30.0):  # p_max from 0.3 to 1 - 1e-13: the term never caps the maximum
        z = torch.tensor([[top, 0.0, 0.0, 0.0, 0.0]])
        assert float(ls.losses.non_max_std(z)) == 0.0
        assert torch.allclose(ls.als_loss(z, torch.tensor([0]), lam=10.0), F.cross_entropy(z, torch.tensor([0])))


def test_gradients_are_finite_where_the_square_root_is_not_differentiable():
    near_one_hot = torch.tensor([[60.0, 1.0, 0.0, 0.0], [80.0, 0.5, 0.0, -40.0]])      # p_i down to 1e-52
    for z in (torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.tensor([[1.0, -1.0]]), torch.zeros(3, 5), near_one_hot,
              near_one_hot.double()):
        z = z.clone().requires_grad_(True)
        ls.als_loss(z, torch.zeros(z.shape[0], dtype=torch.long), lam=5.0).backward()
        assert torch.isfinite(z.grad).all()


def test_gradient_norms_match_autograd_and_vanish_towards_one_hot():
    z = torch.tensor([[1.0, 0.5, 0.0, -0.3], [4.0, 1.0, 0.0, -0.3], [12.0, 1.0, 0.0, -0.3]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0])
    g = ls.losses.als_term_gradient_norm(z, y)
    for i in range(3):
        zi = z[i:i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(ls.losses.non_max_std(zi).sum(), zi)
        assert math.isclose(float(g["std"][i]), float(gi.norm()), rel_tol=1e-5)
        zi = z[i:i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(F.cross_entropy(zi, y[:1]), zi)
        assert math.isclose(float(g["ce"][i]), float(gi.norm()), rel_tol=1e-5)
    assert (g["std"].diff() < 0).all() and (g["ce"].diff() < 0).all() and (g["p_max"].diff() > 0).all()
    assert g["std"][2] < 1e-3 * g["std"][0]


def test_property_1_optimising_als_equalises_the_non_max_probabilities():
    """Gradient descent on free logits: the larger λ, the more equal the K-1 non-maximal probabilities."""
    cvs = [_cv_nonmax(_optimise_free_logits(lambda z, y, lam=lam: ls.als_loss(z, y, lam=lam, reduction="sum"))[0])
           for lam in (0.0, 5.0, 20.0)]
    assert cvs[0] > cvs[1] > cvs[2]
    assert cvs[2] < 0.6 * cvs[0]


def test_property_2_the_max_probability_is_not_capped_like_label_smoothing():
    """LS's optimum pins p_y at 1 - ε + ε/K = 0.91 (K = 10, ε = 0.1); ALS's keeps growing towards 1."""
    cap = 1 - 0.1 + 0.1 / 10
    z_ls, y = _optimise_free_logits(lambda z, y: F.cross_entropy(z, y, label_smoothing=0.1, reduction="sum"), 1000)
    z_als, _ = _optimise_free_logits(lambda z, y: ls.als_loss(z, y, lam=5.0, reduction="sum"), 1000)
    p_ls = z_ls.softmax(1).gather(1, y[:, None])
    p_als = z_als.softmax(1).gather(1, y[:, None])
    assert torch.allclose(p_ls, torch.full_like(p_ls, cap), atol=2e-3)
    assert float(p_als.min()) > 0.99


def test_properties_hold_for_a_network_trained_on_real_data(trained_small):
    logits, y = trained_small
    # 1. the non-maximal probabilities are more equal, the more so the larger λ
    stds = {k: float(ls.losses.non_max_std(z).mean()) for k, z in logits.items()}
    assert stds["als20"] < stds["als5"] < stds["ce"]
    assert _cv_nonmax(logits["als20"]) < _cv_nonmax(logits["ce"])
    # 2. the maximum probability is not held near LS's cap 0.91: many more training examples go past it
    cap = 1 - 0.1 + 0.1 / 10
    frac = {k: float((z.softmax(1).max(1).values > cap + 0.04).float().mean()) for k, z in logits.items()}
    assert frac["als5"] > 2 * frac["ls"]
    assert float(logits["als5"].softmax(1).max(1).values.mean()) > float(logits["ls"].softmax(1).max(1).values.mean())


@pytest.mark.parametrize("lam, exc", [(-0.1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
                                      ("1", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_lambda(lam, exc):
    with pytest.raises(exc, match="lam"):
        ls.als_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), lam=lam)


def test_bad_inputs_name_the_argument():
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(TypeError, match="logits"):
        ls.als_loss(z.numpy(), y, lam=1.0)
    with pytest.raises(TypeError, match="logits"):
        ls.als_loss(z.long(), y, lam=1.0)
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        ls.als_loss(z[0], y, lam=1.0)
    with pytest.raises(ValueError, match="K = 2"):
        ls.als_loss(z[:, :1], y, lam=1.0)
    assert torch.isnan(ls.als_loss(torch.full((4, 3), float("nan")), y, lam=1.0))   # NaN propagates, as in PyTorch
    with pytest.raises(TypeError, match="target"):
        ls.als_loss(z, y.float(), lam=1.0)
    with pytest.raises(ValueError, match="target"):
        ls.als_loss(z, y[:3], lam=1.0)
    with pytest.raises(ValueError, match=r"class index 3"):
        ls.als_loss(z, torch.tensor([0, 1, 3, 0]), lam=1.0)
    with pytest.raises(ValueError, match="reduction"):
        ls.als_loss(z, y, lam=1.0, reduction="avg")
    with pytest.raises(ValueError, match="logits"):
        ls.losses.non_max_std(torch.randn(3))


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
    (dict(beta=-0.1), ValueError, r"beta must be in \[0.0, 1.0\]"),
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


def test_distillation_loss_object_lookup_and_augmented_batches():
    x = torch.randn(20, 1, 4, 4)
    teacher = _Counting()
    loss = ls.losses.DistillationLoss(teacher, x, temperature=2.0, beta=1.0)
    assert teacher.seen == 20 and not any(p.requires_grad for p in teacher.parameters())
    s = torch.randn(5, 3)
    idx = torch.tensor([3, 1, 4, 15, 9])
    with torch.no_grad():
        want = ls.distillation_loss(s, teacher.net(x[idx]), None, 2.0, 1.0)
    got = loss(s, torch.zeros(5, dtype=torch.long), ls.train.Batch(x[idx], idx))
    assert teacher.seen == 20 and not loss.augmented           # looked up, not recomputed
    assert torch.allclose(got, want, atol=1e-6)
    # an augmented batch (inputs differ from train_x[index]): the teacher sees the augmented inputs
    xa = x[idx].flip(3)
    got = loss(s, torch.zeros(5, dtype=torch.long), ls.train.Batch(xa, idx))
    with torch.no_grad():
        want = ls.distillation_loss(s, teacher.net(xa), None, 2.0, 1.0)
    assert loss.augmented and teacher.seen == 25
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(TypeError, match="batch"):
        loss(s, torch.zeros(5, dtype=torch.long), None)
    with pytest.raises(TypeError, match="teacher must be a torch.nn.Module"):
        ls.losses.DistillationLoss("teacher", x, 2.0)
    with pytest.raises(ValueError, match="teacher_logits must have shape"):
        ls.losses.DistillationLoss(teacher, x, 2.0, teacher_logits=torch.zeros(3, 3))


@pytest.mark.parametrize("augment", [False, True])
def test_distillation_loss_in_fit_detects_augmentation(augment):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    teacher = ls.build_model("cnn", 3, 1, width=4, image_size=8).eval()
    student = ls.build_model("mlp", 3, 1, width=8, image_size=8)
    loss = ls.losses.DistillationLoss(teacher, x, temperature=4.0)
    h = ls.fit(student, x, y, loss, epochs=2, batch_size=16, lr=1e-2, device="cpu", augment=augment, progress=False)
    assert loss.augmented is augment
    assert all(math.isfinite(v) for v in h["train_loss"])


def test_epsilon_at_endpoints_and_shapes():
    for sched in ("linear", "cosine"):
        assert ls.losses.epsilon_at(0.0, 0.2, sched) == pytest.approx(0.2)
        assert ls.losses.epsilon_at(1.0, 0.2, sched) == pytest.approx(0.0)
        assert ls.losses.epsilon_at(1.0, 0.2, sched, final_epsilon=0.05) == pytest.approx(0.05)
        assert ls.losses.epsilon_at(0.5, 0.2, sched) == pytest.approx(0.1)  # both pass the midpoint at half-way
        values = [ls.losses.epsilon_at(t / 20, 0.2, sched) for t in range(21)]
        assert all(a >= b for a, b in zip(values, values[1:]))  # non-increasing
    # cosine stays above linear in the first half, below in the second
    assert ls.losses.epsilon_at(0.25, 0.2, "cosine") > ls.losses.epsilon_at(0.25, 0.2, "linear")
    assert ls.losses.epsilon_at(0.75, 0.2, "cosine") < ls.losses.epsilon_at(0.75, 0.2, "linear")
    assert ls.losses.epsilon_at(0.25, 0.2, "cosine") == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)))
    assert ls.losses.epsilon_at(0.7, 0.2, "constant") == 0.2
    # warm-up direction works too (final above start)
    assert ls.losses.epsilon_at(0.5, 0.0, "linear", final_epsilon=0.2) == pytest.approx(0.1)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(progress=1.5, epsilon=0.1), ValueError, "progress"),
    (dict(progress=0.5, epsilon=-0.1), ValueError, "epsilon"),
    (dict(progress=0.5, epsilon=0.1, schedule="step"), ValueError, "schedule must be one of"),
    (dict(progress=0.5, epsilon=0.1, schedule=1), TypeError, "schedule"),
    (dict(progress="0.5", epsilon=0.1), TypeError, "progress"),
    (dict(progress=0.5, epsilon=0.1, final_epsilon=2.0), ValueError, "final_epsilon"),
])
def test_epsilon_at_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ls.losses.epsilon_at(**kwargs)


def test_constant_schedule_is_label_smoothing():
    torch.manual_seed(0)
    logits, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    loss = ls.losses.ScheduledSmoothingLoss(0.15, "constant", n_train=32)
    loss.start_epoch(1, 3)
    assert torch.allclose(loss(logits, y), F.cross_entropy(logits, y, label_smoothing=0.15))
    assert torch.allclose(loss(logits, y), ls.smoothed_cross_entropy(logits, y, 0.15))


def test_schedule_advances_per_step_and_per_epoch():
    logits, y = torch.zeros(25, 4), torch.zeros(25, dtype=torch.long)
    step = ls.losses.ScheduledSmoothingLoss(0.1, "linear", n_train=100)
    epoch = ls.losses.ScheduledSmoothingLoss(0.1, "linear", n_train=100, granularity="epoch")
    for e in range(2):
        for fn in (step, epoch):
            fn.start_epoch(e, 2)
        for _ in range(4):  # 4 batches of 25 = one pass over 100 examples
            step(logits, y)
            epoch(logits, y)
    expected_step = [0.1 * (1 - k / 8) for k in range(8)]
    assert step.trace == pytest.approx(expected_step)
    assert epoch.trace == pytest.approx([0.1] * 4 + [0.05] * 4)
    # the loss value follows the ε actually used
    assert step.last_epsilon == pytest.approx(0.1 * (1 - 7 / 8))


def test_class_soft_targets_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(200, 4, generator=g).mul(2).softmax(1)
    y = torch.randint(0, 4, (200,), generator=g)
    y[probs.argmax(1) == 3] = 0  # nothing of class 3 is ever classified correctly
    S, counts = ls.losses.class_soft_targets(probs, y)
    for k in range(4):
        rows = [probs[i] for i in range(200) if y[i] == k and probs[i].argmax() == k]
        assert counts[k] == len(rows)
        if rows:
            assert torch.allclose(S[k], torch.stack(rows).mean(0), atol=1e-6)
        else:
            assert torch.allclose(S[k], torch.full((4,), 0.25))
    assert counts[3] == 0
    assert torch.allclose(S.sum(1), torch.ones(4), atol=1e-6)
    # the diagonal holds the largest entry of every learned row (the class was the argmax)
    learned = counts > 0
    assert (S[learned].argmax(1) == torch.arange(4)[learned]).all()


def test_class_soft_targets_errors():
    with pytest.raises(ValueError, match=r"shape \(N, K\)"):
        ls.losses.class_soft_targets(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="target must have shape"):
        ls.losses.class_soft_targets(torch.rand(3, 2).softmax(1), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class index"):
        ls.losses.class_soft_targets(torch.rand(2, 2).softmax(1), torch.tensor([0, 2]))
    with pytest.raises(TypeError, match="integer class indices"):
        ls.losses.class_soft_targets(torch.rand(2, 2).softmax(1), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="num_classes"):
        ls.losses.class_soft_targets(torch.rand(2, 2).softmax(1), torch.tensor([0, 1]), num_classes=3)


def test_online_ls_loss_formula_and_update():
    torch.manual_seed(1)
    logits, y = torch.randn(32, 5), torch.randint(0, 5, (32,))
    loss = ls.losses.OnlineLabelSmoothingLoss(alpha=0.3, init="ls", init_epsilon=0.2)
    loss.start_epoch(0, 3)
    value = loss(logits, y)
    # epoch 0 with init="ls": α·CE + (1-α)·H(smoothed one-hot, p) = CE with label smoothing 0.7·0.2
    assert torch.allclose(value, F.cross_entropy(logits, y, label_smoothing=0.7 * 0.2), atol=1e-6)
    second = torch.randn(32, 5)
    loss(second, y)
    loss.start_epoch(1, 3)
    expected, _ = ls.losses.class_soft_targets(torch.cat([logits, second]).softmax(1), torch.cat([y, y]))
    assert torch.allclose(loss.matrix, expected, atol=1e-6)
    assert len(loss.history) == 2 and torch.allclose(loss.history[1], expected)
    # epoch 1 uses the learned matrix
    manual = 0.3 * F.cross_entropy(logits, y) + 0.7 * -(expected[y] * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(loss(logits, y), manual, atol=1e-6)


def test_online_ls_inits_and_alpha_one():
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    zeros = ls.losses.OnlineLabelSmoothingLoss(alpha=0.5)  # the paper's code: S⁰ = 0
    zeros.start_epoch(0, 2)
    assert torch.allclose(zeros(logits, y), 0.5 * F.cross_entropy(logits, y))
    uniform = ls.losses.OnlineLabelSmoothingLoss(alpha=0.0, init="uniform")
    uniform.start_epoch(0, 2)
    assert torch.allclose(uniform(logits, y), -logits.log_softmax(1).mean(1).mean())
    hard = ls.losses.OnlineLabelSmoothingLoss(alpha=1.0)
    hard.start_epoch(0, 1)
    assert torch.allclose(hard(logits, y), F.cross_entropy(logits, y))


def test_distill_with_smoothed_hard_labels_is_distill_plus_smoothed_ce():
    from lsutils.train import Batch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 2, 2, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    tspec = ls.RunSpec.from_profile(ls.get_profile("smoke"), loss={"name": "ce"}, seed=0).to_dict()
    ctx = ls.losses.LossContext(train_x=x, train_y=y, device=torch.device("cpu"), load_model=lambda spec: teacher)
    s_logits = torch.randn(8, 3, generator=g)
    batch = Batch(x[:8], torch.arange(8))
    t_logits = teacher(x[:8]).detach()
    for eps, beta in [(0.0, 0.5), (0.1, 0.5), (0.2, 0.0), (0.3, 1.0)]:
        loss = ls.losses.build_loss({"name": "distill", "teacher": tspec, "temperature": 4.0, "beta": beta,
                                     "epsilon": eps}, ctx)
        assert loss.wants_batch
        expected = beta * ls.distillation_loss(s_logits, t_logits, None, 4.0, 1.0) \
            + (1 - beta) * F.cross_entropy(s_logits, y[:8], label_smoothing=eps)
        torch.testing.assert_close(loss(s_logits, y[:8], batch), expected)
        if eps == 0.0:   # identical to chapter 5's "distill" loss
            plain = ls.losses.build_loss({"name": "distill", "teacher": tspec, "temperature": 4.0, "beta": beta}, ctx)
            torch.testing.assert_close(loss(s_logits, y[:8], batch), plain(s_logits, y[:8], batch))
    assert ls.losses.build_loss({"name": "distill", "teacher": tspec, "temperature": 4.0, "beta": 0.5,
                                 "epsilon": 0.1}) is None            # context=None: validated only
    with pytest.raises(ValueError, match="needs a LossContext"):
        ls.losses.build_loss({"name": "distill", "teacher": tspec, "temperature": 4.0},
                             ls.losses.LossContext(device="cpu"))
    with pytest.raises(ValueError, match="epsilon"):
        ls.losses.build_loss({"name": "distill", "teacher": tspec, "temperature": 4.0, "beta": 0.5, "epsilon": 1.5}, ctx)


def test_distill_with_smoothing_trains_through_the_cached_trainer(tmp_data_root, fake_fashion_mnist_debian):
    """A student distilled with a label-smoothed hard-label term trains end to end (teacher from the cache, tiny fake data)."""
    base = dict(dataset="fashion_mnist", n_train=200, n_val=50, data_seed=0, model="mlp", width=8, epochs=2,
                batch_size=25, lr=3e-3, weight_decay=0.0, augment=False, seed=0)
    teacher = ls.RunSpec(loss={"name": "ce"}, **base)
    student = ls.RunSpec(loss={"name": "distill", "teacher": teacher.to_dict(), "temperature": 2.0,
                               "beta": 0.5, "epsilon": 0.1}, **base)
    run = ls.train_model(student, progress=False)
    assert not run.from_cache and len(run.history["train_loss"]) == 2
    assert math.isfinite(run.history["train_loss"][0])
    assert ls.train_model(student, progress=False).from_cache


def test_register_and_build_with_and_without_context():
    @ls.register_loss("_test_scaled_ce")
    def _factory(scale=1.0):
        return lambda logits, y: scale * torch.nn.functional.cross_entropy(logits, y)

    @ls.register_loss("_test_ctx")
    def _ctx_factory(context):
        return context

    assert "_test_scaled_ce" in ls.losses.available_losses()
    loss = ls.losses.build_loss({"name": "_test_scaled_ce", "scale": 2.0})
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert torch.allclose(loss(logits, y), 2 * torch.nn.functional.cross_entropy(logits, y))
    ctx = ls.losses.LossContext(device="cpu")
    assert ls.losses.build_loss({"name": "_test_ctx"}, ctx) is ctx
    assert ls.losses.build_loss({"name": "_test_ctx"}) is None      # context=None: the factory only validates


def test_errors():
    with pytest.raises(ValueError, match="unknown loss"):
        ls.losses.build_loss({"name": "no-such-loss"})
    with pytest.raises(ValueError, match="'name'"):
        ls.losses.build_loss({"epsilon": 0.1})
    with pytest.raises(TypeError):
        ls.losses.build_loss("ls")
    with pytest.raises(TypeError, match="bad hyper-parameters"):
        ls.register_loss("_test_kw")(lambda a=1: None)
        ls.losses.build_loss({"name": "_test_kw", "b": 2})
    def first():
        return None

    def second():
        return None

    ls.register_loss("_test_dup")(first)
    ls.register_loss("_test_dup")(first)            # the same function again (a re-run notebook cell): allowed
    with pytest.raises(ValueError, match="already registered"):
        ls.register_loss("_test_dup")(second)


def test_smoothing_spec():
    assert ls.smoothing_spec(0) == {"name": "ce"}
    assert ls.smoothing_spec(0.1) == {"name": "ls", "epsilon": 0.1}
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        ls.smoothing_spec(1.5)


def _teacher_spec_dict(seed: int = 0) -> dict:
    return ls.RunSpec.from_profile(ls.get_profile("smoke"), loss=ls.smoothing_spec(0.1), seed=seed).to_dict()


def test_registered_distill_loss_loads_its_teacher_and_its_logits_on_the_training_inputs():
    x = torch.randn(30, 1, 4, 4)
    teacher = _Counting()
    asked = []

    def load_model(spec):
        asked.append(spec)
        return teacher

    spec = _teacher_spec_dict(seed=123)
    ctx = ls.losses.LossContext(train_x=x, train_y=torch.zeros(30, dtype=torch.long), device=torch.device("cpu"),
                      load_model=load_model)
    loss = ls.losses.build_loss({"name": "distill", "teacher": spec, "temperature": 4, "beta": 1.0}, ctx)
    assert isinstance(loss, ls.losses.DistillationLoss) and loss.wants_batch
    assert asked == [spec] and teacher.seen == 30      # the teacher's spec dict, handed to load_model
    assert loss.temperature == 4.0 and loss.beta == 1.0


@pytest.mark.parametrize("spec, ctx, exc, match", [
    ({"temperature": 0}, True, ValueError, "temperature"),
    ({"beta": 2}, True, ValueError, "beta"),
    ({"teacher": "cnn"}, True, TypeError, "teacher must be the teacher's RunSpec"),
    ({"teacher": {"model": "cnn"}}, True, TypeError, "teacher must be the teacher's RunSpec"),
    ({}, "empty", ValueError, "needs a LossContext"),
    ({"tempreature": 2}, True, TypeError, "bad hyper-parameters"),
])
def test_registered_distill_loss_errors(spec, ctx, exc, match):
    full = {"name": "distill", "teacher": _teacher_spec_dict(), "temperature": 2.0, "beta": 1.0, **spec}
    context = (ls.losses.LossContext(train_x=torch.randn(4, 1, 4, 4), load_model=lambda s: _Counting()) if ctx is True
               else ls.losses.LossContext())
    with pytest.raises(exc, match=match):
        ls.losses.build_loss(full, context)


def test_train_model_distills_from_a_cached_teacher(tmp_data_root, fashion_mnist_root):
    """End to end on real Fashion-MNIST: the student's spec names its teacher, which is trained once and cached."""
    common = dict(dataset="fashion_mnist", n_train=256, n_val=64, data_seed=0, epochs=2, batch_size=32, lr=3e-3,
                  weight_decay=1e-2, augment=False)
    teacher = ls.RunSpec(model="cnn", width=4, loss={"name": "ce"}, seed=0, **common)
    student = ls.RunSpec(model="mlp", width=16, loss={"name": "distill", "teacher": teacher.to_dict(),
                                                   "temperature": 4.0, "beta": 1.0}, seed=0, **common)
    run = ls.train_model(student, progress=False)
    assert not run.from_cache and ls.train.cache_path(teacher).exists() and ls.train.cache_path(student).exists()
    assert math.isfinite(run.history["train_loss"][-1]) and 0.0 <= run.history["val_acc"][-1] <= 1.0
    again = ls.train_model(student, progress=False)
    assert again.from_cache
    for a, b in zip(run.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_trainer_loss_is_registered_and_matches_als_loss():
    assert "als" in ls.losses.available_losses()
    z, y = torch.randn(20, 10), torch.randint(0, 10, (20,))
    assert torch.allclose(ls.losses.build_loss({"name": "als", "lam": 3.0})(z, y), ls.als_loss(z, y, lam=3.0))
    with pytest.raises(TypeError, match="missing a required argument: 'lam'"):
        ls.losses.build_loss({"name": "als"})
    with pytest.raises(ValueError, match="lam"):
        ls.losses.build_loss({"name": "als", "lam": -1.0})
    with pytest.raises(TypeError, match="hyper-parameters"):
        ls.losses.build_loss({"name": "als", "lambda": 1.0})
