"""Tests of lsutils.targets: smoothed targets in every convention, the ε conversion, and their errors."""
from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

import lsutils as ls
import lsutils.targets as targets_module


# tiny tensors: one intra-op thread (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_doctests():
    result = doctest.testmod(targets_module)
    assert result.attempted >= 8 and result.failed == 0


# ------------------------------------------------------------------------------------------- PyTorch convention
@pytest.mark.parametrize("k", [2, 3, 5, 10, 100])
@pytest.mark.parametrize("eps", [0.0, 0.05, 0.1, 0.5, 1.0])
def test_smooth_targets_formula(k, eps):
    y = torch.arange(k).repeat(3)
    q = ls.smooth_targets(y, k, eps)
    assert q.shape == (3 * k, k) and q.dtype == torch.float32
    torch.testing.assert_close(q.sum(1), torch.ones(3 * k))
    torch.testing.assert_close(q[torch.arange(3 * k), y], torch.full((3 * k,), 1 - eps + eps / k))
    off = q.masked_select(~F.one_hot(y, k).bool())
    torch.testing.assert_close(off, torch.full_like(off, eps / k))


def test_smooth_targets_worked_examples():
    # PyTorch tutorial: one-hot(2) of 5 classes, ε = 0.1
    q = ls.smooth_targets(torch.tensor(2), 5, 0.1)
    assert q.shape == (5,)
    assert str(q) == "tensor([0.0200, 0.0200, 0.9200, 0.0200, 0.0200])"
    # the 6-class example of the overview, α = 0.1
    q6 = ls.smooth_targets(torch.tensor(0), 6, 0.1, dtype=torch.float64)
    assert round(float(q6[0]), 4) == 0.9167 and round(float(q6[1]), 4) == 0.0167


