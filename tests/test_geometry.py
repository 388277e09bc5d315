"""Tests of lsutils.geometry: the template plane, the projection, the cluster measures, the logit gaps, the plots."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

import lsutils as ls
from lsutils import geometry as G


def _templates(d: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, d, generator=g, dtype=torch.float64)
    return w[0], w[1], w[2]


# ------------------------------------------------------------------------------------------ basis and projection
@pytest.mark.parametrize("d,seed", [(2, 0), (3, 1), (128, 2)])
def test_basis_is_orthonormal_and_spans_the_templates_plane(d, seed):
    a, b, c = _templates(d, seed)
    B = G.template_plane_basis(a, b, c)
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
    B = G.template_plane_basis(a, b, c)
    coords = G.project_to_plane(torch.stack([a, b, c]), B, origin=a)
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
    B = G.template_plane_basis(a, b, c)
    g = torch.Generator().manual_seed(0)
    coeff = torch.randn(5, 2, generator=g, dtype=torch.float64)
    inplane = a + coeff @ B.T
    perp = torch.randn(6, generator=g, dtype=torch.float64)
    perp = perp - B @ (B.T @ perp)
    torch.testing.assert_close(G.project_to_plane(inplane + 3.0 * perp, B, origin=a), coeff)
    # without an origin the coordinates are those of the vector itself
    torch.testing.assert_close(G.project_to_plane(inplane, B), coeff + (a @ B))


def test_projection_keeps_the_three_logit_differences():
    """z_b - z_a and z_c - z_a of a linear layer depend on x only through its plane coordinates."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 5).double()
    W, bias = layer.weight.detach(), layer.bias.detach()
    x = torch.randn(50, 16, dtype=torch.float64)
    B = G.template_plane_basis(W[0], W[2], W[4])
    xp = W[0] + G.project_to_plane(x, B, origin=W[0]) @ B.T     # x moved onto the plane
    z, zp = x @ W.T + bias, xp @ W.T + bias
    for k in (2, 4):
        torch.testing.assert_close(z[:, k] - z[:, 0], zp[:, k] - zp[:, 0])


