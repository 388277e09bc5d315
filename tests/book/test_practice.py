"""Tests of lsutils.book.practice (chapter 7: noisy labels, ε schedules, online LS, tuning)."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import lsutils as ls  # noqa: E402
from lsutils.book import practice as ch  # noqa: E402


def _spec(**changes):
    """A small spec that matches the ``fashion_mnist_small`` fixture (1,000 train / 500 val, data seed 0)."""
    values = dict(dataset="fashion_mnist", n_train=1000, n_val=500, data_seed=0, model="cnn", width=8,
                  loss={"name": "ce"}, epochs=3, batch_size=100, lr=3e-3, weight_decay=1e-2, augment=False, seed=0)
    values.update(changes)
    return ls.RunSpec(**values)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_practice_settings(name):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ls.get_profile(name)
    s = ch.practice_settings(p)
    assert s["seeds"] == tuple(p.seeds)
    assert s["search_budget"] == len(s["grid_epsilons"])
    assert set(s["grid_epsilons"]) <= set(s["curve_epsilons"])            # the grid search reuses cached models
    assert set(s["constant_epsilons"]) <= set(s["curve_epsilons"])
    assert s["lr_range"][0] < p.lr < s["lr_range"][1]
    assert 0 < s["eta"] < 1 and s["noise_epsilons"][0] == 0.0
    assert len(s["confirm_seeds"]) == 2 and not set(s["confirm_seeds"]) & set(s["seeds"])   # fresh seeds
    # every spec the chapter builds from these settings is valid
    ls.RunSpec.from_profile(p, loss={"name": "ls_schedule", "epsilon": s["schedule_epsilon"],
                                     "schedule": s["schedules"][-1]}, seed=0)
    ls.RunSpec.from_profile(p, loss={"name": "online_ls", "alpha": s["ols_alpha"]}, seed=0, label_noise=s["eta"])
    with pytest.raises(TypeError, match="Profile"):
        ch.practice_settings({"seeds": (0, 1)})


# --------------------------------------------------------------------------------------------- hand-run training
def test_probed_fit_equals_the_trainer(fashion_mnist_small, tmp_data_root):
    """The chapter's hand-run training (fresh_model + fit_kwargs + EpochProbe as fit's on_epoch_end) gives the
    trainer's weights exactly."""
    ds = fashion_mnist_small
    spec = _spec(loss=ls.smoothing_spec(0.1), label_noise=0.4)
    trained = ls.train_model(spec, progress=False, data=ds)

    noisy_y = ls.train.add_label_noise(ds.train.y, 10, 0.4, seed=spec.data_seed)
    model = ch.fresh_model(spec, ds)
    probe = ch.EpochProbe(ch.NoiseProbe(ds, noisy_y, spec.epochs))
    ls.fit(model, ds.train.x, noisy_y, ls.losses.build_loss(spec.loss_spec()), progress=False,
           on_epoch_end=probe, **ch.fit_kwargs(spec))
    record = probe.finish()

    mine, theirs = model.state_dict(), trained.model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine)
    # the probe's validation accuracy is the trainer's, epoch by epoch
    assert record["val_acc"] == pytest.approx(trained.history["val_acc"], abs=1e-6)
    assert all(len(v) == 3 for v in record.values())
    # the last record is the final model, measured by hand
    test_acc = ls.accuracy(ls.predict_logits(model, ds.test.x), ds.test.y)
    assert record["test_acc"][-1] == pytest.approx(test_acc)
    summary = ch.run_summary(record, seed=0)
    assert summary["test_acc"] == pytest.approx(test_acc) and summary["seed"] == 0
    best = max(range(3), key=lambda e: (record["val_acc"][e], -e))
    assert summary["stopped_epoch"] == best + 1
    # the probe measured a model that changed from epoch to epoch
    assert len(set(record["memorised"])) > 1


