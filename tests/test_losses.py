"""Tests of lsutils.losses: the hand-written smoothed cross-entropy against PyTorch on hundreds of random cases
(values and gradients), the other conventions' losses, the logit gap, the "does the knob do anything" helper,
the trainer's registered losses, and every error message."""
from __future__ import annotations

import doctest
import math
import random

import pytest
import torch
import torch.nn.functional as F

import lsutils as ls
import lsutils.losses as losses_module


# tiny tensors: one intra-op thread (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_doctests():
    result = doctest.testmod(losses_module)
    assert result.attempted >= 5 and result.failed == 0


# --------------------------------------------------------------------------- random comparison with PyTorch
def _random_case(seed: int) -> dict:
    """One random configuration: shape (incl. token sequences), K, ε, weights, ignore_index, reduction, dtype, targets."""
    rnd = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float64 if rnd.random() < 0.3 else torch.float32
    k = rnd.choice([2, 3, 5, 10, 37])
    n = rnd.randint(1, 9)
    extra = rnd.choice([(), (), (rnd.randint(1, 6),), (rnd.randint(1, 3), rnd.randint(1, 3))])  # (N,K,d1[,d2])
    eps = rnd.choice([0.0, 1.0, 0.1, rnd.random()])
    weight = (torch.rand(k, generator=g, dtype=dtype) * 3 + 0.05) if rnd.random() < 0.4 else None
    reduction = rnd.choice(["mean", "sum", "none"])
    scale = rnd.choice([0.1, 1.0, 5.0, 30.0])
    logits = (scale * torch.randn((n, k) + extra, generator=g, dtype=dtype))
    soft = rnd.random() < 0.25
    if soft:
        target = torch.rand((n, k) + extra, generator=g, dtype=dtype)
        if rnd.random() < 0.5:
            target = target / target.sum(1, keepdim=True)        # proper distributions
        ignore_index = rnd.choice([-100, -1])                   # PyTorch accepts only negative ones here
    else:
        target = torch.randint(0, k, (n,) + extra, generator=g)
        ignore_index = rnd.choice([-100, -1, 0, k - 1])
        if ignore_index < 0 and rnd.random() < 0.6:               # pad some positions
            target[torch.rand(target.shape, generator=g) < 0.3] = ignore_index
        if rnd.random() < 0.05:                                   # every position ignored
            target.fill_(ignore_index)
    return dict(logits=logits, target=target, eps=eps, weight=weight, ignore_index=ignore_index, reduction=reduction)


def _both(case: dict, logits: torch.Tensor):
    kw = dict(weight=case["weight"], ignore_index=case["ignore_index"], reduction=case["reduction"])
    ours = ls.smoothed_cross_entropy(logits, case["target"], case["eps"], **kw)
    theirs = F.cross_entropy(logits, case["target"], label_smoothing=case["eps"], **kw)
    return ours, theirs


def _tol(dtype: torch.dtype) -> dict:
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(400))
def test_matches_pytorch_random(seed):
    case = _random_case(seed)
    tol = _tol(case["logits"].dtype)
    z1 = case["logits"].clone().requires_grad_(True)
    z2 = case["logits"].clone().requires_grad_(True)
    ours, theirs = _both(case, z1)[0], _both(case, z2)[1]
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs, equal_nan=True, **tol)
    if torch.isnan(theirs).any():            # all positions ignored with reduction="mean": 0/0, as in PyTorch
        return
    v = torch.randn(ours.shape, generator=torch.Generator().manual_seed(seed), dtype=ours.dtype)
    (g1,) = torch.autograd.grad((ours * v).sum(), z1)
    (g2,) = torch.autograd.grad((theirs * v).sum(), z2)
    torch.testing.assert_close(g1, g2, **tol)


