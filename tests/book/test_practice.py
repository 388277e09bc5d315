"""Tests of lsutils.book.practice (chapter 7)."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.book import practice as ch  # noqa: E402


def test_schedule_through_registry_and_trainer_is_per_step(fashion_mnist_small):
    ds = fashion_mnist_small
    x, y = ds.train.x[:256], ds.train.y[:256]
    loss = ls.losses.build_loss(ch.schedule_spec(0.2, "cosine"), ls.losses.LossContext(train_x=x, train_y=y))
    assert isinstance(loss, ls.losses.ScheduledSmoothingLoss) and loss.n_train == 256
    model = ls.build_model("mlp", num_classes=10, in_channels=1, width=16, image_size=28)
    ls.fit(model, x, y, loss, epochs=2, batch_size=64, lr=1e-3, device="cpu", progress=False)
    assert len(loss.trace) == 8  # 2 epochs × 4 steps, one ε per step
    expected = [ls.losses.epsilon_at(k / 8, 0.2, "cosine") for k in range(8)]
    assert loss.trace == pytest.approx(expected)
    # without a context the schedule can only move per epoch
    bare = ls.losses.build_loss(ch.schedule_spec(0.2, "linear"))
    assert bare.n_train is None


def test_scheduled_loss_errors():
    loss = ls.losses.ScheduledSmoothingLoss(0.1, "linear", n_train=10)
    with pytest.raises(RuntimeError, match="start_epoch"):
        loss(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="epoch"):
        loss.start_epoch(3, 3)
    with pytest.raises(TypeError, match="epochs"):
        loss.start_epoch(0, 2.0)
    with pytest.raises(ValueError, match="n_train"):
        ls.losses.ScheduledSmoothingLoss(0.1, "linear", n_train=0)
    with pytest.raises(ValueError, match="granularity"):
        ls.losses.ScheduledSmoothingLoss(0.1, "linear", granularity="batch")
    with pytest.raises(ValueError, match="epsilon"):
        ch.schedule_spec(1.2, "linear")
    with pytest.raises(ValueError, match="schedule"):
        ch.schedule_spec(0.1, "exp")
    with pytest.raises(TypeError, match="unexpected"):
        ch.schedule_spec(0.1, "linear", warmup=3)
    with pytest.raises(TypeError, match="bad hyper-parameters"):
        ls.losses.build_loss({"name": "ls_schedule", "epsilon": 0.1, "decay": 2})


def test_online_ls_errors():
    with pytest.raises(ValueError, match="alpha"):
        ls.losses.OnlineLabelSmoothingLoss(alpha=1.5)
    with pytest.raises(ValueError, match="init must be one of"):
        ls.losses.OnlineLabelSmoothingLoss(init="eye")
    with pytest.raises(TypeError, match="unexpected"):
        ch.online_ls_spec(0.5, momentum=0.9)
    loss = ls.losses.OnlineLabelSmoothingLoss()
    loss.start_epoch(0, 1)
    loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="3"):
        loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="target must have shape"):
        loss(torch.randn(4, 3), torch.tensor([0, 1]))


def test_online_ls_trains_on_real_data(fashion_mnist_small):
    ds = fashion_mnist_small
    loss = ls.losses.build_loss(ch.online_ls_spec(0.5))
    model = ls.build_model("mlp", num_classes=10, in_channels=1, width=32, image_size=28)
    hist = ls.fit(model, ds.train.x, ds.train.y, loss, epochs=3, batch_size=100, lr=3e-3, device="cpu",
                  progress=False, val=ds.val)
    assert len(loss.history) == 3  # S⁰ (zeros) and the two learned matrices
    assert torch.count_nonzero(loss.history[0]) == 0
    for S in loss.history[1:]:
        assert torch.allclose(S.sum(1), torch.ones(10), atol=1e-5)
        # each class's soft target peaks at itself (a mean of vectors that all peak there; float32 near-ties aside)
        assert (S.diagonal() >= S.max(1).values - 1e-4).all()
    # the model learns: well above chance, and confusable classes share mass (shirt ↔ T-shirt, coat, pullover)
    assert hist["val_acc"][-1] > 0.6
    S = loss.history[-1]
    assert S[6, [0, 2, 4]].mean() > 1.5 * S[6, [1, 5, 7, 8, 9]].mean()


def test_describe_loss_and_specs():
    assert ch.describe_loss({"name": "ce"}) == {"method": "CE", "epsilon": 0.0}
    assert ch.describe_loss(ch.schedule_spec(0.1, "linear"))["method"] == "LS linear→0"
    assert ch.describe_loss(ch.schedule_spec(0.1, "linear", granularity="epoch"))["method"] == "LS linear→0 (per epoch)"
    assert ch.describe_loss(ch.schedule_spec(0.1, "constant"))["method"] == "LS"
    assert ch.describe_loss(ch.online_ls_spec())["method"] == "OLS"
    assert ch.describe_loss({"name": "als", "lam": 0.1})["method"] == "als"
    with pytest.raises(TypeError):
        ch.describe_loss("ce")
    # specs hash as run specs
    for spec in (ch.schedule_spec(0.1, "cosine"), ch.online_ls_spec(0.5)):
        run = ls.RunSpec.from_profile(ls.get_profile("smoke"), loss=spec, seed=0)
        assert run.loss_spec() == spec


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_practice_settings(name):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ls.get_profile(name)
    s = ch.practice_settings(p)
    assert len(s["seeds"]) == 2 and set(s["seeds"]) <= set(p.seeds)
    assert s["search_budget"] == len(s["grid_epsilons"])
    assert s["lr_range"][0] < p.lr < s["lr_range"][1]
    with pytest.raises(TypeError, match="Profile"):
        ch.practice_settings({"seeds": (0, 1)})


def test_random_search_configs():
    a = ch.random_search_configs(6, epsilon_range=(0.01, 0.4), lr_range=(1e-3, 1e-2), seed=3)
    assert a == ch.random_search_configs(6, epsilon_range=(0.01, 0.4), lr_range=(1e-3, 1e-2), seed=3)
    assert a != ch.random_search_configs(6, epsilon_range=(0.01, 0.4), lr_range=(1e-3, 1e-2), seed=4)
    assert all(0.01 <= c["epsilon"] <= 0.4 and 1e-3 <= c["lr"] <= 1e-2 for c in a)
    # log-uniform: the log of the draws is uniform, so about half fall below the geometric midpoint
    many = ch.random_search_configs(4000, epsilon_range=(0.01, 1.0), lr_range=(1e-4, 1e-2), seed=0, digits=6)
    below = sum(c["epsilon"] < 0.1 for c in many) / len(many)
    assert 0.46 < below < 0.54
    below_lr = sum(c["lr"] < 1e-3 for c in many) / len(many)
    assert 0.46 < below_lr < 0.54


@pytest.mark.parametrize("kwargs, exc", [
    (dict(n=0), ValueError), (dict(n=2, epsilon_range=(0.0, 0.3)), ValueError),
    (dict(n=2, epsilon_range=(0.1, 1.5)), ValueError), (dict(n=2, lr_range=(1e-2, 1e-3)), ValueError),
    (dict(n=2, lr_range=1e-3), TypeError), (dict(n=2, seed=-1), ValueError),
])
def test_random_search_errors(kwargs, exc):
    args = dict(epsilon_range=(0.01, 0.4), lr_range=(1e-3, 1e-2))
    args.update(kwargs)
    with pytest.raises(exc):
        ch.random_search_configs(**args)


def test_select_best():
    rows = [{"eps": 0.0, "val_acc": 0.8, "ece": 0.05}, {"eps": 0.1, "val_acc": 0.9, "ece": 0.02},
            {"eps": 0.2, "val_acc": 0.9, "ece": 0.01}]
    assert ch.select_best(rows)["eps"] == 0.1  # first of the tied best
    assert ch.select_best(rows, "ece", higher_is_better=False)["eps"] == 0.2
    with pytest.raises(ValueError, match="lack the metric"):
        ch.select_best(rows, "test_acc")
    with pytest.raises(ValueError, match="non-empty"):
        ch.select_best([])
    with pytest.raises(ValueError, match="NaN"):
        ch.select_best([{"val_acc": float("nan")}])


def test_score_runs_on_real_data(fashion_mnist_small, tmp_data_root):
    ds = fashion_mnist_small
    specs = [ls.RunSpec(dataset="fashion_mnist", n_train=1000, n_val=500, data_seed=0, model="mlp", width=32,
                        loss=loss, epochs=2, batch_size=100, lr=3e-3, weight_decay=1e-2, augment=False, seed=0,
                        label_noise=noise)
             for loss, noise in ((ls.smoothing_spec(0.0), 0.0), (ch.schedule_spec(0.1, "linear"), 0.4))]
    runs = ls.train_many(specs, progress=False, data=ds)
    rows = ch.score_runs(runs, ds)
    assert [r["method"] for r in rows] == ["CE", "LS linear→0"]
    assert rows[1]["label_noise"] == 0.4 and rows[1]["epsilon"] == 0.1 and rows[1]["schedule"] == "linear"
    for run, row in zip(runs, rows):
        logits = ls.predict_logits(run.model, ds.test.x)
        assert row["test_acc"] == pytest.approx(ls.accuracy(logits, ds.test.y))
        assert row["test_ece"] == pytest.approx(ls.expected_calibration_error(logits.softmax(1), ds.test.y))
        assert row["val_acc"] == pytest.approx(run.history["val_acc"][-1], abs=1e-6)
    # 40 % noisy labels cost accuracy on the clean test set
    assert rows[1]["test_acc"] < rows[0]["test_acc"]
    # mean confidence, and temperature scaling fitted on validation
    probs = ls.predict_logits(runs[0].model, ds.val.x).softmax(1)
    assert rows[0]["val_conf"] == pytest.approx(float(probs.max(1).values.mean()), abs=1e-6)
    ts_rows = ch.score_runs(runs, ds, temperature_scaling=True)
    for run, row in zip(runs, ts_rows):
        zv, zt = ls.predict_logits(run.model, ds.val.x), ls.predict_logits(run.model, ds.test.x)
        t = ls.fit_temperature(zv, ds.val.y)
        assert row["temperature"] == pytest.approx(t)
        assert row["test_ece_ts"] == pytest.approx(ls.expected_calibration_error((zt / t).softmax(1), ds.test.y))
    # memo: a second scoring reuses the logits; memo=False recomputes and agrees; a changed model needs memo=False
    again = ch.score_runs(runs, ds, memo=False)
    assert [r["test_acc"] for r in again] == [r["test_acc"] for r in rows]
    with torch.no_grad():
        runs[0].model.classifier.bias.add_(torch.arange(10.0) * 5)  # push every prediction toward class 9
    assert ch.score_runs(runs[:1], ds)[0]["test_acc"] == rows[0]["test_acc"]           # memoised logits
    assert ch.score_runs(runs[:1], ds, memo=False)[0]["test_acc"] < rows[0]["test_acc"]  # recomputed
    with pytest.raises(ValueError, match="needs 'val'"):
        ch.score_runs(runs, ds, splits=("test",), temperature_scaling=True)
    # memorisation of the flipped labels, rebuilt exactly as the trainer made them
    fit = ch.noisy_label_fit(runs[1], ds)
    assert fit["n_flipped"] == 400
    assert 0 <= fit["fits_noisy"] and 0 <= fit["fits_clean"] and fit["fits_noisy"] + fit["fits_clean"] <= 1
    assert fit["fits_clean"] > fit["fits_noisy"]  # 2 epochs: the model mostly predicts the true class
    clean = ch.noisy_label_fit(runs[0], ds)
    assert clean["n_flipped"] == 0 and math.isnan(clean["fits_noisy"]) and math.isnan(clean["fits_clean"])
    # by hand: predictions on all training images, restricted to the flipped ones
    noisy = ls.train.add_label_noise(ds.train.y, 10, 0.4, seed=0)
    pred = ls.predict_logits(runs[1].model, ds.train.x).argmax(1)
    flipped = noisy != ds.train.y
    assert fit["fits_noisy"] == pytest.approx(float((pred[flipped] == noisy[flipped]).float().mean()))
    from types import SimpleNamespace

    small = SimpleNamespace(train=SimpleNamespace(x=ds.train.x[:10], y=ds.train.y[:10]), num_classes=10)
    with pytest.raises(ValueError, match="n_train=1000"):
        ch.noisy_label_fit(runs[1], small)
    with pytest.raises(TypeError, match="ImageDataset"):
        ch.noisy_label_fit(runs[0], object())
    with pytest.raises(ValueError, match="splits entry"):
        ch.score_runs(runs, ds, splits=("dev",))
    with pytest.raises(TypeError, match="TrainedRun"):
        ch.score_runs([object()], ds)


def test_plot_mean_std():
    rows = [{"eps": e, "acc": a, "noise": n} for e, a, n in
            [(0.0, 0.8, 0.0), (0.0, 0.82, 0.0), (0.1, 0.85, 0.0), (0.1, 0.86, 0.0), (0.0, 0.7, 0.4), (0.1, 0.75, 0.4)]]
    ax = ch.plot_mean_std(rows, "eps", "acc", by="noise", scale=100)
    assert len(ax.containers) == 2  # one error-bar line per noise level
    assert ax.get_legend() is not None
    with pytest.raises(ValueError, match="lack the keys"):
        ch.plot_mean_std(rows, "eps", "ece")
    # categorical x: methods at 0, 1, ... in order of appearance, named on the axis
    cat = [{"method": m, "acc": a} for m, a in [("CE", 0.8), ("LS", 0.85), ("CE", 0.82), ("OLS", 0.84)]]
    ax = ch.plot_mean_std(cat, "method", "acc")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CE", "LS", "OLS"]
    x, y = ax.lines[0].get_data()
    assert list(x) == [0, 1, 2] and y[0] == pytest.approx(0.81)
    assert ax.lines[0].get_linestyle() == "None"  # categories are not joined
    # keywords reach errorbar; a single line can carry a label
    ax = ch.plot_mean_std(rows, "eps", "acc", label="val", linestyle="--", color="red")
    assert ax.containers[0].lines[0].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["val"]