def test_fresh_model_is_seeded_and_leaves_the_global_generator(fashion_mnist_small):
    ds = fashion_mnist_small
    before = torch.random.get_rng_state()
    a, b = ch.fresh_model(_spec(seed=3), ds), ch.fresh_model(_spec(seed=3), ds)
    c = ch.fresh_model(_spec(seed=4), ds)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert ch.fit_kwargs(_spec(seed=3, epochs=5))["epochs"] == 5
    with pytest.raises(TypeError, match="RunSpec"):
        ch.fresh_model({"seed": 0}, ds)
    with pytest.raises(TypeError, match="ImageDataset"):
        ch.fresh_model(_spec(), object())
    with pytest.raises(TypeError, match="RunSpec"):
        ch.fit_kwargs(None)


def test_epoch_probe_as_on_epoch_end_and_its_errors():
    model = torch.nn.Linear(2, 2)
    seen = []
    probe = ch.EpochProbe(lambda m: seen.append(m.training) or {"n": len(seen)})
    x, y = torch.randn(32, 2), torch.randint(0, 2, (32,))
    ls.fit(model, x, y, torch.nn.functional.cross_entropy, epochs=3, batch_size=8, lr=1e-2, device="cpu",
           progress=False, on_epoch_end=probe)
    assert probe.finish() == {"n": [1.0, 2.0, 3.0]} and seen == [False, False, False]   # eval mode each time
    with pytest.raises(TypeError, match=r"\(model, epoch, history\)"):
        probe(torch.zeros(1, 2), 0, {})            # a tensor where the model belongs: not a loss wrapper
    with pytest.raises(TypeError):
        probe(model, 0)
    with pytest.raises(ValueError, match="no record"):
        ch.EpochProbe(lambda m: {"n": 1}).finish()
    with pytest.raises(TypeError, match="probe must be callable"):
        ch.EpochProbe(None)
    with pytest.raises(TypeError):
        ch.EpochProbe(1, 2)
    bad = ch.EpochProbe(lambda m: 0.5)
    with pytest.raises(TypeError, match="dict of numbers"):
        bad(model, 0, {})


def test_noise_probe_by_hand(fashion_mnist_small):
    ds = fashion_mnist_small
    model = ch.fresh_model(_spec(), ds)
    noisy_y = ls.train.add_label_noise(ds.train.y, 10, 0.3, seed=1)
    probe = ch.NoiseProbe(ds, noisy_y, epochs=3)
    out = probe(model)
    flipped = noisy_y != ds.train.y
    pred = ls.predict_logits(model, ds.train.x).argmax(1)
    assert out["memorised"] == pytest.approx(float((pred[flipped] == noisy_y[flipped]).float().mean()))
    assert out["clean_fit"] == pytest.approx(float((pred[flipped] == ds.train.y[flipped]).float().mean()))
    assert out["memorised"] + out["clean_fit"] <= 1
    test_acc = ls.accuracy(ls.predict_logits(model, ds.test.x), ds.test.y)
    assert out["val_acc"] == pytest.approx(ls.accuracy(ls.predict_logits(model, ds.val.x), ds.val.y))
    # the first epoch is always a new best: its test accuracy is measured and checkpointed
    assert out["test_acc"] == pytest.approx(test_acc) and out["checkpoint_epoch"] == 1
    # the same model again: no new best, no test score, same checkpoint ...
    again = probe(model)
    assert math.isnan(again["test_acc"]) and again["checkpoint_epoch"] == 1
    assert again["checkpoint_test_acc"] == out["checkpoint_test_acc"]
    # ... except at the last epoch, where the test set is scored for the final number
    last = probe(model)
    assert last["test_acc"] == pytest.approx(test_acc) and last["checkpoint_epoch"] == 1
    with pytest.raises(RuntimeError, match="3 epochs"):
        probe(model)
    with pytest.raises(ValueError, match="no label was flipped"):
        ch.NoiseProbe(ds, ds.train.y.clone(), 3)
    with pytest.raises(ValueError, match="shape"):
        ch.NoiseProbe(ds, noisy_y[:10], 3)
    with pytest.raises(TypeError, match="integer"):
        ch.NoiseProbe(ds, noisy_y.float(), 3)
    with pytest.raises(TypeError, match="ImageDataset"):
        ch.NoiseProbe(object(), noisy_y, 3)


