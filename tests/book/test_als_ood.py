"""Tests of lsutils.book.als_ood (chapter 6): OOD sets, tables and figures."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.book import als_ood as ch  # noqa: E402


def test_noise_images_are_seeded_normalised_and_checked():
    a = ch.noise_images(500, (1, 28, 28), mean=0.286, std=0.353, seed=1)
    assert a.shape == (500, 1, 28, 28) and a.dtype == torch.float32
    assert torch.equal(a, ch.noise_images(500, (1, 28, 28), mean=0.286, std=0.353, seed=1))
    assert not torch.equal(a, ch.noise_images(500, (1, 28, 28), mean=0.286, std=0.353, seed=2))
    pixels = a * 0.353 + 0.286                         # back to [0, 1] units
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6
    u = ch.noise_images(200, (3, 8, 8), mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), kind="uniform") * 0.2
    assert abs(float((u[:, 0] + 0.5).mean()) - 0.5) < 0.02
    with pytest.raises(ValueError, match="kind"):
        ch.noise_images(2, (1, 4, 4), 0.5, 0.2, kind="pink")
    with pytest.raises(ValueError, match="one value per channel"):
        ch.noise_images(2, (3, 4, 4), 0.5, 0.2)
    with pytest.raises(ValueError, match="shape"):
        ch.noise_images(2, (4, 4), 0.5, 0.2)
    with pytest.raises(ValueError, match="std"):
        ch.noise_images(2, (1, 4, 4), 0.5, 0.0)
    with pytest.raises(ValueError, match="n must be"):
        ch.noise_images(0, (1, 4, 4), 0.5, 0.2)


def test_transformed_images_move_pixels_only(fashion_mnist_small):
    x = fashion_mnist_small.test.x[:64]
    up = ch.transformed_images(x, "upside-down")
    assert torch.equal(ch.transformed_images(up, "upside-down"), x)
    rot = x
    for _ in range(4):
        rot = ch.transformed_images(rot, "rotated")
    assert torch.equal(rot, x)
    assert not torch.equal(ch.transformed_images(x, "rotated"), x)
    sh = ch.transformed_images(x, "patch-shuffled", seed=3)
    assert sh.shape == x.shape
    assert torch.equal(sh.flatten(1).sort(1).values, x.flatten(1).sort(1).values)   # same pixels per image
    assert not torch.equal(sh, x)
    assert torch.equal(sh, ch.transformed_images(x, "patch-shuffled", seed=3))
    # every 7×7 patch of the result is one of the image's own patches
    patches = lambda t: t.unfold(2, 7, 7).unfold(3, 7, 7).reshape(t.shape[0], -1, 49)  # noqa: E731
    p_in, p_out = patches(x), patches(sh)
    for i in range(4):
        assert sorted(map(tuple, p_in[i].tolist())) == sorted(map(tuple, p_out[i].tolist()))
    with pytest.raises(ValueError, match="kind"):
        ch.transformed_images(x, "mirrored")
    with pytest.raises(ValueError, match="divisible"):
        ch.transformed_images(x, "patch-shuffled", grid=5)
    with pytest.raises(ValueError, match="square"):
        ch.transformed_images(torch.zeros(1, 1, 4, 6), "rotated")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ch.transformed_images(x[0], "rotated")


def test_digits_like_any_dataset():
    grey = ch.digits_ood_like((1, 28, 28), ls.data.FASHION_MNIST_MEAN, ls.data.FASHION_MNIST_STD)
    assert torch.allclose(grey, ls.data.load_digits_ood(), atol=1e-6)
    colour = ch.digits_ood_like((3, 32, 32), ls.data.CIFAR10_MEAN, ls.data.CIFAR10_STD)
    assert colour.shape == (1797, 3, 32, 32)
    back = colour * torch.tensor(ls.data.CIFAR10_STD).view(1, 3, 1, 1) + torch.tensor(ls.data.CIFAR10_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(back[:, 0], back[:, 2], atol=1e-5)            # grey: the channels agree in [0, 1] units
    with pytest.raises(ValueError, match="H == W"):
        ch.digits_ood_like((1, 28, 30), 0.5, 0.2)


def test_build_ood_sets(fashion_mnist_small):
    sets = ch.build_ood_sets(fashion_mnist_small, n=100, seed=0)
    assert list(sets) == ["digits", "noise", "upside-down", "rotated", "patch-shuffled"]
    assert all(v.shape[1:] == (1, 28, 28) for v in sets.values())
    assert sets["digits"].shape[0] == 1797 and sets["noise"].shape[0] == 100 and sets["rotated"].shape[0] == 100
    assert all(ch.OOD_SETS[k][0] in ("far", "near") for k in sets)
    again = ch.build_ood_sets(fashion_mnist_small, n=100, seed=0)
    assert all(torch.equal(sets[k], again[k]) for k in sets)
    with pytest.raises(ValueError, match="download=True"):
        ch.build_ood_sets(fashion_mnist_small, n=10, download=True)
    with pytest.raises(TypeError, match="ImageDataset"):
        ch.build_ood_sets(torch.zeros(3))


def test_build_ood_sets_leaves_out_what_cannot_be_downloaded(monkeypatch):
    split = ls.data.Split(torch.zeros(20, 3, 32, 32), torch.arange(20) % 10)
    data = ls.data.ImageDataset("cifar10", ls.data.CIFAR10_CLASSES, split, split, split, ls.data.CIFAR10_MEAN, ls.data.CIFAR10_STD)

    def fake(name, root, n, mean, std):
        if name == "svhn":
            raise OSError("no network")
        return torch.zeros(n, 3, 32, 32)

    monkeypatch.setattr(ch, "_download_ood", fake)
    with pytest.warns(RuntimeWarning, match="svhn"):
        sets = ch.build_ood_sets(data, n=10)
    assert "svhn" not in sets and sets["cifar100"].shape == (10, 3, 32, 32) and sets["digits"].shape[1] == 3


def test_ood_rows_and_table():
    g = torch.Generator().manual_seed(0)
    z_id = torch.randn(300, 5, generator=g) + 6 * F.one_hot(torch.arange(300) % 5, 5)   # confident
    z_far = torch.randn(200, 5, generator=g)                                             # flat
    rows = []
    for seed in (0, 1):
        rows += ch.ood_rows(z_id, {"noise": z_far, "digits": z_id[:100]}, model="CE", seed=seed)
        rows += ch.ood_rows(z_id, {"noise": z_far, "digits": z_id[:100]}, model="ALS", seed=seed)
    r = next(r for r in rows if r["ood"] == "noise" and r["score"] == "MSP")
    assert r["auroc"] > 0.99 and r["fpr95"] < 0.05 and r["kind"] == "far" and r["model"] == "CE"
    d = next(r for r in rows if r["ood"] == "digits" and r["score"] == "MaxLogit")
    assert 0.35 < d["auroc"] < 0.65                                     # OOD = a copy of ID: chance
    table = ch.ood_table(rows, metric="auroc")
    assert list(table.columns) == ["CE", "ALS"]
    assert table.index.tolist()[:3] == [("noise", "MSP"), ("noise", "MaxLogit"), ("noise", "Energy")]
    assert table.loc[("noise", "MSP"), "CE"] == f"{100 * r['auroc']:.1f} ± 0.0"      # same scores for both seeds
    assert math.isclose(ch.mean_metric(rows, model="CE", ood="noise", score="MSP"), r["auroc"])
    assert math.isclose(ch.mean_metric(rows, "fpr95", kind="far", score="MSP"),
                        np.mean([x["fpr95"] for x in rows if x["kind"] == "far" and x["score"] == "MSP"]))
    with pytest.raises(ValueError, match="no row matches"):
        ch.mean_metric(rows, model="LS")
    with pytest.raises(ValueError, match="metric"):
        ch.ood_table(rows, metric="accuracy")
    with pytest.raises(ValueError, match="classes"):
        ch.ood_rows(z_id, {"noise": torch.randn(4, 3)})
    with pytest.raises(TypeError, match="mapping"):
        ch.ood_rows(z_id, z_far)


def test_model_outputs():
    model = ls.build_model("mlp", 4, 1, width=8, image_size=6)
    z_id, z_ood = ch.model_outputs(model, torch.randn(5, 1, 6, 6), {"a": torch.randn(3, 1, 6, 6)})
    assert z_id.shape == (5, 4) and z_ood["a"].shape == (3, 4)
    split = ls.data.Split(torch.randn(6, 1, 6, 6), torch.arange(6) % 4)
    data = ls.data.ImageDataset("fashion_mnist", ("a", "b", "c", "d"), split, split, split, (0.0,), (1.0,))
    run = ls.train.TrainedRun(None, model, {"val_acc": [0.5, 0.75]}, "key", True, 0.0)
    rows, summary, (z, zo) = ch.evaluate_ood_run(run, data, {"a": torch.randn(3, 1, 6, 6)}, model="X", seed=1)
    assert len(rows) == 3 and summary["val_acc"] == 0.75 and summary["model"] == "X" and "p_max" in summary
    assert torch.equal(z, ls.predict_logits(model, split.x))
    with pytest.raises(TypeError, match="mapping"):
        ch.model_outputs(model, torch.randn(5, 1, 6, 6), [torch.randn(3, 1, 6, 6)])


def test_summaries():
    z = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    assert torch.allclose(ch.sorted_mean_probabilities(z).sum(), torch.tensor(1.0))
    assert (ch.sorted_mean_probabilities(torch.randn(50, 6)).diff() <= 0).all()
    s = ch.logit_summary(torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 5.0]]), torch.tensor([0, 1]))
    assert s["acc"] == 0.5 and s["max_logit"] == 4.0
    assert math.isclose(s["logit_norm"], (math.sqrt(10) + 5) / 2, rel_tol=1e-9)
    assert s["tail_decades"] > 0 and all(isinstance(v, float) for v in s.values())
    with pytest.raises(ValueError, match="labels"):
        ch.logit_summary(torch.randn(3, 4), torch.tensor([0, 1]))


def test_select_lambda_and_settings():
    rows = [{"lam": 1.0, "val_acc": 0.885}, {"lam": 5.0, "val_acc": 0.8810}, {"lam": 20.0, "val_acc": 0.85}]
    assert ch.select_lambda(rows, n_val=5000) == 5.0                  # SE = 0.0045: 0.881 is as good as 0.885
    assert ch.select_lambda(rows, n_val=50_000) == 1.0                # SE = 0.0014: now it is not
    assert ch.select_lambda(rows, n_val=50) == 20.0                   # SE = 0.045: all three tie
    with pytest.raises(ValueError, match="val_acc"):
        ch.select_lambda([{"lam": 1.0}], n_val=10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ch.select_lambda([{"lam": 1.0, "val_acc": 88.5}], n_val=10)
    with pytest.raises(TypeError, match="n_val"):
        ch.select_lambda(rows, n_val=0.5)
    for name in ("smoke", "cpu"):
        s = ch.als_settings(ls.get_profile(name))
        assert 5.0 in s["lam_grid"] and 0 < s["epsilon"] < 1 and s["seeds"] == ls.get_profile(name).seeds
        assert s["n_ood"] <= (ls.get_profile(name).n_test or 10_000)
    with pytest.raises(TypeError, match="Profile"):
        ch.als_settings("cpu")


def test_figures_draw_what_they_say():
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(0)
    z = {m: torch.randn(80, 10, generator=g) * s for m, s in (("CE", 5.0), ("LS", 1.0), ("ALS", 5.0))}
    ood = {m: {"digits": torch.randn(30, 10, generator=g), "noise": torch.randn(30, 10, generator=g)} for m in z}
    fig = ch.plot_score_histograms(z, ood, ["digits", "noise"], scores=("MSP", "MaxLogit"))
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "CE: MSP"
    assert fig.axes[3].get_xlim() == fig.axes[5].get_xlim()              # one row shares its x axis
    ax = ch.plot_logit_norms(z)
    assert [t.get_text().split(" ")[0] for t in ax.get_legend().texts] == ["CE", "LS", "ALS"]
    ax = ch.plot_sorted_probabilities(z)
    assert len(ax.lines) == 3 and len(ax.lines[0].get_xdata()) == 10
    ax = ch.plot_pull(z["CE"], torch.zeros(80, dtype=torch.long), lam=5.0)
    assert len(ax.lines) == 3
    fig = ch.plot_lambda_sweep([{"lam": 1.0, "acc": 0.8}, {"lam": 5.0, "acc": 0.9}], {"acc": "accuracy"},
                                reference={"CE": {"acc": 0.85}})
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2
    fig = ch.plot_lambda_sweep([{"lam": 1.0, **{k: 0.5 for k in "abcd"}}], {k: k for k in "abcd"})
    assert len(fig.axes) == 6 and sum(ax.axison for ax in fig.axes) == 4   # 3 per row, spare panels hidden
    with pytest.raises(ValueError, match="no OOD set"):
        ch.plot_score_histograms(z, ood, ["svhn"])
    with pytest.raises(ValueError, match="scores"):
        ch.plot_score_histograms(z, ood, ["digits"], scores=("ODIN",))
    with pytest.raises(ValueError, match="lack the key"):
        ch.plot_lambda_sweep([{"lam": 1.0}], {"acc": "accuracy"})
    plt.close("all")
