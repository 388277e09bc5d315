"""Tests of lsutils.book.penultimate (chapter 3)."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.book import penultimate as ch  # noqa: E402


def test_triples_name_real_classes():
    from lsutils.data import CIFAR10_CLASSES, FASHION_MNIST_CLASSES

    names = {"fashion_mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}
    for dataset, kinds in ch.FIGURE1_TRIPLES.items():
        for kind, triple in kinds.items():
            assert set(triple) <= set(names[dataset]) and len(set(triple)) == 3, (dataset, kind)
    assert ch.class_triple("cifar10", "dissimilar") == ("airplane", "automobile", "bird")   # the paper's
    with pytest.raises(ValueError, match="dataset"):
        ch.class_triple("mnist", "similar")
    with pytest.raises(ValueError, match="kind"):
        ch.class_triple("cifar10", "close")


def test_geometry_measures_and_plots_on_real_data(fashion_mnist_small):
    """A briefly trained CNN on real Fashion-MNIST: every measure is finite and in range; the plots draw."""
    import matplotlib.pyplot as plt

    ds = fashion_mnist_small
    torch.manual_seed(0)
    model = ls.build_model("cnn", num_classes=10, in_channels=1, width=4)
    ls.fit(model, ds.train.x, ds.train.y, ls.losses.build_loss(ls.smoothing_spec(0.1)), epochs=1, batch_size=128,
           lr=3e-3, weight_decay=0.0, seed=0, device="cpu", augment=False, val=None, progress=False)
    triples = {name: [ds.classes.index(c) for c in ch.class_triple("fashion_mnist", name)]
               for name in ("dissimilar", "similar")}
    m = ch.geometry_measures(model, ds.val.x, ds.val.y, triples)
    assert set(m) >= {"acc", "tightness_dissimilar", "equidistance_similar", "tightness_span", "tightness_full",
                      "gap_max_median", "gap_each_median", "offset_range", "feature_norm"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    assert 0.3 < m["acc"] <= 1.0 and m["tightness_full"] > 0 and m["equidistance_span"] >= 0
    res = ls.geometry.project_classes(model, ds.val.x, ds.val.y, triples["similar"], n_per_class=20)
    assert res["coords"].shape == (60, 2) and res["templates"][0].abs().max() < 1e-5
    assert res["templates"][1, 1].abs() < 1e-5                                  # w_b on the first axis
    fig = ch.plot_template_projections({"LS": model}, {"train": ds.train, "validation": (ds.val.x, ds.val.y)},
                                      ch.class_triple("fashion_mnist", "similar"), ds.classes, n_per_class=20)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel()
    plt.close(fig)
    z = ls.predict_logits(model, ds.val.x)
    ax = ch.plot_logit_gap_histogram({"LS": ls.geometry.logit_gaps(z, ds.val.y, "each")},
                                    optimum=ls.optimal_logit_gap(10, 0.1))
    assert ax.get_xlabel().startswith("logit gap")
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="exactly 3"):
        ch.geometry_measures(model, ds.val.x, ds.val.y, {"bad": [0, 1]})
    with pytest.raises(ValueError, match="unknown"):
        ch.plot_template_projections({"LS": model}, {"val": ds.val}, ("Trouser", "Bag", "Hat"), ds.classes)
    with pytest.raises(TypeError, match="splits"):
        ch.plot_template_projections({"LS": model}, {"val": ds.val.x}, (0, 1, 2), ds.classes)


def test_loss_label():
    assert ch.loss_label(ls.RunSpec.from_profile(ls.get_profile("smoke"), loss=ls.smoothing_spec(0.1), seed=0)) \
        == "LS ε=0.1"
    assert ch.loss_label({"name": "ce"}) == "CE"
    with pytest.raises(ValueError, match="'ce' or 'ls'"):
        ch.loss_label({"name": "als"})


def test_compare_losses_pairs_seeds_and_checks_direction():
    rows = [{"loss": loss, "seed": s, "split": sp, "t": v}
            for loss, s, sp, v in [("CE", 0, "val", 2.0), ("CE", 1, "val", 3.0), ("CE", 2, "val", 4.0),
                                   ("LS ε=0.1", 0, "val", 1.0), ("LS ε=0.1", 1, "val", 3.5),
                                   ("LS ε=0.1", 2, "val", 2.0),
                                   ("CE", 0, "train", 0.0)]]
    out = ch.compare_losses(rows, "t", split="val", digits=1)
    assert out["CE"] == "3.0 ± 1.0" and out["agree"] == "2/3" and out["holds"] is False
    assert out["ls_mean"] == pytest.approx(6.5 / 3)
    assert ch.compare_losses(rows, "t", split="val", expect="higher")["agree"] == "1/3"
    with pytest.raises(ValueError, match="exactly 'CE' and one LS"):
        ch.compare_losses(rows, "t", split="train")
    with pytest.raises(ValueError, match="no rows for split"):
        ch.compare_losses(rows, "t", split="test")
    with pytest.raises(ValueError, match="metric 'u'"):
        ch.compare_losses(rows, "u", split="val")
    with pytest.raises(ValueError, match="expect"):
        ch.compare_losses(rows, "t", split="val", expect="smaller")
