"""Tests of lsutils.geometry: the template plane of Müller et al. (2019), projections, cluster tightness and
equidistance, logit gaps."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402


def _templates(d: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, d, generator=g, dtype=torch.float64)
    return w[0], w[1], w[2]


def _clusters(centres: torch.Tensor, radius: float, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points on a circle of ``radius`` around each centre: within-class distance exactly ``radius``."""
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    ring = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    pts = torch.cat([c + ring for c in centres])
    labels = torch.arange(len(centres)).repeat_interleave(n)
    return pts, labels


@pytest.mark.parametrize("d,seed", [(2, 0), (3, 1), (128, 2)])
def test_basis_is_orthonormal_and_spans_the_templates_plane(d, seed):
    a, b, c = _templates(d, seed)
    B = ls.geometry.template_plane_basis(a, b, c)
    assert B.shape == (d, 2) and B.dtype == torch.float64
    torch.testing.assert_close(B.T @ B, torch.eye(2, dtype=torch.float64))
    # every template difference lies in the span: projecting onto the basis and back reconstructs it
    for v in (b - a, c - a, c - b):
        torch.testing.assert_close(B @ (B.T @ v), v)
    # u1 points from w_a to w_b (Gram–Schmidt order of the paper)
    torch.testing.assert_close(B[:, 0], (b - a) / (b - a).norm())
    assert float(B[:, 1] @ (c - a)) > 0


def test_projection_of_the_templates_gives_their_coordinates():
    a, b, c = _templates(10, 3)
    B = ls.geometry.template_plane_basis(a, b, c)
    coords = ls.geometry.project_to_plane(torch.stack([a, b, c]), B, origin=a)
    # w_a at the origin, w_b on the first axis at its distance, w_c at (projection on u1, height)
    ab, ac = (b - a).norm(), (c - a).norm()
    along = (c - a) @ (b - a) / ab
    height = torch.sqrt(ac ** 2 - along ** 2)
    expected = torch.tensor([[0.0, 0.0], [float(ab), 0.0], [float(along), float(height)]], dtype=torch.float64)
    torch.testing.assert_close(coords, expected)
    # distances between templates are preserved exactly (they lie in the plane)
    torch.testing.assert_close(torch.pdist(coords), torch.pdist(torch.stack([a, b, c])))


def test_projection_drops_the_perpendicular_part_and_shifts_by_origin():
    a, b, c = _templates(6, 4)
    B = ls.geometry.template_plane_basis(a, b, c)
    g = torch.Generator().manual_seed(0)
    coeff = torch.randn(5, 2, generator=g, dtype=torch.float64)
    inplane = a + coeff @ B.T
    perp = torch.randn(6, generator=g, dtype=torch.float64)
    perp = perp - B @ (B.T @ perp)
    torch.testing.assert_close(ls.geometry.project_to_plane(inplane + 3.0 * perp, B, origin=a), coeff)
    # without an origin the coordinates are those of the vector itself
    torch.testing.assert_close(ls.geometry.project_to_plane(inplane, B), coeff + (a @ B))


