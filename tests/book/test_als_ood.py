"""Tests of lsutils.book.als_ood (chapter 6): settings, OOD sets, measurements, paired effects and figures."""
from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.book import als_ood as ch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------- settings and data
def test_settings_split_the_classes():
    for name in ("smoke", "cpu", "gpu"):
        prof = ls.get_profile(name) if name != "gpu" else ls.config._table("cpu")["gpu"]
        s = ch.settings(prof)
        assert set(s["held_out"]) | set(s["id_classes"]) == set(range(10))
        assert not set(s["held_out"]) & set(s["id_classes"]) and len(s["id_classes"]) == 8
        assert s["seeds"] == prof.seeds and s["epsilons"][0] == 0.0 and 0 < s["ls_epsilon"] < 1
        assert list(s["lambdas"]) == sorted(s["lambdas"]) and min(s["lambdas"]) > 0
    assert ch.settings(ls.get_profile("smoke"))["n_noise"] < ch.settings(ls.get_profile("cpu"))["n_noise"]
    with pytest.raises(TypeError, match="Profile"):
        ch.settings("cpu")
    with pytest.raises(ValueError, match="held-out"):
        ch.settings(ls.get_profile("smoke").__class__(**{**ls.get_profile("smoke").__dict__, "dataset": "mnist"}))


def test_noise_images_are_seeded_normalised_and_checked():
    a = ch.noise_images(500, (1, 28, 28), mean=0.286, std=0.353, seed=1)
    assert a.shape == (500, 1, 28, 28) and a.dtype == torch.float32
    assert torch.equal(a, ch.noise_images(500, (1, 28, 28), mean=0.286, std=0.353, seed=1))
    assert not torch.equal(a, ch.noise_images(500, (1, 28, 28), mean=0.286, std=0.353, seed=2))
    pixels = a * 0.353 + 0.286                         # back to [0, 1] units
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6
    assert 0.25 < float(pixels.mean()) < 0.35         # the ID pixels' mean 0.286, raised by clipping at 0
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


def test_digits_like_any_dataset():
    grey = ch.digits_ood_like((1, 28, 28), ls.data.FASHION_MNIST_MEAN, ls.data.FASHION_MNIST_STD)
    assert torch.allclose(grey, ls.data.load_digits_ood(), atol=1e-6)
    colour = ch.digits_ood_like((3, 32, 32), ls.data.CIFAR10_MEAN, ls.data.CIFAR10_STD)
    assert colour.shape == (1797, 3, 32, 32)
    std, mean = torch.tensor(ls.data.CIFAR10_STD).view(1, 3, 1, 1), torch.tensor(ls.data.CIFAR10_MEAN).view(1, 3, 1, 1)
    back = colour * std + mean
    assert torch.allclose(back[:, 0], back[:, 2], atol=1e-5)            # grey: the channels agree in [0, 1] units
    with pytest.raises(ValueError, match="H == W"):
        ch.digits_ood_like((1, 28, 30), 0.5, 0.2)


def test_ood_sets_hold_the_held_out_classes(fashion_mnist_root):
    prof = ls.get_profile("smoke")
    sets = ch.ood_sets(prof, n_noise=64, root=fashion_mnist_root)
    assert list(sets) == ["held-out", "digits", "noise"] and set(sets) == set(ch.OOD_KINDS)
    full = ls.load_dataset("fashion_mnist", n_train=prof.n_train, n_val=prof.n_val, root=fashion_mnist_root)
    held = full.test.x[torch.isin(full.test.y, torch.tensor(ch.HELD_OUT["fashion_mnist"]))]
    assert sets["held-out"].shape[1:] == (1, 28, 28) and len(sets["held-out"]) == prof.n_test
    # every held-out image is a test image of a held-out class, and no image of a trained class is among them
    pool = {tuple(x.flatten()[::7].tolist()) for x in held}
    assert all(tuple(x.flatten()[::7].tolist()) in pool for x in sets["held-out"][:50])
    assert sets["digits"].shape == (1797, 1, 28, 28) and sets["noise"].shape == (64, 1, 28, 28)
    assert torch.equal(sets["noise"], ch.ood_sets(prof, n_noise=64, root=fashion_mnist_root)["noise"])