def test_random_cases_cover_every_option():
    """The random cases above exercise every option (guards against a generator that drifts)."""
    cases = [_random_case(s) for s in range(400)]
    assert {c["reduction"] for c in cases} == {"mean", "sum", "none"}
    assert any(c["target"].is_floating_point() for c in cases)
    assert any(c["weight"] is not None and c["target"].is_floating_point() for c in cases)
    assert any(c["logits"].dim() == 3 for c in cases) and any(c["logits"].dim() == 4 for c in cases)
    assert any(c["logits"].dtype == torch.float64 for c in cases)
    assert any(c["eps"] == 0.0 for c in cases) and any(c["eps"] == 1.0 for c in cases)
    idx = [c for c in cases if not c["target"].is_floating_point()]
    assert any((c["target"] == c["ignore_index"]).any() and c["weight"] is not None for c in idx)
    assert any((c["target"] == c["ignore_index"]).all() and c["reduction"] == "mean" for c in idx)
    assert any(c["ignore_index"] >= 0 and (c["target"] == c["ignore_index"]).any() for c in idx)


def test_worked_example_1150():
    pred = torch.tensor([[0.1, 0.1, 0.8, 0.1, 0.1]])
    gt = F.one_hot(torch.tensor([2]), 5).float()
    builtin = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(pred, gt)
    manual = torch.nn.CrossEntropyLoss()(pred, gt * 0.9 + 0.1 / 5)
    ours_soft = ls.smoothed_cross_entropy(pred, gt, 0.1)
    ours_idx = ls.smoothed_cross_entropy(pred, torch.tensor([2]), 0.1)
    for value in (builtin, manual, ours_soft, ours_idx):
        assert str(value) == "tensor(1.1500)"
        assert float(value) == pytest.approx(1.1500489, abs=1e-6)


def test_all_ignored_edge_case():
    z = torch.randn(4, 5, 3, requires_grad=True)
    y = torch.full((4, 3), -100)
    assert torch.isnan(ls.smoothed_cross_entropy(z, y, 0.1))                    # mean: 0/0, as PyTorch
    total = ls.smoothed_cross_entropy(z, y, 0.1, reduction="sum")
    assert float(total.detach()) == 0.0
    total.backward()
    assert float(z.grad.abs().max()) == 0.0
    assert float(ls.smoothed_cross_entropy(z.detach(), y, 0.1, reduction="none").abs().max()) == 0.0


def test_ignored_positions_do_not_matter():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 4, 5, generator=g)
    y = torch.randint(0, 4, (6, 5), generator=g)
    y[:, 3:] = -100
    z2 = z.clone()
    z2[:, :, 3:] = 1e3 * torch.randn(6, 4, 2, generator=g)   # garbage at padded positions
    for red in ("mean", "sum"):
        torch.testing.assert_close(ls.smoothed_cross_entropy(z, y, 0.2, reduction=red),
                                   ls.smoothed_cross_entropy(z2, y, 0.2, reduction=red))


def test_extreme_logits_are_finite():
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]])
    y = torch.tensor([0, 0])
    ours = ls.smoothed_cross_entropy(z, y, 0.1)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, F.cross_entropy(z, y, label_smoothing=0.1))