def test_projection_keeps_the_three_logit_differences():
    """z_b - z_a and z_c - z_a of a linear layer depend on x only through its plane coordinates."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 5).double()
    W, bias = layer.weight.detach(), layer.bias.detach()
    x = torch.randn(50, 16, dtype=torch.float64)
    B = ls.geometry.template_plane_basis(W[0], W[2], W[4])
    xp = W[0] + ls.geometry.project_to_plane(x, B, origin=W[0]) @ B.T     # x moved onto the plane
    z, zp = x @ W.T + bias, xp @ W.T + bias
    for k in (2, 4):
        torch.testing.assert_close(z[:, k] - z[:, 0], zp[:, k] - zp[:, 0])


def test_template_subspace_basis_spans_all_templates():
    W = torch.randn(6, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    Q = ls.geometry.template_subspace_basis(W)
    assert Q.shape == (20, 5)
    torch.testing.assert_close(Q.T @ Q, torch.eye(5, dtype=torch.float64))
    diffs = (W[1:] - W[0]).T
    torch.testing.assert_close(Q @ (Q.T @ diffs), diffs)
    # rank-deficient templates: three collinear points span one direction
    line = torch.tensor([[0.0, 0, 0], [1, 1, 0], [2, 2, 0]])
    assert ls.geometry.template_subspace_basis(line).shape == (3, 1)


def test_basis_and_projection_reject_bad_inputs():
    a, b, c = _templates(5)
    with pytest.raises(ValueError, match="collinear"):
        ls.geometry.template_plane_basis(a, b, a + 2.0 * (b - a))
    with pytest.raises(ValueError, match="coincide"):
        ls.geometry.template_plane_basis(a, a.clone(), c)
    with pytest.raises(ValueError, match="same shape"):
        ls.geometry.template_plane_basis(a, b, c[:4])
    with pytest.raises(TypeError, match="w_b"):
        ls.geometry.template_plane_basis(a, [1.0] * 5, c)
    with pytest.raises(TypeError, match="floating"):
        ls.geometry.template_plane_basis(a, b, torch.arange(5))
    with pytest.raises(ValueError, match="D >= 2"):
        ls.geometry.template_plane_basis(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([3.0]))
    with pytest.raises(ValueError, match="NaN"):
        ls.geometry.template_plane_basis(a, b, torch.full((5,), float("nan"), dtype=torch.float64))
    B = ls.geometry.template_plane_basis(a, b, c)
    with pytest.raises(ValueError, match="orthonormal"):
        ls.geometry.project_to_plane(torch.zeros(2, 5, dtype=torch.float64), 2.0 * B)
    with pytest.raises(ValueError, match="rows"):
        ls.geometry.project_to_plane(torch.zeros(2, 4, dtype=torch.float64), B)
    with pytest.raises(ValueError, match=r"\(D, 2\)"):
        ls.geometry.project_to_plane(torch.zeros(2, 5), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="origin"):
        ls.geometry.project_to_plane(torch.zeros(2, 5, dtype=torch.float64), B, origin=torch.zeros(4))


def test_tightness_and_equidistance_on_an_equilateral_triangle():
    side, radius = 4.0, 0.5
    centres = torch.tensor([[0.0, 0.0], [side, 0.0], [side / 2, side * math.sqrt(3) / 2]], dtype=torch.float64)
    pts, labels = _clusters(centres, radius)
    assert ls.geometry.cluster_tightness(pts, labels) == pytest.approx(radius / side)
    assert ls.geometry.equidistance(pts, labels) == pytest.approx(0.0, abs=1e-12)
    # scale-free
    assert ls.geometry.cluster_tightness(10 * pts, labels) == pytest.approx(radius / side)


def test_tightness_and_equidistance_on_a_3_4_5_triangle_and_class_subsets():
    centres = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    pts, labels = _clusters(centres, 1.0)
    assert ls.geometry.cluster_tightness(pts, labels) == pytest.approx(1.0 / 4.0)          # mean distance (3+4+5)/3
    assert ls.geometry.equidistance(pts, labels) == pytest.approx(math.sqrt(2 / 3) / 4)    # std 0.816 / mean 4
    assert ls.geometry.cluster_tightness(pts, labels, classes=[0, 2]) == pytest.approx(1.0 / 4.0)
    assert ls.geometry.equidistance(pts, labels, classes=[0, 1]) == pytest.approx(0.0)
    # per-class average: a class with many more points does not dominate
    big = torch.cat([pts, pts[:8].repeat(5, 1)])
    assert ls.geometry.cluster_tightness(big, torch.cat([labels, labels[:8].repeat(5)])) == pytest.approx(0.25)


def test_cluster_measures_in_high_dimension():
    g = torch.Generator().manual_seed(0)
    centres = 10 * torch.eye(4, 32, dtype=torch.float64)      # 4 mutually equidistant centres, distance 10·√2
    labels = torch.arange(4).repeat_interleave(200)
    noise = torch.randn(800, 32, generator=g, dtype=torch.float64) * 0.1
    pts = centres[labels] + noise
    assert ls.geometry.equidistance(pts, labels) < 0.01
    expected = 0.1 * math.sqrt(32) / (10 * math.sqrt(2))     # E‖noise‖ ≈ σ√D
    assert ls.geometry.cluster_tightness(pts, labels) == pytest.approx(expected, rel=0.03)


def test_cluster_measures_reject_bad_inputs():
    pts, labels = _clusters(torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="two classes"):
        ls.geometry.cluster_tightness(pts[:8], labels[:8])
    with pytest.raises(ValueError, match="labels must have shape"):
        ls.geometry.equidistance(pts, labels[:-1])
    with pytest.raises(TypeError, match="labels"):
        ls.geometry.cluster_tightness(pts, labels.double())
    with pytest.raises(ValueError, match="class 5"):
        ls.geometry.cluster_tightness(pts, labels, classes=[0, 5])
    with pytest.raises(ValueError, match="coincide"):
        ls.geometry.cluster_tightness(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="points must have shape"):
        ls.geometry.equidistance(torch.zeros(4), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="distinct"):
        ls.geometry.equidistance(pts, labels, classes=[0, 0])


def test_logit_gaps_max_and_each():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 5.0, 1.0]])
    y = torch.tensor([0, 1])
    assert ls.geometry.logit_gaps(z, y).tolist() == [2.0, -3.0]
    assert ls.geometry.logit_gaps(z, y, "each").tolist() == [[2.0, 3.0, 4.0], [2.0, -3.0, 1.0]]


def test_logit_gaps_of_the_ls_optimum_equal_the_theory():
    K, eps = 10, 0.1
    y = torch.arange(K)
    q = ls.smooth_targets(y, K, eps)
    z = q.log()                                   # softmax(z) = q': the minimiser of the smoothed loss
    gaps = ls.geometry.logit_gaps(z, y, "each")
    torch.testing.assert_close(gaps, torch.full((K, K - 1), ls.optimal_logit_gap(K, eps)))


def test_logit_gaps_reject_bad_inputs():
    z = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="against"):
        ls.geometry.logit_gaps(z, torch.tensor([0, 1, 2]), against="min")
    with pytest.raises(ValueError, match="index 4"):
        ls.geometry.logit_gaps(z, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        ls.geometry.logit_gaps(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="K >= 2"):
        ls.geometry.logit_gaps(torch.zeros(3, 1), torch.tensor([0, 0, 0]))
    with pytest.raises(TypeError, match="logits"):
        ls.geometry.logit_gaps(torch.zeros(3, 4, dtype=torch.long), torch.tensor([0, 1, 2]))


def test_sample_per_class_is_seeded_and_balanced():
    labels = torch.arange(5).repeat(40)
    a = ls.geometry.sample_per_class(labels, [1, 3, 4], 10, seed=3)
    assert a.shape == (30,) and torch.equal(a, ls.geometry.sample_per_class(labels, [1, 3, 4], 10, seed=3))
    assert not torch.equal(a, ls.geometry.sample_per_class(labels, [1, 3, 4], 10, seed=4))
    assert labels[a].bincount(minlength=5).tolist() == [0, 10, 0, 10, 10]
    assert len(ls.geometry.sample_per_class(labels, [0], 100)) == 40                 # fewer available: all of them
    with pytest.raises(ValueError, match="no example of class 7"):
        ls.geometry.sample_per_class(labels, [7], 5)
    with pytest.raises(ValueError, match="n_per_class"):
        ls.geometry.sample_per_class(labels, [0], 0)


def test_template_offsets_make_logits_a_distance():
    """z_k = -½‖x - w_k‖² + c_k + ½‖x‖² exactly, with c_k = b_k + ½‖w_k‖²."""
    model = ls.build_model("mlp", num_classes=4, in_channels=1, width=6, image_size=3)
    x = torch.randn(9, 1, 3, 3)
    W, b = ls.geometry.classifier_templates(model)
    feats = ls.penultimate(model, x)
    c = ls.geometry.template_offsets(model)
    rebuilt = -0.5 * torch.cdist(feats, W) ** 2 + c + 0.5 * (feats ** 2).sum(1, keepdim=True)
    torch.testing.assert_close(rebuilt, ls.predict_logits(model, x), atol=1e-4, rtol=1e-4)
    with pytest.raises(TypeError, match="classifier"):
        ls.geometry.classifier_templates(torch.nn.Linear(3, 2))