def test_chance_agreement_matches_a_simulation():
    """A model that never saw the noisy labels agrees with them at (1 − acc)/(K − 1), however its errors fall."""
    g = torch.Generator().manual_seed(0)
    n, k, acc = 200_000, 10, 0.7
    y = torch.randint(0, k, (n,), generator=g)
    right = torch.rand(n, generator=g) < acc
    pred = torch.where(right, y, (y + 1) % k)          # all errors on one neighbouring class: far from uniform
    noisy = ls.train.add_label_noise(y, k, 1.0, seed=2)  # every label flipped to a uniform other class
    agree = float((pred == noisy).float().mean())
    assert agree == pytest.approx(ch.chance_agreement(acc, k), abs=0.003)
    assert ch.chance_agreement(0.0, 10) == pytest.approx(1 / 9) and ch.chance_agreement(1.0, 10) == 0.0
    assert ch.chance_agreement(0.5, 10) < 1 / 10
    with pytest.raises(ValueError):
        ch.chance_agreement(1.5, 10)
    with pytest.raises(ValueError):
        ch.chance_agreement(0.5, 1)


def _history(val, test, memorised=(0.1, 0.4, 0.9)):
    best, ckpt = -1.0, []
    for e, v in enumerate(val):
        if v > best:
            best, point = v, (e + 1, test[e])
        ckpt.append(point)
    return {"memorised": list(memorised), "clean_fit": [0.7, 0.5, 0.1], "val_acc": list(val), "test_acc": list(test),
            "checkpoint_epoch": [c[0] for c in ckpt], "checkpoint_test_acc": [c[1] for c in ckpt],
            "train_loss": [1.0, 0.5, 0.1]}


def test_per_epoch_rows_and_run_summary():
    h = _history([0.62, 0.71, 0.52], [0.6, 0.7, 0.5])
    rows = ch.per_epoch_rows(h, 10, epsilon=0.1, seed=2)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1]["chance"] == pytest.approx(0.29 / 9) and rows[1]["epsilon"] == 0.1 and rows[1]["seed"] == 2
    assert "train_loss" not in rows[0] and rows[2]["memorised"] == 0.9
    summary = ch.run_summary(h, epsilon=0.1)
    assert summary == {"epsilon": 0.1, "val_acc": 0.52, "test_acc": 0.5, "memorised": 0.9, "stopped_epoch": 2,
                       "stopped_test_acc": 0.7}
    assert ch.run_summary(_history([0.9, 0.5, 0.4], [0.8, 0.6, 0.5]))["stopped_epoch"] == 1
    with pytest.raises(ValueError, match="equal length"):
        ch.per_epoch_rows({**h, "val_acc": [0.5]}, 10)
    with pytest.raises(ValueError, match="must hold"):
        ch.run_summary({"memorised": [0.1]})


# --------------------------------------------------------------------------------------------- scoring
def test_score_model_on_real_data(fashion_mnist_small):
    ds = fashion_mnist_small
    model = ch.fresh_model(_spec(), ds)
    ls.fit(model, ds.train.x, ds.train.y, torch.nn.functional.cross_entropy, progress=False,
           **ch.fit_kwargs(_spec()))
    row = ch.score_model(model, ds)
    zv, zt = ls.predict_logits(model, ds.val.x), ls.predict_logits(model, ds.test.x)
    assert row["val_acc"] == pytest.approx(ls.accuracy(zv, ds.val.y))
    assert row["test_nll"] == pytest.approx(ls.nll(zt, ds.test.y), rel=1e-5)
    assert row["test_ece"] == pytest.approx(ls.expected_calibration_error(zt.softmax(1), ds.test.y))
    t = ls.fit_temperature(zv, ds.val.y)
    assert row["temperature"] == pytest.approx(t)
    assert row["test_ece_ts"] == pytest.approx(ls.expected_calibration_error((zt / t).softmax(1), ds.test.y))
    assert row["test_nll_ts"] <= row["test_nll"] + 0.02      # T fitted on validation hardly hurts test NLL
    assert row["test_conf"] == pytest.approx(float(zt.softmax(1).max(1).values.mean()))
    with pytest.raises(TypeError, match="nn.Module"):
        ch.score_model("model", ds)
    with pytest.raises(TypeError, match="ImageDataset"):
        ch.score_model(model, object())