def test_smooth_targets_is_what_pytorch_uses():
    """F.cross_entropy(label_smoothing=ε) equals plain CE against smooth_targets."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (50,), generator=g)
    for eps in (0.0, 0.1, 0.3, 1.0):
        q = ls.smooth_targets(y, 7, eps, dtype=torch.float64)
        torch.testing.assert_close(F.cross_entropy(z, q), F.cross_entropy(z, y, label_smoothing=eps))


def test_smooth_targets_shapes_dtype_device():
    y = torch.tensor([[0, 1, 2], [2, 1, 0]])
    q = ls.smooth_targets(y, 4, 0.2, dtype=torch.float64)
    assert q.shape == (2, 3, 4) and q.dtype == torch.float64 and q.device == y.device
    assert ls.smooth_targets(y.to(torch.int32), 4, 0.2).shape == (2, 3, 4)


def test_smooth_probabilities():
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    out = ls.targets.smooth_probabilities(p, 0.2)
    torch.testing.assert_close(out, torch.tensor([[0.45, 0.45, 0.05, 0.05], [0.05] * 4]))
    # class dim 1 of (N, K, T) sequences
    g = torch.Generator().manual_seed(1)
    pt = torch.rand(2, 5, 3, generator=g).softmax(1)
    torch.testing.assert_close(ls.targets.smooth_probabilities(pt, 0.1, dim=1), pt * 0.9 + 0.02)
    # one-hot probabilities give smooth_targets
    y = torch.tensor([3, 0])
    torch.testing.assert_close(ls.targets.smooth_probabilities(F.one_hot(y, 4).float(), 0.3), ls.smooth_targets(y, 4, 0.3))


# ------------------------------------------------------------------------------------------- other conventions
def test_fairseq_targets():
    q = ls.targets.fairseq_targets(torch.tensor([0, 3]), 5, 0.1)
    torch.testing.assert_close(q[0], torch.tensor([0.9, 0.025, 0.025, 0.025, 0.025]))
    torch.testing.assert_close(q.sum(1), torch.ones(2))
    # 1.0 -> 0.9: the Ultralytics glossary's example is the fairseq convention (true class 1 - ε)
    assert math.isclose(float(ls.targets.fairseq_targets(torch.tensor(4), 10, 0.1)[4]), 0.9, rel_tol=1e-6)


@pytest.mark.parametrize("k", [2, 3, 10, 1000])
@pytest.mark.parametrize("eps_f", [0.0, 0.1, 0.25, 0.5])
def test_fairseq_equals_torch_with_converted_epsilon(k, eps_f):
    if eps_f > (k - 1) / k:
        pytest.skip("not expressible in the PyTorch convention (tested separately)")
    y = torch.arange(k) if k <= 10 else torch.tensor([0, 7, k - 1])
    eps_t = ls.convert_epsilon(eps_f, k, "fairseq", "torch")
    assert math.isclose(eps_t, eps_f * k / (k - 1), rel_tol=1e-12)
    torch.testing.assert_close(ls.targets.fairseq_targets(y, k, eps_f, dtype=torch.float64),
                               ls.smooth_targets(y, k, eps_t, dtype=torch.float64))
    assert math.isclose(ls.convert_epsilon(eps_t, k, "torch", "fairseq"), eps_f, abs_tol=1e-12)


def test_convert_epsilon_aliases_and_identity():
    for alias in ("pytorch", "timm", "keras", "huggingface", "hf", "fastai", "Torch"):
        assert ls.convert_epsilon(0.1, 10, alias, "torch") == pytest.approx(0.1)
    assert ls.convert_epsilon(0.1, 10, "fairseq", "fairseq") == pytest.approx(0.1)
    assert ls.convert_epsilon(0.1, 10, "torch", "fairseq") == pytest.approx(0.09)
    # fairseq ε = (K-1)/K is the uniform target, i.e. PyTorch ε = 1
    assert ls.convert_epsilon(0.9, 10, "fairseq", "torch") == pytest.approx(1.0)


def test_annotated_transformer_targets():
    y = torch.tensor([2, 0, 4, 1])
    q = ls.losses.annotated_transformer_targets(y, 5, 0.3, padding_idx=0)
    expected = torch.tensor([[0, 0.1, 0.7, 0.1, 0.1], [0, 0, 0, 0, 0], [0, 0.1, 0.1, 0.1, 0.7], [0, 0.7, 0.1, 0.1, 0.1]])
    torch.testing.assert_close(q, expected)
    # over the K-1 real classes it is fairseq's convention
    real = torch.tensor([1, 2, 3, 4])
    keep = y != 0
    torch.testing.assert_close(q[keep][:, real], ls.targets.fairseq_targets(y[keep] - 1, 4, 0.3))
    # and PyTorch's with ε·(K-1)/(K-2) over those classes
    eps_t = ls.convert_epsilon(0.3, 4, "fairseq", "torch")
    torch.testing.assert_close(q[keep][:, real], ls.smooth_targets(y[keep] - 1, 4, eps_t))


def test_annotated_transformer_targets_padding_elsewhere():
    q = ls.losses.annotated_transformer_targets(torch.tensor([3, 1]), 4, 0.2, padding_idx=3)
    torch.testing.assert_close(q, torch.tensor([[0.0, 0, 0, 0], [0.1, 0.8, 0.1, 0]]))


def test_smooth_bce_and_binary_targets():
    assert ls.targets.smooth_bce(0.1) == pytest.approx((0.95, 0.05))
    assert ls.targets.smooth_bce(0.0) == (1.0, 0.0)
    assert ls.targets.smooth_bce() == pytest.approx((0.95, 0.05))  # YOLOv5's default argument
    t = torch.tensor([[1, 0, 0], [0, 1, 1]])
    out = ls.losses.smooth_binary_targets(t, 0.2)
    torch.testing.assert_close(out, torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.9]]))
    assert ls.losses.smooth_binary_targets(t.bool(), 0.2).dtype == torch.float32
    assert ls.losses.smooth_binary_targets(t.double(), 0.2).dtype == torch.float64
    # binary smoothing is the PyTorch convention with K = 2 for each output
    torch.testing.assert_close(ls.smooth_targets(torch.tensor([1, 0]), 2, 0.2)[:, 1], torch.tensor([0.9, 0.1]))


def test_smoothed_target_entropy():
    for k, eps in [(2, 0.1), (10, 0.1), (100, 0.3), (5, 1.0)]:
        q = ls.smooth_targets(torch.tensor(0), k, eps, dtype=torch.float64)
        assert ls.targets.smoothed_target_entropy(k, eps) == pytest.approx(float(-(q * q.log()).sum()), rel=1e-12)
    assert ls.targets.smoothed_target_entropy(10, 0.0) == 0.0
    assert ls.targets.smoothed_target_entropy(7, 1.0) == pytest.approx(math.log(7))


# ----------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("fn", [ls.smooth_targets, ls.targets.fairseq_targets])
def test_index_target_errors(fn):
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"epsilon must be in \[0.0, 1.0\], got 1.5"):
        fn(y, 3, 1.5)
    with pytest.raises(ValueError, match="epsilon must be in"):
        fn(y, 3, -0.1)
    with pytest.raises(ValueError, match="epsilon must be in"):
        fn(y, 3, float("nan"))
    with pytest.raises(TypeError, match="epsilon must be a real number, got str"):
        fn(y, 3, "0.1")
    with pytest.raises(ValueError, match="num_classes must be >= 2.*got 1"):
        fn(torch.tensor([0]), 1, 0.1)
    with pytest.raises(TypeError, match="num_classes must be an int, got float"):
        fn(y, 3.0, 0.1)
    with pytest.raises(ValueError, match=r"target holds class index 3, but indices must be in \[0, 2\]"):
        fn(torch.tensor([0, 3]), 3, 0.1)
    with pytest.raises(ValueError, match=r"target holds class index -1"):
        fn(torch.tensor([-1, 0]), 3, 0.1)
    with pytest.raises(TypeError, match="target must hold integer class indices.*float32"):
        fn(torch.tensor([0.0, 1.0]), 3, 0.1)
    with pytest.raises(TypeError, match="target must be a torch.Tensor, got list"):
        fn([0, 1], 3, 0.1)
    with pytest.raises(ValueError, match="target is empty"):
        fn(torch.tensor([], dtype=torch.long), 3, 0.1)
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        fn(y, 3, 0.1, dtype=torch.int64)


def test_smooth_probabilities_errors():
    p = torch.tensor([[0.5, 0.5]])
    with pytest.raises(TypeError, match="probs must be a floating-point tensor"):
        ls.targets.smooth_probabilities(torch.tensor([[1, 0]]), 0.1)
    with pytest.raises(ValueError, match="probs must be >= 0"):
        ls.targets.smooth_probabilities(torch.tensor([[1.5, -0.5]]), 0.1)
    with pytest.raises(ValueError, match="epsilon must be in"):
        ls.targets.smooth_probabilities(p, 2.0)
    with pytest.raises(ValueError, match="must be >= 2"):
        ls.targets.smooth_probabilities(torch.tensor([[1.0]]), 0.1)
    with pytest.raises(ValueError, match=r"dim must be in \[-2, 1\]"):
        ls.targets.smooth_probabilities(p, 0.1, dim=2)
    with pytest.raises(ValueError, match="probs contains NaN"):
        ls.targets.smooth_probabilities(torch.tensor([[float("nan"), 1.0]]), 0.1)


def test_annotated_transformer_targets_errors():
    y = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="num_classes must be >= 3"):
        ls.losses.annotated_transformer_targets(torch.tensor([1]), 2, 0.1, padding_idx=0)
    with pytest.raises(ValueError, match=r"padding_idx must be in \[0, 3\], got 4"):
        ls.losses.annotated_transformer_targets(y, 4, 0.1, padding_idx=4)
    with pytest.raises(TypeError, match="padding_idx must be an int"):
        ls.losses.annotated_transformer_targets(y, 4, 0.1, padding_idx=None)
    with pytest.raises(ValueError, match="class index 4"):
        ls.losses.annotated_transformer_targets(torch.tensor([4]), 4, 0.1, padding_idx=0)
    with pytest.raises(ValueError, match="epsilon must be in"):
        ls.losses.annotated_transformer_targets(y, 4, 1.2, padding_idx=0)


def test_binary_errors():
    with pytest.raises(ValueError, match="epsilon must be in"):
        ls.targets.smooth_bce(1.1)
    with pytest.raises(ValueError, match="target must hold only 0 and 1.*got 2"):
        ls.losses.smooth_binary_targets(torch.tensor([0, 2]), 0.1)
    with pytest.raises(ValueError, match="target must hold only 0 and 1.*0.5"):
        ls.losses.smooth_binary_targets(torch.tensor([0.5, 1.0]), 0.1)


def test_convert_epsilon_errors():
    with pytest.raises(ValueError, match="from_convention must be one of.*'annotated'"):
        ls.convert_epsilon(0.1, 10, "annotated", "torch")
    with pytest.raises(ValueError, match="to_convention must be one of"):
        ls.convert_epsilon(0.1, 10, "torch", "keras2")
    with pytest.raises(ValueError, match=r"needs epsilon=1.11.* > 1 in the 'torch' convention"):
        ls.convert_epsilon(1.0, 10, "fairseq", "torch")
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        ls.convert_epsilon(0.1, 1)
    with pytest.raises(ValueError, match="epsilon must be in"):
        ls.convert_epsilon(-0.1, 10)
