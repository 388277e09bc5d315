"""Tests of lsutils.als: the ALS loss (its value, its two defining properties on real gradients, its errors),
the trainer loss, the OOD-set builders, the OOD tables and the chapter's figures."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils import als  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests work on tiny tensors: one thread is faster, and immune to a busy machine's thread contention."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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
    return float((als.non_max_std(logits.double()) * (k - 1) / (1 - p.max(1).values)).mean())


# --------------------------------------------------------------------------------------------- the loss's value
def test_loss_equals_the_formula_on_random_logits():
    g = torch.Generator().manual_seed(0)
    for k in (2, 3, 10, 100):
        z = torch.randn(64, k, generator=g, dtype=torch.float64) * 3
        y = torch.randint(0, k, (64,), generator=g)
        for lam in (0.0, 0.5, 5.0):
            want = F.cross_entropy(z, y, reduction="none").numpy() + lam * _nonmax_std_numpy(z.numpy())
            got = als.als_loss(z, y, lam=lam, reduction="none").numpy()
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6 if k == 2 else 1e-12)


def test_lambda_zero_is_cross_entropy_and_reductions_agree():
    z, y = torch.randn(33, 7), torch.randint(0, 7, (33,))
    assert torch.allclose(als.als_loss(z, y, lam=0.0), F.cross_entropy(z, y))
    per = als.als_loss(z, y, lam=2.0, reduction="none")
    assert per.shape == (33,)
    assert torch.allclose(als.als_loss(z, y, lam=2.0), per.mean())
    assert torch.allclose(als.als_loss(z, y, lam=2.0, reduction="sum"), per.sum())
    assert als.ALS_DEFAULT_LAMBDA > 0
    assert torch.allclose(als.als_loss(z, y), als.als_loss(z, y, lam=als.ALS_DEFAULT_LAMBDA))


def test_regulariser_is_zero_for_equal_non_max_probabilities_whatever_the_max():
    for top in (0.5, 3.0, 30.0):  # p_max from 0.3 to 1 - 1e-13: the term never caps the maximum
        z = torch.tensor([[top, 0.0, 0.0, 0.0, 0.0]])
        assert float(als.non_max_std(z)) == 0.0
        assert torch.allclose(als.als_loss(z, torch.tensor([0]), lam=10.0), F.cross_entropy(z, torch.tensor([0])))


def test_gradients_are_finite_where_the_square_root_is_not_differentiable():
    near_one_hot = torch.tensor([[60.0, 1.0, 0.0, 0.0], [80.0, 0.5, 0.0, -40.0]])      # p_i down to 1e-52
    for z in (torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.tensor([[1.0, -1.0]]), torch.zeros(3, 5), near_one_hot,
              near_one_hot.double()):
        z = z.clone().requires_grad_(True)
        als.als_loss(z, torch.zeros(z.shape[0], dtype=torch.long), lam=5.0).backward()
        assert torch.isfinite(z.grad).all()


def test_gradient_norms_match_autograd_and_vanish_towards_one_hot():
    z = torch.tensor([[1.0, 0.5, 0.0, -0.3], [4.0, 1.0, 0.0, -0.3], [12.0, 1.0, 0.0, -0.3]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0])
    g = als.als_term_gradient_norm(z, y)
    for i in range(3):
        zi = z[i:i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(als.non_max_std(zi).sum(), zi)
        assert math.isclose(float(g["std"][i]), float(gi.norm()), rel_tol=1e-5)
        zi = z[i:i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(F.cross_entropy(zi, y[:1]), zi)
        assert math.isclose(float(g["ce"][i]), float(gi.norm()), rel_tol=1e-5)
    assert (g["std"].diff() < 0).all() and (g["ce"].diff() < 0).all() and (g["p_max"].diff() > 0).all()
    assert g["std"][2] < 1e-3 * g["std"][0]


# --------------------------------------------------------------------------------------------- defining properties
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


def test_property_1_optimising_als_equalises_the_non_max_probabilities():
    """Gradient descent on free logits: the larger λ, the more equal the K-1 non-maximal probabilities."""
    cvs = [_cv_nonmax(_optimise_free_logits(lambda z, y, lam=lam: als.als_loss(z, y, lam=lam, reduction="sum"))[0])
           for lam in (0.0, 5.0, 20.0)]
    assert cvs[0] > cvs[1] > cvs[2]
    assert cvs[2] < 0.6 * cvs[0]


def test_property_2_the_max_probability_is_not_capped_like_label_smoothing():
    """LS's optimum pins p_y at 1 - ε + ε/K = 0.91 (K = 10, ε = 0.1); ALS's keeps growing towards 1."""
    cap = 1 - 0.1 + 0.1 / 10
    z_ls, y = _optimise_free_logits(lambda z, y: F.cross_entropy(z, y, label_smoothing=0.1, reduction="sum"), 1000)
    z_als, _ = _optimise_free_logits(lambda z, y: als.als_loss(z, y, lam=5.0, reduction="sum"), 1000)
    p_ls = z_ls.softmax(1).gather(1, y[:, None])
    p_als = z_als.softmax(1).gather(1, y[:, None])
    assert torch.allclose(p_ls, torch.full_like(p_ls, cap), atol=2e-3)
    assert float(p_als.min()) > 0.99


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
        ls.fit(model, data.train.x, data.train.y, ls.build_loss(spec), epochs=8, batch_size=100, lr=3e-3,
               seed=0, device="cpu", progress=False)
        out[name] = ls.predict_logits(model, data.train.x)
    return out, data.train.y


def test_properties_hold_for_a_network_trained_on_real_data(trained_small):
    logits, y = trained_small
    # 1. the non-maximal probabilities are more equal, the more so the larger λ
    stds = {k: float(als.non_max_std(z).mean()) for k, z in logits.items()}
    assert stds["als20"] < stds["als5"] < stds["ce"]
    assert _cv_nonmax(logits["als20"]) < _cv_nonmax(logits["ce"])
    # 2. the maximum probability is not held near LS's cap 0.91: many more training examples go past it
    cap = 1 - 0.1 + 0.1 / 10
    frac = {k: float((z.softmax(1).max(1).values > cap + 0.04).float().mean()) for k, z in logits.items()}
    assert frac["als5"] > 2 * frac["ls"]
    assert float(logits["als5"].softmax(1).max(1).values.mean()) > float(logits["ls"].softmax(1).max(1).values.mean())


# --------------------------------------------------------------------------------------------- trainer + errors
def test_trainer_loss_is_registered_and_matches_als_loss():
    assert "als" in ls.available_losses()
    z, y = torch.randn(20, 10), torch.randint(0, 10, (20,))
    assert torch.allclose(ls.build_loss({"name": "als", "lam": 3.0})(z, y), als.als_loss(z, y, lam=3.0))
    assert torch.allclose(ls.build_loss({"name": "als"})(z, y), als.als_loss(z, y))
    with pytest.raises(ValueError, match="lam"):
        ls.build_loss({"name": "als", "lam": -1.0})
    with pytest.raises(TypeError, match="hyper-parameters"):
        ls.build_loss({"name": "als", "lambda": 1.0})


@pytest.mark.parametrize("lam, exc", [(-0.1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
                                      ("1", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_lambda(lam, exc):
    with pytest.raises(exc, match="lam"):
        als.als_loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), lam=lam)


def test_bad_inputs_name_the_argument():
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(TypeError, match="logits"):
        als.als_loss(z.numpy(), y)
    with pytest.raises(TypeError, match="logits"):
        als.als_loss(z.long(), y)
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        als.als_loss(z[0], y)
    with pytest.raises(ValueError, match="K = 2"):
        als.als_loss(z[:, :1], y)
    with pytest.raises(ValueError, match="NaN"):
        als.als_loss(torch.full((4, 3), float("nan")), y)
    with pytest.raises(TypeError, match="target"):
        als.als_loss(z, y.float())
    with pytest.raises(ValueError, match="target"):
        als.als_loss(z, y[:3])
    with pytest.raises(ValueError, match=r"class index 3"):
        als.als_loss(z, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="reduction"):
        als.als_loss(z, y, reduction="avg")
    with pytest.raises(ValueError, match="logits"):
        als.non_max_std(torch.randn(3))


# --------------------------------------------------------------------------------------------- OOD sets
def test_noise_images_are_seeded_normalised_and_checked():
    a = als.noise_images(500, (1, 28, 28), mean=0.286, std=0.353, seed=1)
    assert a.shape == (500, 1, 28, 28) and a.dtype == torch.float32
    assert torch.equal(a, als.noise_images(500, (1, 28, 28), mean=0.286, std=0.353, seed=1))
    assert not torch.equal(a, als.noise_images(500, (1, 28, 28), mean=0.286, std=0.353, seed=2))
    pixels = a * 0.353 + 0.286                         # back to [0, 1] units
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6
    u = als.noise_images(200, (3, 8, 8), mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), kind="uniform") * 0.2
    assert abs(float((u[:, 0] + 0.5).mean()) - 0.5) < 0.02
    with pytest.raises(ValueError, match="kind"):
        als.noise_images(2, (1, 4, 4), 0.5, 0.2, kind="pink")
    with pytest.raises(ValueError, match="one value per channel"):
        als.noise_images(2, (3, 4, 4), 0.5, 0.2)
    with pytest.raises(ValueError, match="shape"):
        als.noise_images(2, (4, 4), 0.5, 0.2)
    with pytest.raises(ValueError, match="std"):
        als.noise_images(2, (1, 4, 4), 0.5, 0.0)
    with pytest.raises(ValueError, match="n must be"):
        als.noise_images(0, (1, 4, 4), 0.5, 0.2)


def test_transformed_images_move_pixels_only(fashion_mnist_small):
    x = fashion_mnist_small.test.x[:64]
    up = als.transformed_images(x, "upside-down")
    assert torch.equal(als.transformed_images(up, "upside-down"), x)
    rot = x
    for _ in range(4):
        rot = als.transformed_images(rot, "rotated")
    assert torch.equal(rot, x)
    assert not torch.equal(als.transformed_images(x, "rotated"), x)
    sh = als.transformed_images(x, "patch-shuffled", seed=3)
    assert sh.shape == x.shape
    assert torch.equal(sh.flatten(1).sort(1).values, x.flatten(1).sort(1).values)   # same pixels per image
    assert not torch.equal(sh, x)
    assert torch.equal(sh, als.transformed_images(x, "patch-shuffled", seed=3))
    # every 7×7 patch of the result is one of the image's own patches
    patches = lambda t: t.unfold(2, 7, 7).unfold(3, 7, 7).reshape(t.shape[0], -1, 49)  # noqa: E731
    p_in, p_out = patches(x), patches(sh)
    for i in range(4):
        assert sorted(map(tuple, p_in[i].tolist())) == sorted(map(tuple, p_out[i].tolist()))
    with pytest.raises(ValueError, match="kind"):
        als.transformed_images(x, "mirrored")
    with pytest.raises(ValueError, match="divisible"):
        als.transformed_images(x, "patch-shuffled", grid=5)
    with pytest.raises(ValueError, match="square"):
        als.transformed_images(torch.zeros(1, 1, 4, 6), "rotated")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        als.transformed_images(x[0], "rotated")


def test_digits_like_any_dataset():
    grey = als.digits_ood_like((1, 28, 28), ls.FASHION_MNIST_MEAN, ls.FASHION_MNIST_STD)
    assert torch.allclose(grey, ls.load_digits_ood(), atol=1e-6)
    colour = als.digits_ood_like((3, 32, 32), ls.CIFAR10_MEAN, ls.CIFAR10_STD)
    assert colour.shape == (1797, 3, 32, 32)
    back = colour * torch.tensor(ls.CIFAR10_STD).view(1, 3, 1, 1) + torch.tensor(ls.CIFAR10_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(back[:, 0], back[:, 2], atol=1e-5)            # grey: the channels agree in [0, 1] units
    with pytest.raises(ValueError, match="H == W"):
        als.digits_ood_like((1, 28, 30), 0.5, 0.2)


def test_build_ood_sets(fashion_mnist_small):
    sets = als.build_ood_sets(fashion_mnist_small, n=100, seed=0)
    assert list(sets) == ["digits", "noise", "upside-down", "rotated", "patch-shuffled"]
    assert all(v.shape[1:] == (1, 28, 28) for v in sets.values())
    assert sets["digits"].shape[0] == 1797 and sets["noise"].shape[0] == 100 and sets["rotated"].shape[0] == 100
    assert all(als.OOD_SETS[k][0] in ("far", "near") for k in sets)
    again = als.build_ood_sets(fashion_mnist_small, n=100, seed=0)
    assert all(torch.equal(sets[k], again[k]) for k in sets)
    with pytest.raises(ValueError, match="download=True"):
        als.build_ood_sets(fashion_mnist_small, n=10, download=True)
    with pytest.raises(TypeError, match="ImageDataset"):
        als.build_ood_sets(torch.zeros(3))


def test_build_ood_sets_leaves_out_what_cannot_be_downloaded(monkeypatch):
    split = ls.Split(torch.zeros(20, 3, 32, 32), torch.arange(20) % 10)
    data = ls.ImageDataset("cifar10", ls.CIFAR10_CLASSES, split, split, split, ls.CIFAR10_MEAN, ls.CIFAR10_STD)

    def fake(name, root, n, mean, std):
        if name == "svhn":
            raise OSError("no network")
        return torch.zeros(n, 3, 32, 32)

    monkeypatch.setattr(als, "_download_ood", fake)
    with pytest.warns(RuntimeWarning, match="svhn"):
        sets = als.build_ood_sets(data, n=10)
    assert "svhn" not in sets and sets["cifar100"].shape == (10, 3, 32, 32) and sets["digits"].shape[1] == 3


# --------------------------------------------------------------------------------------------- tables and summaries
def test_ood_rows_and_table():
    g = torch.Generator().manual_seed(0)
    z_id = torch.randn(300, 5, generator=g) + 6 * F.one_hot(torch.arange(300) % 5, 5)   # confident
    z_far = torch.randn(200, 5, generator=g)                                             # flat
    rows = []
    for seed in (0, 1):
        rows += als.ood_rows(z_id, {"noise": z_far, "digits": z_id[:100]}, model="CE", seed=seed)
        rows += als.ood_rows(z_id, {"noise": z_far, "digits": z_id[:100]}, model="ALS", seed=seed)
    r = next(r for r in rows if r["ood"] == "noise" and r["score"] == "MSP")
    assert r["auroc"] > 0.99 and r["fpr95"] < 0.05 and r["kind"] == "far" and r["model"] == "CE"
    d = next(r for r in rows if r["ood"] == "digits" and r["score"] == "MaxLogit")
    assert 0.35 < d["auroc"] < 0.65                                     # OOD = a copy of ID: chance
    table = als.ood_table(rows, metric="auroc")
    assert list(table.columns) == ["CE", "ALS"]
    assert table.index.tolist()[:3] == [("noise", "MSP"), ("noise", "MaxLogit"), ("noise", "Energy")]
    assert table.loc[("noise", "MSP"), "CE"] == f"{100 * r['auroc']:.1f} ± 0.0"      # same scores for both seeds
    assert math.isclose(als.mean_metric(rows, model="CE", ood="noise", score="MSP"), r["auroc"])
    assert math.isclose(als.mean_metric(rows, "fpr95", kind="far", score="MSP"),
                        np.mean([x["fpr95"] for x in rows if x["kind"] == "far" and x["score"] == "MSP"]))
    with pytest.raises(ValueError, match="no row matches"):
        als.mean_metric(rows, model="LS")
    with pytest.raises(ValueError, match="metric"):
        als.ood_table(rows, metric="accuracy")
    with pytest.raises(ValueError, match="classes"):
        als.ood_rows(z_id, {"noise": torch.randn(4, 3)})
    with pytest.raises(TypeError, match="mapping"):
        als.ood_rows(z_id, z_far)


def test_model_outputs():
    model = ls.build_model("mlp", 4, 1, width=8, image_size=6)
    z_id, z_ood = als.model_outputs(model, torch.randn(5, 1, 6, 6), {"a": torch.randn(3, 1, 6, 6)})
    assert z_id.shape == (5, 4) and z_ood["a"].shape == (3, 4)
    split = ls.Split(torch.randn(6, 1, 6, 6), torch.arange(6) % 4)
    data = ls.ImageDataset("fashion_mnist", ("a", "b", "c", "d"), split, split, split, (0.0,), (1.0,))
    run = ls.TrainedRun(None, model, {"val_acc": [0.5, 0.75]}, "key", True, 0.0)
    rows, summary, (z, zo) = als.evaluate_ood_run(run, data, {"a": torch.randn(3, 1, 6, 6)}, model="X", seed=1)
    assert len(rows) == 3 and summary["val_acc"] == 0.75 and summary["model"] == "X" and "p_max" in summary
    assert torch.equal(z, ls.predict_logits(model, split.x))
    with pytest.raises(TypeError, match="mapping"):
        als.model_outputs(model, torch.randn(5, 1, 6, 6), [torch.randn(3, 1, 6, 6)])


def test_summaries():
    z = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    assert torch.allclose(als.sorted_mean_probabilities(z).sum(), torch.tensor(1.0))
    assert (als.sorted_mean_probabilities(torch.randn(50, 6)).diff() <= 0).all()
    s = als.logit_summary(torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 5.0]]), torch.tensor([0, 1]))
    assert s["acc"] == 0.5 and s["max_logit"] == 4.0
    assert math.isclose(s["logit_norm"], (math.sqrt(10) + 5) / 2, rel_tol=1e-9)
    assert s["tail_decades"] > 0 and all(isinstance(v, float) for v in s.values())
    with pytest.raises(ValueError, match="labels"):
        als.logit_summary(torch.randn(3, 4), torch.tensor([0, 1]))


def test_select_lambda_and_settings():
    rows = [{"lam": 1.0, "val_acc": 0.885}, {"lam": 5.0, "val_acc": 0.8810}, {"lam": 20.0, "val_acc": 0.85}]
    assert als.select_lambda(rows, n_val=5000) == 5.0                  # SE = 0.0045: 0.881 is as good as 0.885
    assert als.select_lambda(rows, n_val=50_000) == 1.0                # SE = 0.0014: now it is not
    assert als.select_lambda(rows, n_val=50) == 20.0                   # SE = 0.045: all three tie
    with pytest.raises(ValueError, match="val_acc"):
        als.select_lambda([{"lam": 1.0}], n_val=10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        als.select_lambda([{"lam": 1.0, "val_acc": 88.5}], n_val=10)
    with pytest.raises(TypeError, match="n_val"):
        als.select_lambda(rows, n_val=0.5)
    for name in ("smoke", "cpu"):
        s = als.als_settings(ls.get_profile(name))
        assert als.ALS_DEFAULT_LAMBDA in s["lam_grid"] and 0 < s["epsilon"] < 1 and s["seeds"] == ls.get_profile(name).seeds
        assert s["n_ood"] <= (ls.get_profile(name).n_test or 10_000)
    with pytest.raises(TypeError, match="Profile"):
        als.als_settings("cpu")


# --------------------------------------------------------------------------------------------- figures
def test_figures_draw_what_they_say():
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(0)
    z = {m: torch.randn(80, 10, generator=g) * s for m, s in (("CE", 5.0), ("LS", 1.0), ("ALS", 5.0))}
    ood = {m: {"digits": torch.randn(30, 10, generator=g), "noise": torch.randn(30, 10, generator=g)} for m in z}
    fig = als.plot_score_histograms(z, ood, ["digits", "noise"], scores=("MSP", "MaxLogit"))
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "CE: MSP"
    assert fig.axes[3].get_xlim() == fig.axes[5].get_xlim()              # one row shares its x axis
    ax = als.plot_logit_norms(z)
    assert [t.get_text().split(" ")[0] for t in ax.get_legend().texts] == ["CE", "LS", "ALS"]
    ax = als.plot_sorted_probabilities(z)
    assert len(ax.lines) == 3 and len(ax.lines[0].get_xdata()) == 10
    ax = als.plot_pull(z["CE"], torch.zeros(80, dtype=torch.long), lam=5.0)
    assert len(ax.lines) == 3
    fig = als.plot_lambda_sweep([{"lam": 1.0, "acc": 0.8}, {"lam": 5.0, "acc": 0.9}], {"acc": "accuracy"},
                                reference={"CE": {"acc": 0.85}})
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2
    fig = als.plot_lambda_sweep([{"lam": 1.0, **{k: 0.5 for k in "abcd"}}], {k: k for k in "abcd"})
    assert len(fig.axes) == 6 and sum(ax.axison for ax in fig.axes) == 4   # 3 per row, spare panels hidden
    with pytest.raises(ValueError, match="no OOD set"):
        als.plot_score_histograms(z, ood, ["svhn"])
    with pytest.raises(ValueError, match="scores"):
        als.plot_score_histograms(z, ood, ["digits"], scores=("ODIN",))
    with pytest.raises(ValueError, match="lack the key"):
        als.plot_lambda_sweep([{"lam": 1.0}], {"acc": "accuracy"})
    plt.close("all")