def test_method_label_and_off_target_mass():
    assert ch.method_label(ls.smoothing_spec(0.0)) == ch.method_label({"name": "ls", "epsilon": 0.0}) == "CE"
    assert ch.method_label(ls.smoothing_spec(0.1)) == "LS ε = 0.1"
    assert ch.method_label({"name": "ls_schedule", "epsilon": 0.1, "schedule": "linear"}) == "linear 0.1 → 0"
    assert ch.method_label({"name": "ls_schedule", "epsilon": 0.2, "schedule": "constant"}) == "LS ε = 0.2"
    assert ch.method_label({"name": "ls_schedule", "epsilon": 0.2, "schedule": "cosine",
                            "final_epsilon": 0.05}) == "cosine 0.2 → 0.05"
    assert ch.method_label({"name": "als", "lam": 0.1}) == "als"
    with pytest.raises(TypeError):
        ch.method_label("ce")
    eps, k = 0.1, 10
    assert ch.off_target_mass(ls.smooth_targets(torch.arange(k), k, eps)) == pytest.approx(eps * (k - 1) / k)
    assert ch.off_target_mass(torch.eye(4)) == 0.0
    with pytest.raises(ValueError, match="square"):
        ch.off_target_mass(torch.ones(2, 3))


def test_online_ls_targets_sharpen_on_real_data(fashion_mnist_small):
    """What the chapter shows about OLS: its learned targets change, and their off-class mass falls as the model fits."""
    ds = fashion_mnist_small
    spec = _spec(loss={"name": "online_ls", "alpha": 0.5}, epochs=6)
    loss = ls.losses.build_loss(spec.loss_spec())
    model = ch.fresh_model(spec, ds)
    ls.fit(model, ds.train.x, ds.train.y, loss, progress=False, **ch.fit_kwargs(spec))
    mass = [ch.off_target_mass(m) for m in loss.history[1:]]
    assert len(mass) == 5
    assert mass[-1] < 0.5 * mass[0]
    assert all(torch.allclose(m.sum(1), torch.ones(10), atol=1e-5) for m in loss.history[1:])


# --------------------------------------------------------------------------------------------- tuning
def test_random_search_configs():
    a = ch.random_search_configs(6, epsilon_range=(0.01, 0.4), lr_range=(1e-3, 1e-2), seed=3)
    assert a == ch.random_search_configs(6, epsilon_range=(0.01, 0.4), lr_range=(1e-3, 1e-2), seed=3)
    assert a != ch.random_search_configs(6, epsilon_range=(0.01, 0.4), lr_range=(1e-3, 1e-2), seed=4)
    assert all(0.01 <= c["epsilon"] <= 0.4 and 1e-3 <= c["lr"] <= 1e-2 for c in a)
    # log-uniform: about half of the draws fall below the geometric midpoint
    many = ch.random_search_configs(4000, epsilon_range=(0.01, 1.0), lr_range=(1e-4, 1e-2), seed=0, digits=6)
    assert 0.46 < sum(c["epsilon"] < 0.1 for c in many) / len(many) < 0.54
    assert 0.46 < sum(c["lr"] < 1e-3 for c in many) / len(many) < 0.54


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


# --------------------------------------------------------------------------------------------- figures
def _curve_rows():
    rows = []
    for method, shift in (("CE", 0.0), ("LS ε = 0.3", 0.05)):
        for seed in (0, 1):
            h = _history([0.6, 0.7 + shift, 0.6 + shift], [0.6, 0.7, 0.6], (0.1, 0.5 - shift, 0.9 - shift))
            rows += ch.per_epoch_rows(h, 10, method=method, seed=seed)
    return rows