def test_formula_terms():
    """The loss is (1-ε)·CE + ε·H(u, p); equivalently (1-ε)·CE + ε·KL(u‖p) + ε·log K; gradient p - q'."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20, 8, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 8, (20,), generator=g)
    eps = 0.3
    loss = ls.smoothed_cross_entropy(z, y, eps, reduction="none")
    logp = z.log_softmax(1)
    ce = F.nll_loss(logp, y, reduction="none")
    h_up = -logp.mean(1)
    kl_up = (torch.full_like(logp, 1 / 8) * (math.log(1 / 8) - logp)).sum(1)
    torch.testing.assert_close(loss, (1 - eps) * ce + eps * h_up)
    torch.testing.assert_close(loss, (1 - eps) * ce + eps * kl_up + eps * math.log(8))
    (grad,) = torch.autograd.grad(loss.sum(), z)
    torch.testing.assert_close(grad, z.softmax(1) - ls.smooth_targets(y, 8, eps, dtype=torch.float64))
    # the minimum over p is H(q'), reached at p = q'
    q = ls.smooth_targets(y, 8, eps, dtype=torch.float64)
    at_q = ls.smoothed_cross_entropy(q.log(), y, eps, reduction="none")
    torch.testing.assert_close(at_q, torch.full_like(at_q, ls.targets.smoothed_target_entropy(8, eps)))


# ----------------------------------------------------------------------------------------- other conventions
@pytest.mark.parametrize("seed", range(30))
def test_fairseq_loss_equals_pytorch_with_converted_epsilon(seed):
    rnd = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    k = rnd.choice([2, 3, 10, 50])
    eps_f = rnd.choice([0.0, 0.1, rnd.random() * (k - 1) / k])
    extra = rnd.choice([(), (4,)])
    z = torch.randn((6, k) + extra, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, k, (6,) + extra, generator=g)
    y[torch.rand(y.shape, generator=g) < 0.2] = 0
    eps_t = ls.convert_epsilon(eps_f, k, "fairseq", "torch")
    for red in ("sum", "mean", "none"):
        ours = ls.losses.fairseq_smoothed_nll_loss(z, y, eps_f, ignore_index=0, reduction=red)
        ref = F.cross_entropy(z, y, label_smoothing=eps_t, ignore_index=0, reduction=red)
        torch.testing.assert_close(ours, ref)
    # and against the explicit fairseq targets, no padding
    q = ls.targets.fairseq_targets(y, k, eps_f, dtype=torch.float64).movedim(-1, 1)
    torch.testing.assert_close(ls.losses.fairseq_smoothed_nll_loss(z, y, eps_f, reduction="sum"),
                               F.cross_entropy(z, q, reduction="sum"))


def _annotated_reference(x_logprob, target, size, padding_idx, smoothing):
    """The Annotated Transformer's LabelSmoothing.forward, re-typed from its description."""
    true_dist = torch.full_like(x_logprob, smoothing / (size - 2))
    true_dist.scatter_(1, target.unsqueeze(1), 1.0 - smoothing)
    true_dist[:, padding_idx] = 0
    mask = torch.nonzero(target == padding_idx)
    if mask.numel() > 0:
        true_dist.index_fill_(0, mask.squeeze(1), 0.0)
    return torch.nn.KLDivLoss(reduction="sum")(x_logprob, true_dist)


@pytest.mark.parametrize("seed", range(10))
def test_annotated_transformer_loss(seed):
    g = torch.Generator().manual_seed(seed)
    k, pad, eps = 7, seed % 7, 0.1 + 0.05 * seed
    z = torch.randn(12, k, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, k, (12,), generator=g)
    y[:3] = pad
    loss = ls.losses.annotated_transformer_loss(z, y, eps, padding_idx=pad)
    torch.testing.assert_close(loss, _annotated_reference(z.log_softmax(1), y, k, pad, eps))
    # KL = cross-entropy against the same targets minus their entropy (a constant): equal gradients
    q = ls.losses.annotated_transformer_targets(y, k, eps, pad, dtype=torch.float64)
    ce = F.cross_entropy(z, q, reduction="sum")
    entropy = -torch.special.xlogy(q, q).sum()
    torch.testing.assert_close(loss, ce - entropy)
    (g1,) = torch.autograd.grad(loss, z)
    (g2,) = torch.autograd.grad(ce, z)
    torch.testing.assert_close(g1, g2)
    rows = ls.losses.annotated_transformer_loss(z, y, eps, pad, reduction="none")
    assert rows.shape == (12,) and float(rows[:3].detach().abs().max()) == 0.0
    torch.testing.assert_close(ls.losses.annotated_transformer_loss(z, y, eps, pad, reduction="mean"), loss / (y != pad).sum())


