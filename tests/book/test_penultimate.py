"""Tests of lsutils.book.penultimate (chapter 3)."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn as nn

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.book import penultimate as ch  # noqa: E402


class _Identity(nn.Module):
    """A model whose penultimate activations are its inputs ``(N, D)`` and whose templates we choose."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor | None = None):
        super().__init__()
        self.classifier = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            self.classifier.weight.copy_(W)
            self.classifier.bias.copy_(torch.zeros(W.shape[0]) if b is None else b)

    def features(self, x):
        return x

    def forward(self, x):
        return self.classifier(self.features(x))


def _clusters(centres, n=40, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([c + noise * torch.randn(n, len(c), generator=g) for c in centres])
    y = torch.arange(len(centres)).repeat_interleave(n)
    return x, y


def test_triples_and_similar_classes_name_real_classes():
    from lsutils.data import CIFAR10_CLASSES, FASHION_MNIST_CLASSES

    names = {"fashion_mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}
    for dataset in ("fashion_mnist", "cifar10"):
        triples = ch.figure1_triples(dataset)
        assert sum(k.startswith("dissimilar") for k in triples) == 3 and "similar" in triples
        for triple in triples.values():
            assert set(triple) <= set(names[dataset]) and len(set(triple)) == 3
        sim = ch.similar_classes(dataset)
        assert {sim["image"], sim["similar"], *sim["dissimilar"]} <= set(names[dataset])
        assert sim["similar"] not in sim["dissimilar"] and sim["image"] not in sim["dissimilar"]
        assert {sim["image"], sim["similar"]} <= set(triples["similar"])      # the similar triple holds the pair
    assert ch.figure1_triples("cifar10")["dissimilar 1"] == ("airplane", "automobile", "bird")   # the paper's
    ch.figure1_triples("cifar10")["x"] = ("a", "b", "c")                      # a copy: the table is untouched
    assert "x" not in ch.FIGURE1_TRIPLES["cifar10"]
    with pytest.raises(ValueError, match="dataset"):
        ch.figure1_triples("mnist")
    with pytest.raises(ValueError, match="dataset"):
        ch.similar_classes(None)


def test_geometry_measures_on_known_geometry():
    W = torch.eye(3)
    # three clusters at 10·w_k: equal distances in the plane, tight
    x, y = _clusters([10 * W[0], 10 * W[1], 10 * W[2]])
    rows = {r["scope"]: r for r in ch.geometry_measures(_Identity(W), x, y, {"t": [0, 1, 2]})}
    assert set(rows) == {"t", "all classes"}
    assert rows["t"]["equidistance"] < 0.02 and rows["t"]["tightness"] < 0.02
    assert rows["t"]["pair_ratio"] == pytest.approx(1.0, abs=0.02)
    assert math.isnan(rows["all classes"]["pair_ratio"])
    # with three templates the span of all templates is their plane: the same numbers
    assert rows["all classes"]["tightness"] == pytest.approx(rows["t"]["tightness"], rel=1e-4)
    # two classes close together, the third far: unequal distances, pair ratio well below 1
    x2, y2 = _clusters([10 * W[0], 10 * W[0] + 2 * W[1], 10 * W[2]], noise=0.5)
    r2 = ch.geometry_measures(_Identity(W), x2, y2, {"t": [0, 1, 2]})[0]
    assert r2["pair_ratio"] < 0.3 and r2["equidistance"] > 0.3 and r2["tightness"] > rows["t"]["tightness"]
    with pytest.raises(ValueError, match="exactly 3"):
        ch.geometry_measures(_Identity(W), x, y, {"bad": [0, 1]})
    with pytest.raises(TypeError, match="triples"):
        ch.geometry_measures(_Identity(W), x, y, [0, 1, 2])
    with pytest.raises(TypeError, match="y"):
        ch.geometry_measures(_Identity(W), x, y.float(), {"t": [0, 1, 2]})


def test_similarity_signal_by_hand():
    z = torch.tensor([[5.0, 2.0, 0.0, -1.0],     # class 0, resembles 1
                      [4.0, 0.0, 1.0, 1.0],      # class 0
                      [0.0, 3.0, 0.0, 0.0]])     # class 1: ignored
    y = torch.tensor([0, 0, 1])
    r = ch.similarity_signal(z, y, image_class=0, similar=1, dissimilar=[2, 3])
    p = z[:2].double().softmax(1)
    assert r["n"] == 2
    assert r["p_similar"] == pytest.approx(float(p[:, 1].mean()))
    assert r["p_dissimilar"] == pytest.approx(float(p[:, 2:].mean()))
    assert r["share_similar"] == pytest.approx(float((p[:, 1] / (1 - p[:, 0])).mean()))
    assert r["log_ratio"] == pytest.approx(((2.0 - (-0.5)) + (0.0 - 1.0)) / 2)
    # uniform smoothing's optimum: every wrong class equal → log-ratio 0, share 1/(K-1)
    flat = torch.log(ls.smooth_targets(torch.tensor([0, 0]), 4, 0.1))
    r0 = ch.similarity_signal(flat, torch.tensor([0, 0]), 0, 1, [2, 3])
    assert r0["log_ratio"] == pytest.approx(0.0, abs=1e-6) and r0["share_similar"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no example"):
        ch.similarity_signal(z, y, image_class=2, similar=1, dissimilar=[3])
    with pytest.raises(ValueError, match="distinct"):
        ch.similarity_signal(z, y, image_class=0, similar=1, dissimilar=[1])
    with pytest.raises(ValueError, match="at least one"):
        ch.similarity_signal(z, y, image_class=0, similar=1, dissimilar=[])
    with pytest.raises(ValueError, match="labels must lie"):
        ch.similarity_signal(z, torch.tensor([0, 0, 4]), 0, 1, [2])
    with pytest.raises(TypeError, match="labels"):
        ch.similarity_signal(z, y.float(), 0, 1, [2])


def test_nontarget_share_matrix_and_distance_from_uniform():
    k = 5
    flat = torch.log(ls.smooth_targets(torch.arange(k).repeat(3), k, 0.2))
    m = ch.nontarget_share_matrix(flat, torch.arange(k).repeat(3))
    assert m.shape == (k, k) and torch.isnan(m.diagonal()).all()
    off = m[~torch.eye(k, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, 1 / (k - 1)))
    assert ch.distance_from_uniform(m) == pytest.approx(0.0, abs=1e-12)
    # every class sends all its non-target probability to the next class: the largest distance
    z = torch.full((k, k), -30.0)
    z[torch.arange(k), torch.arange(k)] = 5.0
    z[torch.arange(k), (torch.arange(k) + 1) % k] = 0.0
    peaked = ch.nontarget_share_matrix(z, torch.arange(k))
    assert torch.allclose(torch.nansum(peaked, 1), torch.ones(k, dtype=torch.float64))
    assert ch.distance_from_uniform(peaked) == pytest.approx(1 - 1 / (k - 1), abs=1e-6)
    # a class without examples: its row is NaN and is left out of the distance
    part = ch.nontarget_share_matrix(z[:3], torch.arange(3))
    assert torch.isnan(part[4]).all() and not torch.isnan(part[0, 1:]).any()
    assert ch.distance_from_uniform(part) == pytest.approx(1 - 1 / (k - 1), abs=1e-6)
    with pytest.raises(ValueError, match="square"):
        ch.distance_from_uniform(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="no row"):
        ch.distance_from_uniform(torch.full((3, 3), float("nan")))


def test_verdicts_and_texts():
    rows = [{"loss": loss, "seed": s, "v": v} for loss, s, v in
            [("CE", 0, 1.0), ("CE", 1, 1.2), ("CE", 2, 1.1), ("LS", 0, 0.5), ("LS", 1, 0.6), ("LS", 2, 0.55)]]
    pc = ls.paired_comparison(rows, "v", a={"loss": "LS"}, b={"loss": "CE"})
    assert ch.verdict(pc, "lower") == "reproduces" and ch.verdict(pc, "higher") == "opposite"
    flat = ls.paired_comparison(rows, "v", a={"loss": "CE"}, b={"loss": "CE"})
    assert ch.verdict(flat, "lower") == "not significant"
    assert "p < 0.001" in ch.comparison_text(pc) or "p = 0.0" in ch.comparison_text(pc)
    assert "p = <" not in ch.comparison_text(pc)
    assert ch.p_text(0.0004) == "p < 0.001" and ch.p_text(0.05) == "p = 0.05"
    with pytest.raises(ValueError, match="expect"):
        ch.verdict(pc, "smaller")
    with pytest.raises(TypeError, match="PairedComparison"):
        ch.verdict("lower", "lower")
    with pytest.raises(TypeError, match="PairedComparison"):
        ch.comparison_text(0.3)
    with pytest.raises(ValueError, match="probability"):
        ch.p_text(1.5)
    assert ch.loss_label(ls.RunSpec.from_profile(ls.get_profile("smoke"), loss=ls.smoothing_spec(0.1), seed=0)) \
        == "LS ε=0.1"
    with pytest.raises(ValueError, match="'ce' or 'ls'"):
        ch.loss_label({"name": "als"})


def test_plots_on_real_data(fashion_mnist_small):
    """A briefly trained CNN on real Fashion-MNIST: every figure of the chapter draws, and bad input is refused."""
    import matplotlib.pyplot as plt
    import pandas as pd

    ds = fashion_mnist_small
    torch.manual_seed(0)
    model = ls.build_model("cnn", num_classes=10, in_channels=1, width=4)
    ls.fit(model, ds.train.x, ds.train.y, ls.losses.build_loss(ls.smoothing_spec(0.1)), epochs=1, batch_size=128,
           lr=3e-3, weight_decay=0.0, seed=0, device="cpu", augment=False, val=None, progress=False)
    triples = ch.figure1_triples("fashion_mnist")
    fig = ch.plot_figure1({"CE": model, "LS": model}, {"train": ds.train, "validation": (ds.val.x, ds.val.y)},
                          triples, ds.classes, n_per_class=10)
    assert len(fig.axes) == 4 * 4
    assert fig.axes[0].get_aspect() == 1.0 and fig.axes[0].get_xlim() == fig.axes[1].get_xlim()
    plt.close(fig)
    idx = {name: [ds.classes.index(c) for c in names] for name, names in triples.items()}
    rows = [{"loss": loss, "seed": s, "split": split, **r} for loss in ("CE", "LS") for s in (0, 1)
            for split in ("train", "validation") for r in ch.geometry_measures(model, ds.val.x, ds.val.y, idx)]
    fig = ch.plot_geometry(pd.DataFrame(rows))
    assert len(fig.axes) == 4 and fig.axes[0].get_ylim()[0] == 0
    plt.close(fig)
    z = ls.predict_logits(model, ds.val.x)
    ax = ch.plot_logit_gap_histogram({"LS": ls.geometry.logit_gaps(z, ds.val.y, "each")},
                                     optimum=ls.optimal_logit_gap(10, 0.1))
    assert ax.get_xlabel().startswith("logit gap")
    plt.close(ax.figure)
    shirt = ds.classes.index("Shirt")
    ax = ch.plot_similarity({"model": z[ds.val.y == shirt].softmax(1).mean(0),
                             "target": ls.smooth_targets(torch.tensor([shirt]), 10, 0.1)[0]},
                            ds.classes, image_class="Shirt", similar="T-shirt/top")
    assert ax.get_yscale() == "log" and len(ax.patches) == 20
    plt.close(ax.figure)
    fig = ch.plot_share_matrices({"a": ch.nontarget_share_matrix(z, ds.val.y)}, ds.classes)
    assert "distance from uniform" in fig.axes[0].get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="unknown"):
        ch.plot_figure1({"LS": model}, {"val": ds.val}, {"t": ("Trouser", "Bag", "Hat")}, ds.classes)
    with pytest.raises(TypeError, match="splits"):
        ch.plot_figure1({"LS": model}, {"val": ds.val.x}, {"t": (0, 1, 2)}, ds.classes)
    with pytest.raises(TypeError, match="models"):
        ch.plot_figure1({}, {"val": ds.val}, {"t": (0, 1, 2)}, ds.classes)
    with pytest.raises(ValueError, match="columns"):
        ch.plot_geometry([{"loss": "CE"}])
    with pytest.raises(ValueError, match="shape"):
        ch.plot_similarity({"x": torch.ones(3)}, ds.classes, image_class="Shirt", similar="T-shirt/top")
    with pytest.raises(ValueError, match="not one of"):
        ch.plot_similarity({"x": torch.ones(10)}, ds.classes, image_class="Shirt", similar="Hat")
    with pytest.raises(ValueError, match="shape"):
        ch.plot_share_matrices({"a": torch.ones(3, 3)}, ds.classes)
    plt.close("all")