# --------------------------------------------------------------------------------------------- measurements
def test_tail_summary_measures_shape_mass_and_errors():
    flat = torch.tensor([[5.0, 0.0, 0.0, 0.0]])
    s = ch.tail_summary(flat, torch.tensor([0]))
    assert s["tail_std"] < 1e-12 and s["non_max_std"] == 0.0 and s["acc"] == 1.0 and s["n_err"] == 0
    assert math.isnan(s["err_true_share"]) and math.isnan(s["err_runner_up"])
    one = ch.tail_summary(torch.tensor([[5.0, 2.0, -50.0, -50.0]]), torch.tensor([0]))
    assert math.isclose(one["tail_std"], math.sqrt(2) / 3, rel_tol=1e-6)          # sqrt(K-2)/(K-1), K = 4
    # the ALS term = tail mass × tail shape, on every row
    z = torch.randn(20, 6, generator=torch.Generator().manual_seed(0)) * 3
    for row in z:
        r = ch.tail_summary(row[None], torch.tensor([0]))
        p = row.double().softmax(0)
        assert math.isclose(r["non_max_std"], (1 - float(p.max())) * r["tail_std"], rel_tol=1e-9, abs_tol=1e-12)
    # errors: the true class's share of the tail, and whether it is the runner-up
    z = torch.tensor([[0.0, 3.0, 1.0, 1.0], [0.0, 3.0, 2.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    e = ch.tail_summary(z, torch.tensor([0, 2, 0]))
    p0 = z[0].double().softmax(0)
    assert e["n_err"] == 2 and math.isclose(e["acc"], 1 / 3)
    assert e["err_runner_up"] == 0.5                                               # row 1: yes; row 0: no
    share0 = float(p0[0] / (1 - p0[1]))
    p1 = z[1].double().softmax(0)
    assert math.isclose(e["err_true_share"], (share0 + float(p1[2] / (1 - p1[1]))) / 2, rel_tol=1e-9)
    with pytest.raises(ValueError, match="labels"):
        ch.tail_summary(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="finite"):
        ch.tail_summary(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))


def test_ood_rows_grade_and_state_chance():
    g = torch.Generator().manual_seed(0)
    z_id = torch.randn(300, 5, generator=g) + 8 * F.one_hot(torch.arange(300) % 5, 5)   # confident
    z_flat = torch.randn(100, 5, generator=g) * 0.1                                     # flat: clearly OOD
    rows = ch.ood_rows(z_id, {"noise": z_flat, "held-out": z_id[:100].clone()}, model="CE", seed=3)
    assert len(rows) == 6 and {r["score"] for r in rows} == set(ch.SCORES)
    sep = [r for r in rows if r["ood"] == "noise"]
    assert all(r["auroc"] == 1.0 and r["fpr95"] == 0.0 and r["kind"] == "noise" for r in sep)
    same = next(r for r in rows if r["ood"] == "held-out" and r["score"] == "MaxLogit")
    assert 0.4 < same["auroc"] < 0.6 and same["kind"] == "near" and same["model"] == "CE" and same["seed"] == 3
    assert same["aupr_in_chance"] == 0.75 and same["aupr_out_chance"] == 0.25
    assert abs(same["aupr_in"] - same["aupr_in_chance"]) < 0.1                          # a copy of ID: chance
    with pytest.raises(ValueError, match="classes"):
        ch.ood_rows(z_id, {"noise": torch.randn(4, 3)})
    with pytest.raises(TypeError, match="mapping"):
        ch.ood_rows(z_id, z_flat)


def test_score_run_on_a_tiny_model():
    torch.manual_seed(0)
    model = ls.build_model("mlp", 4, 1, width=8, image_size=6)
    split = ls.data.Split(torch.randn(12, 1, 6, 6), torch.arange(12) % 4)
    data = ls.data.ImageDataset("fashion_mnist", ("a", "b", "c", "d"), split, split, split, (0.0,), (1.0,))
    run = ls.train.TrainedRun(None, model, {"train_acc": [0.5, 0.9]}, "key", True, 0.0)
    rows, summary, logits = ch.score_run(run, data, {"noise": torch.randn(5, 1, 6, 6)}, model="X", lam=2.0)
    assert len(rows) == 3 and rows[0]["model"] == "X" and rows[0]["n_id"] == 12 and rows[0]["n_ood"] == 5
    assert summary["train_acc"] == 0.9 and summary["model"] == "X" and summary["lam"] == 2.0
    assert "acc" not in summary and 0 <= summary["val_acc"] <= 1 and summary["test_acc"] == summary["val_acc"]
    assert set(logits) == {"val", "test", "noise"} and torch.equal(logits["test"], ls.predict_logits(model, split.x))
    with pytest.raises(TypeError, match="TrainedRun"):
        ch.score_run(model, data, {})
    with pytest.raises(TypeError, match="mapping"):
        ch.score_run(run, data, [torch.randn(5, 1, 6, 6)])


def test_select_lambda_uses_seed_means_and_one_standard_error():
    rows = [{"lam": lam, "seed": s, "val_acc": a + d} for lam, a in ((0.0, 0.885), (5.0, 0.881), (20.0, 0.85))
            for s, d in ((0, -0.002), (1, 0.002))]
    assert ch.select_lambda(rows, n_val=5000) == 5.0                  # SE = 0.0045: 0.881 is as good as 0.885
    assert ch.select_lambda(rows, n_val=50_000) == 0.0                # SE = 0.0014: now it is not
    assert ch.select_lambda(rows, n_val=50) == 20.0                   # SE = 0.045: all three tie
    with pytest.raises(ValueError, match="val_acc"):
        ch.select_lambda([{"lam": 1.0}], n_val=10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ch.select_lambda([{"lam": 1.0, "val_acc": 88.5}], n_val=10)
    with pytest.raises(ValueError, match="non-empty"):
        ch.select_lambda([], n_val=10)
    with pytest.raises(TypeError, match="n_val"):
        ch.select_lambda(rows, n_val=0.5)


def test_misclassified_pull_sees_the_term_fight_cross_entropy():
    right = torch.tensor([[3.0, 1.0, 0.0, 0.0]])
    r = ch.misclassified_pull(right, torch.tensor([0]), lam=10.0)
    assert r["n_err"] == 0 and math.isnan(r["net_against"])
    wrong = torch.tensor([[0.0, 3.0, 2.0, -1.0, -1.0]])                # true class 2 is the runner-up
    y = torch.tensor([2])
    assert ch.misclassified_pull(wrong, y, lam=0.0)["net_against"] == 0.0          # CE alone always helps
    small, big = ch.misclassified_pull(wrong, y, lam=1.0), ch.misclassified_pull(wrong, y, lam=50.0)
    assert small["term_against"] == big["term_against"] == 1.0 and small["true_above_mean"] == 1.0
    assert small["net_against"] == 0.0 and big["net_against"] == 1.0
    # the margin push agrees with a finite difference of the loss along e_y - e_k
    z = wrong.double()
    d = torch.zeros_like(z)
    d[0, 2], d[0, 1] = 1.0, -1.0
    loss = lambda t: float(ls.als_loss(t, y, lam=50.0))  # noqa: E731
    slope = (loss(z + 1e-6 * d) - loss(z - 1e-6 * d)) / 2e-6
    assert slope > 0                                                              # descent lowers z_y - z_k
    # a true class below the tail's mean: the term would raise it, yet still rewards the wrong winner more
    lowest = torch.tensor([[0.0, 3.0, 2.0, 1.0, -4.0]])
    low = ch.misclassified_pull(lowest, torch.tensor([4]), lam=50.0)
    assert low["true_above_mean"] == 0.0 and low["term_against"] == 1.0
    zl = lowest.double().requires_grad_(True)
    (g,) = torch.autograd.grad(ls.losses.non_max_std(zl).sum(), zl)
    assert g[0, 4] < 0 and g[0, 1] < g[0, 4]          # descent raises z_y, and raises the winner z_k faster
    with pytest.raises(ValueError, match="lam"):
        ch.misclassified_pull(wrong, y, lam=-1.0)


def _fake_rows():
    rows = []
    for seed, shift in enumerate((0.01, 0.02, 0.03)):
        for arm, base in (("CE", 0.80), ("LS", 0.75), ("ALS", 0.80)):
            for ood in ("held-out", "digits"):
                for score in ch.SCORES:
                    rows.append({"model": arm, "seed": seed, "ood": ood, "score": score,
                                 "auroc": base + shift + (0.001 * seed if arm == "ALS" else 0.0)})
    return rows


def test_paired_effects_pairs_by_seed():
    eff = ch.paired_effects(_fake_rows(), [("LS", "CE"), ("ALS", "CE")], sets=("held-out", "digits"))
    assert len(eff) == 2 * 2 * 3 and list(eff.comparison.unique()) == ["LS − CE", "ALS − CE"]
    ls_ce = eff[eff.comparison == "LS − CE"]
    assert all(math.isclose(m, -5.0) for m in ls_ce["mean"]) and set(ls_ce.verdict) == {"lower"}
    assert (ls_ce.p < 1e-6).all()                                      # the same −5 points on every seed
    als_ce = eff[eff.comparison == "ALS − CE"].iloc[0]
    assert math.isclose(als_ce["mean"], 0.1) and als_ce["n"] == 3 and als_ce["ci_low"] < 0.1 < als_ce["ci_high"]
    assert als_ce["text"].startswith("+0.1 ± 0.1")
    with pytest.raises(TypeError, match="pairs"):
        ch.paired_effects(_fake_rows(), "LS-CE", sets=("digits",))
    with pytest.raises(ValueError, match="no rows"):
        ch.paired_effects(_fake_rows(), [("LS", "CE")], sets=("svhn",))
    with pytest.raises(ValueError, match="column"):
        ch.paired_effects(_fake_rows(), [("LS", "CE")], sets=("digits",), arm="loss")


def test_wide_metric_and_fmt_p():
    wide = ch.wide_metric(_fake_rows(), ["model", "seed"])
    assert len(wide) == 9 and "held-out:MaxLogit" in wide.columns
    row = wide[(wide.model == "LS") & (wide.seed == 1)].iloc[0]
    assert math.isclose(row["digits:MSP"], 77.0)                        # percent by default
    assert math.isclose(ch.wide_metric(_fake_rows(), ["model", "seed"], scale=1.0).loc[0, "digits:MSP"], 0.81)
    with pytest.raises(ValueError, match="column"):
        ch.wide_metric(_fake_rows(), ["lam"])
    assert ch.fmt_p(1e-5) == "p < 0.001" and ch.fmt_p(0.05) == "p = 0.05"
    with pytest.raises(ValueError, match="probability"):
        ch.fmt_p(1.5)


# --------------------------------------------------------------------------------------------- figures
def test_figures_draw_what_they_say():
    import matplotlib.pyplot as plt

    rows = pd.DataFrame([{"lam": lam, "seed": s, "a": lam + s, "b": 2.0, "c": 1.0}
                         for lam in (0.0, 10.0, 20.0) for s in (0, 1)])
    fig = ch.plot_sweep(rows, x="lam", panels={"a|b": "two lines", "c": "one"}, zero_label="CE",
                        reference=pd.DataFrame({"a": [4.0, 6.0], "b": [1.0, 1.0], "c": [0.5, 0.7]}), mark=10.0,
                        guides={"c": ("cap", {10.0: 1.5, 20.0: 1.2})}, labels={"a": "first"})
    ax0, ax1 = fig.axes[:2]
    assert [t.get_text() for t in ax0.get_xticklabels()] == ["CE", "10", "20"]
    means = ax0.containers[0].lines[0].get_ydata()                     # errorbar: the line of means
    assert list(means) == [0.5, 10.5, 20.5]
    assert "first" in [t.get_text() for t in ax0.get_legend().texts]
    assert len(ax1.patches) == 1 and len(ax0.patches) == 0             # sd band only in single-line panels
    assert any(list(line.get_ydata()) == [1.5, 1.2] for line in ax1.lines)
    with pytest.raises(ValueError, match="column"):
        ch.plot_sweep(rows, x="lam", panels={"zzz": "missing"})

    eff = ch.paired_effects(_fake_rows(), [("LS", "CE"), ("ALS", "LS")], sets=("held-out", "digits"))
    fig = ch.plot_paired_effects(eff)
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "LS − CE"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][0] == "held-out: MSP"
    with pytest.raises(ValueError, match="paired_effects"):
        ch.plot_paired_effects(pd.DataFrame({"x": [1]}))

    g = torch.Generator().manual_seed(0)
    logits = {m: {"test": torch.randn(80, 8, generator=g) * sc, "held-out": torch.randn(30, 8, generator=g)}
              for m, sc in (("CE", 5.0), ("LS", 1.0))}
    fig = ch.plot_score_histograms(logits, ["held-out"], scores=("MSP", "MaxLogit"))
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "CE: MSP"
    assert fig.axes[2].get_xlim() == fig.axes[3].get_xlim()            # one row shares its x axis
    with pytest.raises(ValueError, match="no entry"):
        ch.plot_score_histograms(logits, ["digits"])
    with pytest.raises(ValueError, match="scores"):
        ch.plot_score_histograms(logits, ["held-out"], scores=("ODIN",))

    fig = ch.plot_ood_examples({"ID test": torch.zeros(3, 1, 6, 6), "noise": torch.zeros(9, 1, 6, 6)}, 0.5, 0.25, n=4)
    assert len(fig.axes) == 8 and fig.axes[4].get_ylabel() == "noise"
    with pytest.raises(ValueError, match="shape"):
        ch.plot_ood_examples({"a": torch.zeros(3, 1, 6, 6), "b": torch.zeros(3, 6, 6)}, 0.5, 0.25)

    ax = ch.plot_pull(logits["CE"]["test"], torch.zeros(80, dtype=torch.long), lam=5.0)
    assert len(ax.lines) == 3
    plt.close("all")