def test_smoothed_bce_with_logits():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 4, generator=g)
    t = (torch.rand(8, 4, generator=g) < 0.3).long()
    ref = F.binary_cross_entropy_with_logits(z, t.float() * 0.9 + 0.05)
    torch.testing.assert_close(ls.losses.smoothed_bce_with_logits(z, t, 0.1), ref)
    # YOLOv5's way: fill with cn, put cp at the positives
    cp, cn = ls.targets.smooth_bce(0.1)
    yolo = torch.full_like(z, cn)
    yolo[t.bool()] = cp
    torch.testing.assert_close(ls.losses.smoothed_bce_with_logits(z, t, 0.1, reduction="none"),
                               F.binary_cross_entropy_with_logits(z, yolo, reduction="none"))
    torch.testing.assert_close(ls.losses.smoothed_bce_with_logits(z, t, 0.0), F.binary_cross_entropy_with_logits(z, t.float()))


# ------------------------------------------------------------------------------------------------ logit gap
def test_optimal_logit_gap_closed_form():
    assert ls.optimal_logit_gap(10, 0.1) == pytest.approx(math.log(91))
    assert round(ls.optimal_logit_gap(10, 0.1), 2) == 4.51
    assert ls.optimal_logit_gap(10, 1.0) == 0.0
    assert ls.optimal_logit_gap(10, 0.0) == math.inf
    # it is the log-ratio of the smoothed target's two values
    q = ls.smooth_targets(torch.tensor(0), 10, 0.1, dtype=torch.float64)
    assert ls.optimal_logit_gap(10, 0.1) == pytest.approx(float((q[0] / q[1]).log()))


@pytest.mark.parametrize("k,alpha", [(2, 0.1), (10, 0.1), (10, 0.01), (10, 0.5), (100, 0.2), (1000, 0.05), (5, 1.0)])
def test_numeric_logit_gap_matches_closed_form(k, alpha):
    assert ls.losses.numeric_logit_gap(k, alpha) == pytest.approx(ls.optimal_logit_gap(k, alpha), abs=1e-6)


def test_numeric_logit_gap_is_seed_independent():
    assert ls.losses.numeric_logit_gap(10, 0.1, seed=1) == pytest.approx(ls.losses.numeric_logit_gap(10, 0.1, seed=2), abs=1e-6)


# ------------------------------------------------------------------------------ does the knob do anything?
def test_smoothing_changes_loss_accepts_working_losses():
    for make in (lambda eps: torch.nn.CrossEntropyLoss(label_smoothing=eps),
                 lambda eps: (lambda z, y: ls.smoothed_cross_entropy(z, y, eps)),
                 lambda eps: ls.losses.build_loss(ls.smoothing_spec(eps))):
        r = ls.losses.assert_smoothing_has_effect(make)
        assert r["changed"] and r["loss_changed"] and r["grad_change"] > 1e-3


def test_smoothing_changes_loss_catches_a_dead_knob():
    dead = lambda eps: torch.nn.CrossEntropyLoss()          # noqa: E731  (argument accepted, never used)
    r = ls.losses.smoothing_changes_loss(dead)
    assert not r["changed"] and r["loss_change"] == 0.0 and r["grad_change"] == 0.0
    with pytest.raises(AssertionError, match="label smoothing has no effect"):
        ls.losses.assert_smoothing_has_effect(dead)


def test_smoothing_changes_loss_catches_a_constant_shift():
    """A loss whose ε only adds a constant changes the value but not the gradient: still caught."""
    shifted = lambda eps: (lambda z, y: F.cross_entropy(z, y) + eps)   # noqa: E731
    r = ls.losses.smoothing_changes_loss(shifted)
    assert r["loss_changed"] and not r["grad_changed"]
    with pytest.raises(AssertionError, match="no effect"):
        ls.losses.assert_smoothing_has_effect(shifted)


def test_smoothing_changes_loss_with_given_inputs():
    z = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    r = ls.losses.smoothing_changes_loss(lambda eps: (lambda a, b: F.cross_entropy(a, b, label_smoothing=eps)), 0.2,
                                  logits=z, target=y)
    assert r["loss_0"] == pytest.approx(float(F.cross_entropy(z, y)))
    assert r["loss_eps"] == pytest.approx(float(F.cross_entropy(z, y, label_smoothing=0.2)))


