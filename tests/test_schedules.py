"""Tests of lsutils.schedules: ε schedules, online label smoothing, search and scoring helpers."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.registry import LossContext, build_loss  # noqa: E402
from lsutils.schedules import (OnlineLabelSmoothingLoss, ScheduledSmoothingLoss, class_soft_targets,  # noqa: E402
                               describe_loss, epsilon_at, online_ls_spec, plot_mean_std, practice_settings,
                               noisy_label_fit, random_search_configs, schedule_spec, score_runs,
                               select_best)


# --------------------------------------------------------------------------------------------- epsilon_at
def test_epsilon_at_endpoints_and_shapes():
    for sched in ("linear", "cosine"):
        assert epsilon_at(0.0, 0.2, sched) == pytest.approx(0.2)
        assert epsilon_at(1.0, 0.2, sched) == pytest.approx(0.0)
        assert epsilon_at(1.0, 0.2, sched, final_epsilon=0.05) == pytest.approx(0.05)
        assert epsilon_at(0.5, 0.2, sched) == pytest.approx(0.1)  # both pass the midpoint at half-way
        values = [epsilon_at(t / 20, 0.2, sched) for t in range(21)]
        assert all(a >= b for a, b in zip(values, values[1:]))  # non-increasing
    # cosine stays above linear in the first half, below in the second
    assert epsilon_at(0.25, 0.2, "cosine") > epsilon_at(0.25, 0.2, "linear")
    assert epsilon_at(0.75, 0.2, "cosine") < epsilon_at(0.75, 0.2, "linear")
    assert epsilon_at(0.25, 0.2, "cosine") == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)))
    assert epsilon_at(0.7, 0.2, "constant") == 0.2
    # warm-up direction works too (final above start)
    assert epsilon_at(0.5, 0.0, "linear", final_epsilon=0.2) == pytest.approx(0.1)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(progress=1.5, epsilon=0.1), ValueError, "progress"),
    (dict(progress=0.5, epsilon=-0.1), ValueError, "epsilon"),
    (dict(progress=0.5, epsilon=0.1, schedule="step"), ValueError, "schedule must be one of"),
    (dict(progress=0.5, epsilon=0.1, schedule=1), TypeError, "schedule"),
    (dict(progress="0.5", epsilon=0.1), TypeError, "progress"),
    (dict(progress=0.5, epsilon=0.1, final_epsilon=2.0), ValueError, "final_epsilon"),
])
def test_epsilon_at_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        epsilon_at(**kwargs)


# --------------------------------------------------------------------------------------------- scheduled LS loss
def test_constant_schedule_is_label_smoothing():
    torch.manual_seed(0)
    logits, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    loss = ScheduledSmoothingLoss(0.15, "constant", n_train=32)
    loss.start_epoch(1, 3)
    assert torch.allclose(loss(logits, y), F.cross_entropy(logits, y, label_smoothing=0.15))
    assert torch.allclose(loss(logits, y), ls.smoothed_cross_entropy(logits, y, 0.15))


def test_schedule_advances_per_step_and_per_epoch():
    logits, y = torch.zeros(25, 4), torch.zeros(25, dtype=torch.long)
    step = ScheduledSmoothingLoss(0.1, "linear", n_train=100)
    epoch = ScheduledSmoothingLoss(0.1, "linear", n_train=100, granularity="epoch")
    for e in range(2):
        for fn in (step, epoch):
            fn.start_epoch(e, 2)
        for _ in range(4):  # 4 batches of 25 = one pass over 100 examples
            step(logits, y)
            epoch(logits, y)
    expected_step = [0.1 * (1 - k / 8) for k in range(8)]
    assert step.trace == pytest.approx(expected_step)
    assert epoch.trace == pytest.approx([0.1] * 4 + [0.05] * 4)
    # the loss value follows the ε actually used
    assert step.last_epsilon == pytest.approx(0.1 * (1 - 7 / 8))


def test_schedule_through_registry_and_trainer_is_per_step(fashion_mnist_small):
    ds = fashion_mnist_small
    x, y = ds.train.x[:256], ds.train.y[:256]
    loss = build_loss(schedule_spec(0.2, "cosine"), LossContext(train_x=x, train_y=y))
    assert isinstance(loss, ScheduledSmoothingLoss) and loss.n_train == 256
    model = ls.build_model("mlp", num_classes=10, in_channels=1, width=16, image_size=28)
    ls.fit(model, x, y, loss, epochs=2, batch_size=64, lr=1e-3, device="cpu", progress=False)
    assert len(loss.trace) == 8  # 2 epochs × 4 steps, one ε per step
    expected = [epsilon_at(k / 8, 0.2, "cosine") for k in range(8)]
    assert loss.trace == pytest.approx(expected)
    # without a context the schedule can only move per epoch
    bare = build_loss(schedule_spec(0.2, "linear"))
    assert bare.n_train is None


def test_scheduled_loss_errors():
    loss = ScheduledSmoothingLoss(0.1, "linear", n_train=10)
    with pytest.raises(RuntimeError, match="start_epoch"):
        loss(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="epoch"):
        loss.start_epoch(3, 3)
    with pytest.raises(TypeError, match="epochs"):
        loss.start_epoch(0, 2.0)
    with pytest.raises(ValueError, match="n_train"):
        ScheduledSmoothingLoss(0.1, "linear", n_train=0)
    with pytest.raises(ValueError, match="granularity"):
        ScheduledSmoothingLoss(0.1, "linear", granularity="batch")
    with pytest.raises(ValueError, match="epsilon"):
        schedule_spec(1.2, "linear")
    with pytest.raises(ValueError, match="schedule"):
        schedule_spec(0.1, "exp")
    with pytest.raises(TypeError, match="unexpected"):
        schedule_spec(0.1, "linear", warmup=3)
    with pytest.raises(TypeError, match="bad hyper-parameters"):
        build_loss({"name": "ls_schedule", "epsilon": 0.1, "decay": 2})


# --------------------------------------------------------------------------------------------- online label smoothing
def test_class_soft_targets_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(200, 4, generator=g).mul(2).softmax(1)
    y = torch.randint(0, 4, (200,), generator=g)
    y[probs.argmax(1) == 3] = 0  # nothing of class 3 is ever classified correctly
    S, counts = class_soft_targets(probs, y)
    for k in range(4):
        rows = [probs[i] for i in range(200) if y[i] == k and probs[i].argmax() == k]
        assert counts[k] == len(rows)
        if rows:
            assert torch.allclose(S[k], torch.stack(rows).mean(0), atol=1e-6)
        else:
            assert torch.allclose(S[k], torch.full((4,), 0.25))
    assert counts[3] == 0
    assert torch.allclose(S.sum(1), torch.ones(4), atol=1e-6)
    # the diagonal holds the largest entry of every learned row (the class was the argmax)
    learned = counts > 0
    assert (S[learned].argmax(1) == torch.arange(4)[learned]).all()


def test_class_soft_targets_errors():
    with pytest.raises(ValueError, match=r"shape \(N, K\)"):
        class_soft_targets(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="target must have shape"):
        class_soft_targets(torch.rand(3, 2).softmax(1), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class index"):
        class_soft_targets(torch.rand(2, 2).softmax(1), torch.tensor([0, 2]))
    with pytest.raises(TypeError, match="integer class indices"):
        class_soft_targets(torch.rand(2, 2).softmax(1), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="num_classes"):
        class_soft_targets(torch.rand(2, 2).softmax(1), torch.tensor([0, 1]), num_classes=3)


def test_online_ls_loss_formula_and_update():
    torch.manual_seed(1)
    logits, y = torch.randn(32, 5), torch.randint(0, 5, (32,))
    loss = OnlineLabelSmoothingLoss(alpha=0.3, init="ls", init_epsilon=0.2)
    loss.start_epoch(0, 3)
    value = loss(logits, y)
    # epoch 0 with init="ls": α·CE + (1-α)·H(smoothed one-hot, p) = CE with label smoothing 0.7·0.2
    assert torch.allclose(value, F.cross_entropy(logits, y, label_smoothing=0.7 * 0.2), atol=1e-6)
    second = torch.randn(32, 5)
    loss(second, y)
    loss.start_epoch(1, 3)
    expected, _ = class_soft_targets(torch.cat([logits, second]).softmax(1), torch.cat([y, y]))
    assert torch.allclose(loss.matrix, expected, atol=1e-6)
    assert len(loss.history) == 2 and torch.allclose(loss.history[1], expected)
    # epoch 1 uses the learned matrix
    manual = 0.3 * F.cross_entropy(logits, y) + 0.7 * -(expected[y] * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(loss(logits, y), manual, atol=1e-6)


def test_online_ls_inits_and_alpha_one():
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    zeros = OnlineLabelSmoothingLoss(alpha=0.5)  # the paper's code: S⁰ = 0
    zeros.start_epoch(0, 2)
    assert torch.allclose(zeros(logits, y), 0.5 * F.cross_entropy(logits, y))
    uniform = OnlineLabelSmoothingLoss(alpha=0.0, init="uniform")
    uniform.start_epoch(0, 2)
    assert torch.allclose(uniform(logits, y), -logits.log_softmax(1).mean(1).mean())
    hard = OnlineLabelSmoothingLoss(alpha=1.0)
    hard.start_epoch(0, 1)
    assert torch.allclose(hard(logits, y), F.cross_entropy(logits, y))


def test_online_ls_errors():
    with pytest.raises(ValueError, match="alpha"):
        OnlineLabelSmoothingLoss(alpha=1.5)
    with pytest.raises(ValueError, match="init must be one of"):
        OnlineLabelSmoothingLoss(init="eye")
    with pytest.raises(TypeError, match="unexpected"):
        online_ls_spec(0.5, momentum=0.9)
    loss = OnlineLabelSmoothingLoss()
    loss.start_epoch(0, 1)
    loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="3"):
        loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="target must have shape"):
        loss(torch.randn(4, 3), torch.tensor([0, 1]))


def test_online_ls_trains_on_real_data(fashion_mnist_small):
    ds = fashion_mnist_small
    loss = build_loss(online_ls_spec(0.5))
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


# --------------------------------------------------------------------------------------------- specs and settings
def test_describe_loss_and_specs():
    assert describe_loss({"name": "ce"}) == {"method": "CE", "epsilon": 0.0}
    assert describe_loss(schedule_spec(0.1, "linear"))["method"] == "LS linear→0"
    assert describe_loss(schedule_spec(0.1, "linear", granularity="epoch"))["method"] == "LS linear→0 (per epoch)"
    assert describe_loss(schedule_spec(0.1, "constant"))["method"] == "LS"
    assert describe_loss(online_ls_spec())["method"] == "OLS"
    assert describe_loss({"name": "als", "lam": 0.1})["method"] == "als"
    with pytest.raises(TypeError):
        describe_loss("ce")
    # specs hash as run specs
    for spec in (schedule_spec(0.1, "cosine"), online_ls_spec(0.5)):
        run = ls.RunSpec.from_profile(ls.get_profile("smoke"), loss=spec, seed=0)
        assert run.loss_spec() == spec


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_practice_settings(name):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ls.get_profile(name)
    s = practice_settings(p)
    assert len(s["seeds"]) == 2 and set(s["seeds"]) <= set(p.seeds)
    assert s["search_budget"] == len(s["grid_epsilons"])
    assert s["lr_range"][0] < p.lr < s["lr_range"][1]
    with pytest.raises(TypeError, match="Profile"):
        practice_settings({"seeds": (0, 1)})


# --------------------------------------------------------------------------------------------- search helpers
def test_random_search_configs():
    a = random_search_configs(6, epsilon_range=(0.01, 0.4), lr_range=(1e-3, 1e-2), seed=3)
    assert a == random_search_configs(6, epsilon_range=(0.01, 0.4), lr_range=(1e-3, 1e-2), seed=3)
    assert a != random_search_configs(6, epsilon_range=(0.01, 0.4), lr_range=(1e-3, 1e-2), seed=4)
    assert all(0.01 <= c["epsilon"] <= 0.4 and 1e-3 <= c["lr"] <= 1e-2 for c in a)
    # log-uniform: the log of the draws is uniform, so about half fall below the geometric midpoint
    many = random_search_configs(4000, epsilon_range=(0.01, 1.0), lr_range=(1e-4, 1e-2), seed=0, digits=6)
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
        random_search_configs(**args)


def test_select_best():
    rows = [{"eps": 0.0, "val_acc": 0.8, "ece": 0.05}, {"eps": 0.1, "val_acc": 0.9, "ece": 0.02},
            {"eps": 0.2, "val_acc": 0.9, "ece": 0.01}]
    assert select_best(rows)["eps"] == 0.1  # first of the tied best
    assert select_best(rows, "ece", higher_is_better=False)["eps"] == 0.2
    with pytest.raises(ValueError, match="lack the metric"):
        select_best(rows, "test_acc")
    with pytest.raises(ValueError, match="non-empty"):
        select_best([])
    with pytest.raises(ValueError, match="NaN"):
        select_best([{"val_acc": float("nan")}])


# --------------------------------------------------------------------------------------------- scoring and plots
def test_score_runs_on_real_data(fashion_mnist_small, tmp_data_root):
    ds = fashion_mnist_small
    specs = [ls.RunSpec(dataset="fashion_mnist", n_train=1000, n_val=500, data_seed=0, model="mlp", width=32,
                        loss=loss, epochs=2, batch_size=100, lr=3e-3, weight_decay=1e-2, augment=False, seed=0,
                        label_noise=noise)
             for loss, noise in ((ls.smoothing_spec(0.0), 0.0), (schedule_spec(0.1, "linear"), 0.4))]
    runs = ls.train_many(specs, progress=False, data=ds)
    rows = score_runs(runs, ds)
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
    ts_rows = score_runs(runs, ds, temperature_scaling=True)
    for run, row in zip(runs, ts_rows):
        zv, zt = ls.predict_logits(run.model, ds.val.x), ls.predict_logits(run.model, ds.test.x)
        t = ls.fit_temperature(zv, ds.val.y)
        assert row["temperature"] == pytest.approx(t)
        assert row["test_ece_ts"] == pytest.approx(ls.expected_calibration_error((zt / t).softmax(1), ds.test.y))
    # memo: a second scoring reuses the logits; memo=False recomputes and agrees; a changed model needs memo=False
    again = score_runs(runs, ds, memo=False)
    assert [r["test_acc"] for r in again] == [r["test_acc"] for r in rows]
    with torch.no_grad():
        runs[0].model.classifier.bias.add_(torch.arange(10.0) * 5)  # push every prediction toward class 9
    assert score_runs(runs[:1], ds)[0]["test_acc"] == rows[0]["test_acc"]           # memoised logits
    assert score_runs(runs[:1], ds, memo=False)[0]["test_acc"] < rows[0]["test_acc"]  # recomputed
    with pytest.raises(ValueError, match="needs 'val'"):
        score_runs(runs, ds, splits=("test",), temperature_scaling=True)
    # memorisation of the flipped labels, rebuilt exactly as the trainer made them
    fit = noisy_label_fit(runs[1], ds)
    assert fit["n_flipped"] == 400
    assert 0 <= fit["fits_noisy"] and 0 <= fit["fits_clean"] and fit["fits_noisy"] + fit["fits_clean"] <= 1
    assert fit["fits_clean"] > fit["fits_noisy"]  # 2 epochs: the model mostly predicts the true class
    clean = noisy_label_fit(runs[0], ds)
    assert clean["n_flipped"] == 0 and math.isnan(clean["fits_noisy"]) and math.isnan(clean["fits_clean"])
    # by hand: predictions on all training images, restricted to the flipped ones
    noisy = ls.add_label_noise(ds.train.y, 10, 0.4, seed=0)
    pred = ls.predict_logits(runs[1].model, ds.train.x).argmax(1)
    flipped = noisy != ds.train.y
    assert fit["fits_noisy"] == pytest.approx(float((pred[flipped] == noisy[flipped]).float().mean()))
    from types import SimpleNamespace

    small = SimpleNamespace(train=SimpleNamespace(x=ds.train.x[:10], y=ds.train.y[:10]), num_classes=10)
    with pytest.raises(ValueError, match="n_train=1000"):
        noisy_label_fit(runs[1], small)
    with pytest.raises(TypeError, match="ImageDataset"):
        noisy_label_fit(runs[0], object())
    with pytest.raises(ValueError, match="splits entry"):
        score_runs(runs, ds, splits=("dev",))
    with pytest.raises(TypeError, match="TrainedRun"):
        score_runs([object()], ds)


def test_plot_mean_std():
    rows = [{"eps": e, "acc": a, "noise": n} for e, a, n in
            [(0.0, 0.8, 0.0), (0.0, 0.82, 0.0), (0.1, 0.85, 0.0), (0.1, 0.86, 0.0), (0.0, 0.7, 0.4), (0.1, 0.75, 0.4)]]
    ax = plot_mean_std(rows, "eps", "acc", by="noise", scale=100)
    assert len(ax.containers) == 2  # one error-bar line per noise level
    assert ax.get_legend() is not None
    with pytest.raises(ValueError, match="lack the keys"):
        plot_mean_std(rows, "eps", "ece")
    # categorical x: methods at 0, 1, ... in order of appearance, named on the axis
    cat = [{"method": m, "acc": a} for m, a in [("CE", 0.8), ("LS", 0.85), ("CE", 0.82), ("OLS", 0.84)]]
    ax = plot_mean_std(cat, "method", "acc")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CE", "LS", "OLS"]
    x, y = ax.lines[0].get_data()
    assert list(x) == [0, 1, 2] and y[0] == pytest.approx(0.81)
    assert ax.lines[0].get_linestyle() == "None"  # categories are not joined
    # keywords reach errorbar; a single line can carry a label
    ax = plot_mean_std(rows, "eps", "acc", label="val", linestyle="--", color="red")
    assert ax.containers[0].lines[0].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["val"]