def test_template_subspace_basis_spans_all_templates():
    W = torch.randn(6, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    Q = G.template_subspace_basis(W)
    assert Q.shape == (20, 5)
    torch.testing.assert_close(Q.T @ Q, torch.eye(5, dtype=torch.float64))
    diffs = (W[1:] - W[0]).T
    torch.testing.assert_close(Q @ (Q.T @ diffs), diffs)
    # rank-deficient templates: three collinear points span one direction
    line = torch.tensor([[0.0, 0, 0], [1, 1, 0], [2, 2, 0]])
    assert G.template_subspace_basis(line).shape == (3, 1)


def test_basis_and_projection_reject_bad_inputs():
    a, b, c = _templates(5)
    with pytest.raises(ValueError, match="collinear"):
        G.template_plane_basis(a, b, a + 2.0 * (b - a))
    with pytest.raises(ValueError, match="coincide"):
        G.template_plane_basis(a, a.clone(), c)
    with pytest.raises(ValueError, match="same shape"):
        G.template_plane_basis(a, b, c[:4])
    with pytest.raises(TypeError, match="w_b"):
        G.template_plane_basis(a, [1.0] * 5, c)
    with pytest.raises(TypeError, match="floating"):
        G.template_plane_basis(a, b, torch.arange(5))
    with pytest.raises(ValueError, match="D >= 2"):
        G.template_plane_basis(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([3.0]))
    with pytest.raises(ValueError, match="NaN"):
        G.template_plane_basis(a, b, torch.full((5,), float("nan"), dtype=torch.float64))
    B = G.template_plane_basis(a, b, c)
    with pytest.raises(ValueError, match="orthonormal"):
        G.project_to_plane(torch.zeros(2, 5, dtype=torch.float64), 2.0 * B)
    with pytest.raises(ValueError, match="rows"):
        G.project_to_plane(torch.zeros(2, 4, dtype=torch.float64), B)
    with pytest.raises(ValueError, match=r"\(D, 2\)"):
        G.project_to_plane(torch.zeros(2, 5), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="origin"):
        G.project_to_plane(torch.zeros(2, 5, dtype=torch.float64), B, origin=torch.zeros(4))


# ------------------------------------------------------------------------------------------ cluster measures
def _clusters(centres: torch.Tensor, radius: float, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points on a circle of ``radius`` around each centre: within-class distance exactly ``radius``."""
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    ring = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    pts = torch.cat([c + ring for c in centres])
    labels = torch.arange(len(centres)).repeat_interleave(n)
    return pts, labels


def test_tightness_and_equidistance_on_an_equilateral_triangle():
    side, radius = 4.0, 0.5
    centres = torch.tensor([[0.0, 0.0], [side, 0.0], [side / 2, side * math.sqrt(3) / 2]], dtype=torch.float64)
    pts, labels = _clusters(centres, radius)
    assert G.cluster_tightness(pts, labels) == pytest.approx(radius / side)
    assert G.equidistance(pts, labels) == pytest.approx(0.0, abs=1e-12)
    # scale-free
    assert G.cluster_tightness(10 * pts, labels) == pytest.approx(radius / side)


def test_tightness_and_equidistance_on_a_3_4_5_triangle_and_class_subsets():
    centres = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    pts, labels = _clusters(centres, 1.0)
    assert G.cluster_tightness(pts, labels) == pytest.approx(1.0 / 4.0)          # mean distance (3+4+5)/3
    assert G.equidistance(pts, labels) == pytest.approx(math.sqrt(2 / 3) / 4)    # std 0.816 / mean 4
    assert G.cluster_tightness(pts, labels, classes=[0, 2]) == pytest.approx(1.0 / 4.0)
    assert G.equidistance(pts, labels, classes=[0, 1]) == pytest.approx(0.0)
    # per-class average: a class with many more points does not dominate
    big = torch.cat([pts, pts[:8].repeat(5, 1)])
    assert G.cluster_tightness(big, torch.cat([labels, labels[:8].repeat(5)])) == pytest.approx(0.25)


def test_cluster_measures_in_high_dimension():
    g = torch.Generator().manual_seed(0)
    centres = 10 * torch.eye(4, 32, dtype=torch.float64)      # 4 mutually equidistant centres, distance 10·√2
    labels = torch.arange(4).repeat_interleave(200)
    noise = torch.randn(800, 32, generator=g, dtype=torch.float64) * 0.1
    pts = centres[labels] + noise
    assert G.equidistance(pts, labels) < 0.01
    expected = 0.1 * math.sqrt(32) / (10 * math.sqrt(2))     # E‖noise‖ ≈ σ√D
    assert G.cluster_tightness(pts, labels) == pytest.approx(expected, rel=0.03)


def test_cluster_measures_reject_bad_inputs():
    pts, labels = _clusters(torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="two classes"):
        G.cluster_tightness(pts[:8], labels[:8])
    with pytest.raises(ValueError, match="labels must have shape"):
        G.equidistance(pts, labels[:-1])
    with pytest.raises(TypeError, match="labels"):
        G.cluster_tightness(pts, labels.double())
    with pytest.raises(ValueError, match="class 5"):
        G.cluster_tightness(pts, labels, classes=[0, 5])
    with pytest.raises(ValueError, match="coincide"):
        G.cluster_tightness(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="points must have shape"):
        G.equidistance(torch.zeros(4), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="distinct"):
        G.equidistance(pts, labels, classes=[0, 0])


# ------------------------------------------------------------------------------------------ logit gaps
def test_logit_gaps_max_and_each():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 5.0, 1.0]])
    y = torch.tensor([0, 1])
    assert G.logit_gaps(z, y).tolist() == [2.0, -3.0]
    assert G.logit_gaps(z, y, "each").tolist() == [[2.0, 3.0, 4.0], [2.0, -3.0, 1.0]]


def test_logit_gaps_of_the_ls_optimum_equal_the_theory():
    K, eps = 10, 0.1
    y = torch.arange(K)
    q = ls.smooth_targets(y, K, eps)
    z = q.log()                                   # softmax(z) = q': the minimiser of the smoothed loss
    gaps = G.logit_gaps(z, y, "each")
    torch.testing.assert_close(gaps, torch.full((K, K - 1), ls.optimal_logit_gap(K, eps)))


def test_logit_gaps_reject_bad_inputs():
    z = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="against"):
        G.logit_gaps(z, torch.tensor([0, 1, 2]), against="min")
    with pytest.raises(ValueError, match="index 4"):
        G.logit_gaps(z, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        G.logit_gaps(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="K >= 2"):
        G.logit_gaps(torch.zeros(3, 1), torch.tensor([0, 0, 0]))
    with pytest.raises(TypeError, match="logits"):
        G.logit_gaps(torch.zeros(3, 4, dtype=torch.long), torch.tensor([0, 1, 2]))


# ------------------------------------------------------------------------------------------ models, sampling
def test_triples_name_real_classes():
    from lsutils.data import CIFAR10_CLASSES, FASHION_MNIST_CLASSES

    names = {"fashion_mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}
    for dataset, kinds in G.FIGURE1_TRIPLES.items():
        for kind, triple in kinds.items():
            assert set(triple) <= set(names[dataset]) and len(set(triple)) == 3, (dataset, kind)
    assert G.class_triple("cifar10", "dissimilar") == ("airplane", "automobile", "bird")   # the paper's
    with pytest.raises(ValueError, match="dataset"):
        G.class_triple("mnist", "similar")
    with pytest.raises(ValueError, match="kind"):
        G.class_triple("cifar10", "close")


def test_sample_per_class_is_seeded_and_balanced():
    labels = torch.arange(5).repeat(40)
    a = G.sample_per_class(labels, [1, 3, 4], 10, seed=3)
    assert a.shape == (30,) and torch.equal(a, G.sample_per_class(labels, [1, 3, 4], 10, seed=3))
    assert not torch.equal(a, G.sample_per_class(labels, [1, 3, 4], 10, seed=4))
    assert labels[a].bincount(minlength=5).tolist() == [0, 10, 0, 10, 10]
    assert len(G.sample_per_class(labels, [0], 100)) == 40                 # fewer available: all of them
    with pytest.raises(ValueError, match="no example of class 7"):
        G.sample_per_class(labels, [7], 5)
    with pytest.raises(ValueError, match="n_per_class"):
        G.sample_per_class(labels, [0], 0)


def test_template_offsets_make_logits_a_distance():
    """z_k = -½‖x - w_k‖² + c_k + ½‖x‖² exactly, with c_k = b_k + ½‖w_k‖²."""
    model = ls.build_model("mlp", num_classes=4, in_channels=1, width=6, image_size=3)
    x = torch.randn(9, 1, 3, 3)
    W, b = G.classifier_templates(model)
    feats = ls.penultimate(model, x)
    c = G.template_offsets(model)
    rebuilt = -0.5 * torch.cdist(feats, W) ** 2 + c + 0.5 * (feats ** 2).sum(1, keepdim=True)
    torch.testing.assert_close(rebuilt, ls.predict_logits(model, x), atol=1e-4, rtol=1e-4)
    with pytest.raises(TypeError, match="classifier"):
        G.classifier_templates(torch.nn.Linear(3, 2))


def test_geometry_measures_and_plots_on_real_data(fashion_mnist_small):
    """A briefly trained CNN on real Fashion-MNIST: every measure is finite and in range; the plots draw."""
    import matplotlib.pyplot as plt

    ds = fashion_mnist_small
    torch.manual_seed(0)
    model = ls.build_model("cnn", num_classes=10, in_channels=1, width=4)
    ls.fit(model, ds.train.x, ds.train.y, ls.build_loss(ls.smoothing_spec(0.1)), epochs=1, batch_size=128,
           lr=3e-3, weight_decay=0.0, seed=0, device="cpu", augment=False, val=None, progress=False)
    triples = {name: [ds.classes.index(c) for c in G.class_triple("fashion_mnist", name)]
               for name in ("dissimilar", "similar")}
    m = G.geometry_measures(model, ds.val.x, ds.val.y, triples)
    assert set(m) >= {"acc", "tightness_dissimilar", "equidistance_similar", "tightness_span", "tightness_full",
                      "gap_max_median", "gap_each_median", "offset_range", "feature_norm"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    assert 0.3 < m["acc"] <= 1.0 and m["tightness_full"] > 0 and m["equidistance_span"] >= 0
    res = G.project_classes(model, ds.val.x, ds.val.y, triples["similar"], n_per_class=20)
    assert res["coords"].shape == (60, 2) and res["templates"][0].abs().max() < 1e-5
    assert res["templates"][1, 1].abs() < 1e-5                                  # w_b on the first axis
    fig = G.plot_template_projections({"LS": model}, {"train": ds.train, "validation": (ds.val.x, ds.val.y)},
                                      G.class_triple("fashion_mnist", "similar"), ds.classes, n_per_class=20)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel()
    plt.close(fig)
    z = ls.predict_logits(model, ds.val.x)
    ax = G.plot_logit_gap_histogram({"LS": G.logit_gaps(z, ds.val.y, "each")},
                                    optimum=ls.optimal_logit_gap(10, 0.1))
    assert ax.get_xlabel().startswith("logit gap")
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="exactly 3"):
        G.geometry_measures(model, ds.val.x, ds.val.y, {"bad": [0, 1]})
    with pytest.raises(ValueError, match="unknown"):
        G.plot_template_projections({"LS": model}, {"val": ds.val}, ("Trouser", "Bag", "Hat"), ds.classes)
    with pytest.raises(TypeError, match="splits"):
        G.plot_template_projections({"LS": model}, {"val": ds.val.x}, (0, 1, 2), ds.classes)


def test_loss_label():
    assert G.loss_label(ls.RunSpec.from_profile(ls.get_profile("smoke"), loss=ls.smoothing_spec(0.1), seed=0)) \
        == "LS ε=0.1"
    assert G.loss_label({"name": "ce"}) == "CE"
    with pytest.raises(ValueError, match="'ce' or 'ls'"):
        G.loss_label({"name": "als"})


def test_compare_losses_pairs_seeds_and_checks_direction():
    rows = [{"loss": loss, "seed": s, "split": sp, "t": v}
            for loss, s, sp, v in [("CE", 0, "val", 2.0), ("CE", 1, "val", 3.0), ("CE", 2, "val", 4.0),
                                   ("LS ε=0.1", 0, "val", 1.0), ("LS ε=0.1", 1, "val", 3.5),
                                   ("LS ε=0.1", 2, "val", 2.0),
                                   ("CE", 0, "train", 0.0)]]
    out = G.compare_losses(rows, "t", split="val", digits=1)
    assert out["CE"] == "3.0 ± 1.0" and out["agree"] == "2/3" and out["holds"] is False
    assert out["ls_mean"] == pytest.approx(6.5 / 3)
    assert G.compare_losses(rows, "t", split="val", expect="higher")["agree"] == "1/3"
    with pytest.raises(ValueError, match="exactly 'CE' and one LS"):
        G.compare_losses(rows, "t", split="train")
    with pytest.raises(ValueError, match="no rows for split"):
        G.compare_losses(rows, "t", split="test")
    with pytest.raises(ValueError, match="metric 'u'"):
        G.compare_losses(rows, "u", split="val")
    with pytest.raises(ValueError, match="expect"):
        G.compare_losses(rows, "t", split="val", expect="smaller")