def test_smoothing_changes_loss_errors():
    with pytest.raises(TypeError, match="make_loss must be callable"):
        ls.losses.smoothing_changes_loss(0.1)
    with pytest.raises(ValueError, match=r"epsilon must be in \(0.0, 1.0\], got 0.0"):
        ls.losses.smoothing_changes_loss(lambda eps: F.cross_entropy, 0.0)
    with pytest.raises(ValueError, match="pass both logits and target"):
        ls.losses.smoothing_changes_loss(lambda eps: F.cross_entropy, logits=torch.randn(2, 3))
    with pytest.raises(TypeError, match="must return a scalar tensor"):
        ls.losses.smoothing_changes_loss(lambda eps: (lambda z, y: F.cross_entropy(z, y, reduction="none")))


# --------------------------------------------------------------------------------- the trainer's losses
def test_registered_losses():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 10, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    assert {"ce", "ls"} <= set(ls.losses.available_losses())
    torch.testing.assert_close(ls.losses.build_loss({"name": "ce"})(z, y), ls.smoothed_cross_entropy(z, y, 0.0))
    torch.testing.assert_close(ls.losses.build_loss({"name": "ls", "epsilon": 0.1})(z, y), ls.smoothed_cross_entropy(z, y, 0.1))
    with pytest.raises(ValueError, match="epsilon must be in"):
        ls.losses.build_loss({"name": "ls", "epsilon": 1.5})


# ------------------------------------------------------------------------------------------------- errors
Z = torch.zeros(3, 4)
Y = torch.tensor([0, 1, 3])


@pytest.mark.parametrize("kwargs,exc,pattern", [
    (dict(epsilon=1.5), ValueError, r"epsilon must be in \[0.0, 1.0\], got 1.5"),
    (dict(epsilon=-0.1), ValueError, r"epsilon must be in \[0.0, 1.0\], got -0.1"),
    (dict(epsilon=float("nan")), ValueError, "epsilon must be in"),
    (dict(epsilon="0.1"), TypeError, "epsilon must be a real number, got str"),
    (dict(epsilon=None), TypeError, "epsilon must be a real number, got NoneType"),
    (dict(target=torch.tensor([0, 1, 4])), ValueError, r"target holds class index 4, but indices must be in \[0, 3\]"),
    (dict(target=torch.tensor([0, -1, 2])), ValueError, r"target holds class index -1.*or ignore_index=-100"),
    (dict(target=torch.tensor([0.0, 1.0, 2.0])), TypeError, "target is a float tensor of shape \\(3,\\).*torch.long"),
    (dict(target=torch.tensor([True, False, True])), TypeError, "target must hold integer class indices.*bool"),
    (dict(target=torch.tensor([0, 1])), ValueError, r"target of class indices must have shape \(3,\).*got \(2,\)"),
    (dict(target=torch.zeros(3, 5)), ValueError, r"probabilities must have the shape of logits \(3, 4\), got \(3, 5\)"),
    (dict(target=[0, 1, 2]), TypeError, "target must be a torch.Tensor, got list"),
    (dict(logits=torch.zeros(3, 4, dtype=torch.long)), TypeError, "logits must be a floating-point tensor"),
    (dict(logits=torch.zeros(4)), ValueError, "logits must have at least 2 dimension"),
    (dict(logits=torch.zeros(3, 1), target=torch.zeros(3, dtype=torch.long)), ValueError,
     r"logits.shape\[1\] \(the number of classes\) must be >= 2"),
    (dict(logits=Z.numpy()), TypeError, "logits must be a torch.Tensor, got ndarray"),
    (dict(logits=torch.zeros(0, 4), target=torch.zeros(0, dtype=torch.long)), ValueError, "logits is empty"),
    (dict(weight=torch.ones(3)), ValueError, r"weight must have shape \(4,\) \(one weight per class\), got \(3,\)"),
    (dict(weight=torch.ones(1, 4)), ValueError, r"weight must have shape \(4,\)"),
    (dict(weight=torch.ones(4, dtype=torch.long)), TypeError, "weight must be a floating-point tensor"),
    (dict(weight=torch.tensor([1.0, float("inf"), 1.0, 1.0])), ValueError, "weight contains NaN or infinite"),
    (dict(reduction="avg"), ValueError, r"reduction must be one of \['mean', 'sum', 'none'\], got 'avg'"),
    (dict(ignore_index=1.5), TypeError, "ignore_index must be an int, got float"),
    (dict(target=torch.rand(3, 4), ignore_index=0), ValueError, "ignore_index=0 cannot be combined with probability"),
    (dict(target=-torch.rand(3, 4)), ValueError, "probability targets must be >= 0"),
    (dict(target=torch.full((3, 4), float("nan"))), ValueError, "target contains NaN"),
])
def test_smoothed_cross_entropy_errors(kwargs, exc, pattern):
    args = dict(logits=Z, target=Y, epsilon=0.1)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        ls.smoothed_cross_entropy(**args)