def test_plot_noise_curves():
    axes = ch.plot_noise_curves(_curve_rows())
    assert len(axes) == 2
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["CE", "LS ε = 0.3"]
    # left: memorised (2 methods) and chance (2 methods); the memorised line of CE ends at 90 %
    assert len(axes[0].lines) >= 4
    assert max(line.get_ydata()[-1] for line in axes[0].lines if len(line.get_ydata())) == pytest.approx(90)
    with pytest.raises(ValueError, match="lack the columns"):
        ch.plot_noise_curves([{"epoch": 1}])


def test_plot_epsilon_schedules_draws_the_loss_trace():
    ax = ch.plot_epsilon_schedules(0.1, epochs=4, steps_per_epoch=5)
    labels = [line.get_label() for line in ax.lines]
    assert labels[:3] == ["constant (every step)", "linear (every step)", "cosine (every step)"]
    linear = ax.lines[1].get_ydata()
    assert len(linear) == 20 and linear[0] == pytest.approx(0.1) and linear[-1] == pytest.approx(0.1 / 20)
    staircase = ax.lines[3].get_ydata()
    assert len(set(round(v, 9) for v in staircase)) == 4     # one ε per epoch
    with pytest.raises(ValueError):
        ch.plot_epsilon_schedules(0.1, epochs=0, steps_per_epoch=5)


def test_plot_method_comparison_and_validation_curve():
    df = pd.DataFrame([{"method": m, "seed": s, "test_acc": 0.8 + 0.01 * i, "temperature": 1.0 + i / 10,
                        "epsilon": e, "val_acc": 0.8, "test_nll": 0.5, "val_nll": 0.5 + e}
                       for i, (m, e) in enumerate([("CE", 0.0), ("LS ε = 0.1", 0.1)]) for s in (0, 1)])
    axes = ch.plot_method_comparison(df, {"test_acc": "acc", "temperature": "T"}, order=["LS ε = 0.1", "CE"],
                                     reference={"temperature": 1.0})
    assert len(axes) == 2
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["LS ε = 0.1", "CE"]
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in axes[1].lines)   # the reference line
    with pytest.raises(ValueError, match="lack the columns"):
        ch.plot_method_comparison(df, {"test_ece": "ECE"})
    with pytest.raises(TypeError):
        ch.plot_method_comparison(df, {})
    axes = ch.plot_validation_curve(df, {"acc": "accuracy (%)", "nll": "NLL"})
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["0", "0.1"]
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["validation", "test"]
    with pytest.raises(ValueError, match="lack the columns"):
        ch.plot_validation_curve(df, {"ece": "ECE"})


def test_plot_soft_targets_and_search():
    k = 3
    hist = [torch.zeros(k, k), torch.full((k, k), 1 / k), 0.8 * torch.eye(k) + 0.2 / k]
    axes = ch.plot_soft_targets(hist, ["a", "b", "c"], alpha=0.5, extra={"seed 1": hist})
    assert len(axes) == 3 and len(axes[2].lines) == 2
    mass = axes[2].lines[0].get_ydata()
    assert mass[0] == pytest.approx(100 * 0.5 * (1 - 1 / k)) and mass[1] == pytest.approx(100 * 0.5 * 0.2 * (k - 1) / k)
    with pytest.raises(ValueError, match="class_names"):
        ch.plot_soft_targets(hist, ["a", "b"], alpha=0.5)
    with pytest.raises(ValueError, match="at least 3"):
        ch.plot_soft_targets(hist[:2], ["a", "b", "c"], alpha=0.5)
    grid = [{"epsilon": e, "lr": 3e-3, "val_acc": 0.8 + e} for e in (0.0, 0.1)]
    rand = [{"epsilon": 0.05, "lr": 1e-3, "val_acc": 0.85}]
    ax = ch.plot_search(grid, rand, {"grid": grid[1], "random": rand[0]})
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="both searches"):
        ch.plot_search(grid, [], {})
    with pytest.raises(ValueError, match="every row"):
        ch.plot_search([{"epsilon": 0.1}], rand, {})