def test_sequence_shape_errors():
    z = torch.zeros(2, 5, 7)
    with pytest.raises(ValueError, match=r"must have shape \(2, 7\) for logits of shape \(2, 5, 7\) \(classes on dim 1\)"):
        ls.smoothed_cross_entropy(z, torch.zeros(2, 5, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match=r"must have shape \(2, 7\)"):
        ls.smoothed_cross_entropy(z, torch.zeros(2, dtype=torch.long), 0.1)


def test_other_loss_errors():
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        ls.losses.fairseq_smoothed_nll_loss(Z, torch.rand(3, 4), 0.1)
    with pytest.raises(ValueError, match="class index 4"):
        ls.losses.fairseq_smoothed_nll_loss(Z, torch.tensor([0, 1, 4]), 0.1)
    with pytest.raises(ValueError, match="epsilon must be in"):
        ls.losses.fairseq_smoothed_nll_loss(Z, Y, 2.0)
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        ls.losses.fairseq_smoothed_nll_loss(Z, Y, 0.1, ignore_index="pad")
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        ls.losses.annotated_transformer_loss(torch.zeros(2, 4, 3), torch.zeros(2, 3, dtype=torch.long), 0.1, 0)
    with pytest.raises(ValueError, match=r"target must have shape \(3,\)"):
        ls.losses.annotated_transformer_loss(Z, torch.tensor([1, 2]), 0.1, 0)
    with pytest.raises(ValueError, match="padding_idx must be in"):
        ls.losses.annotated_transformer_loss(Z, Y, 0.1, padding_idx=9)
    with pytest.raises(ValueError, match="reduction must be one of"):
        ls.losses.annotated_transformer_loss(Z, Y, 0.1, 0, reduction="batchmean")
    with pytest.raises(ValueError, match=r"target must have the shape of logits \(3, 4\)"):
        ls.losses.smoothed_bce_with_logits(Z, torch.ones(3), 0.1)
    with pytest.raises(ValueError, match="target must hold only 0 and 1"):
        ls.losses.smoothed_bce_with_logits(Z, torch.full((3, 4), 2), 0.1)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        ls.losses.numeric_logit_gap(10, 0.0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        ls.losses.numeric_logit_gap(10, 0.1, steps=0)
    with pytest.raises(ValueError, match="alpha must be in"):
        ls.optimal_logit_gap(10, 1.5)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        ls.optimal_logit_gap(1, 0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: checks the error replaces a device-side assert")
def test_out_of_range_index_on_cuda_is_a_clear_error():
    z = torch.zeros(3, 4, device="cuda")
    with pytest.raises(ValueError, match="class index 7"):
        ls.smoothed_cross_entropy(z, torch.tensor([0, 1, 7], device="cuda"), 0.1)
    y = torch.tensor([0, 1, 3], device="cuda")
    torch.testing.assert_close(ls.smoothed_cross_entropy(z, y, 0.1), F.cross_entropy(z, y, label_smoothing=0.1))
