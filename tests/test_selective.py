"""Tests of lsutils.selective: risk–coverage / AURC, logit normalisation, padded token losses, chapter 8's specs."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lsutils as ls
from lsutils.selective import (aurc, chapter8_settings, compare_confidences, excess_aurc, ls_differences,
                               model_size_specs, optimal_aurc, plot_ls_difference, plot_risk_coverage,
                               plot_with_without, pnorm_logit_score, regularizer_specs, with_without_table,
                               risk_coverage_curve, run_scores, select_pnorm, selective_report, selective_risk,
                               token_loss_report)


# --------------------------------------------------------------------------------------------- risk–coverage
def _brute_force_curve(conf: list[float], correct: list[bool]) -> np.ndarray:
    """Average the risk curve over every order consistent with the confidences (all tie-breaks)."""
    n = len(conf)
    curves = []
    for perm in itertools.permutations(range(n)):
        c = [conf[i] for i in perm]
        if any(c[j] < c[j + 1] for j in range(n - 1)):
            continue  # not sorted by decreasing confidence
        errs = np.cumsum([0 if correct[i] else 1 for i in perm])
        curves.append(errs / np.arange(1, n + 1))
    return np.mean(curves, axis=0)


@pytest.mark.parametrize("seed", range(5))
def test_curve_breaks_ties_in_expectation(seed):
    g = torch.Generator().manual_seed(seed)
    conf = torch.randint(0, 3, (7,), generator=g).double() / 2        # many ties
    correct = torch.rand(7, generator=g) < 0.6
    curve = risk_coverage_curve(conf, correct)
    expected = _brute_force_curve(conf.tolist(), correct.tolist())
    np.testing.assert_allclose(curve["risk"], expected, atol=1e-12)
    np.testing.assert_allclose(curve["coverage"], np.arange(1, 8) / 7)
    assert np.all(np.diff(curve["threshold"]) <= 0)


def test_aurc_matches_a_plain_loop_without_ties():
    rng = np.random.default_rng(0)
    conf = rng.random(500)
    correct = rng.random(500) < 0.8
    order = np.argsort(-conf)
    risks = [np.mean(~correct[order[:i]]) for i in range(1, 501)]
    assert aurc(torch.from_numpy(conf), torch.from_numpy(correct)) == pytest.approx(np.mean(risks), abs=1e-12)
    # numpy inputs and 0/1 ints are accepted too
    assert aurc(conf, correct.astype(np.int64)) == pytest.approx(np.mean(risks), abs=1e-12)


def test_perfect_and_worst_rankings():
    correct = torch.tensor([True] * 7 + [False] * 3)
    perfect = correct.double()                      # every right prediction more confident than every wrong one
    assert excess_aurc(perfect, correct) == pytest.approx(0.0, abs=1e-12)
    assert aurc(perfect, correct) == pytest.approx(optimal_aurc(0.3, 10))
    worst = aurc(1 - perfect, correct)
    constant = aurc(torch.zeros(10), correct)       # no information: every prefix has the base error rate
    assert constant == pytest.approx(0.3)
    assert aurc(perfect, correct) < constant < worst
    assert selective_risk(perfect, correct, 0.7) == 0.0
    assert selective_risk(perfect, correct, 1.0) == pytest.approx(0.3)


def test_optimal_aurc_closed_form_for_large_n():
    for e in (0.05, 0.12, 0.4):
        assert optimal_aurc(e, 200_000) == pytest.approx(e + (1 - e) * math.log(1 - e), abs=1e-4)
    assert optimal_aurc(0.0, 5) == 0.0 and optimal_aurc(1.0, 4) == 1.0


@pytest.mark.parametrize("call, exc", [
    (lambda: aurc(torch.zeros(3), torch.zeros(4)), ValueError),
    (lambda: aurc(torch.zeros(3, 1), torch.zeros(3)), ValueError),
    (lambda: aurc([0.1, 0.2], [True, False]), TypeError),
    (lambda: aurc(torch.tensor([0.1, float("nan")]), torch.tensor([True, False])), ValueError),
    (lambda: aurc(torch.tensor([0.1, 0.2]), torch.tensor([2, 0])), ValueError),
    (lambda: selective_risk(torch.zeros(3), torch.ones(3), 0.0), ValueError),
    (lambda: optimal_aurc(1.5, 3), ValueError),
    (lambda: optimal_aurc(0.1, 0), ValueError),
])
def test_bad_inputs_raise(call, exc):
    with pytest.raises(exc):
        call()


# --------------------------------------------------------------------------------------------- logit normalisation
def test_pnorm_score_formula_and_invariances():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 10, generator=g) * 3
    for p in (1, 2, 3.5, math.inf):
        zc = z.double() - z.double().mean(1, keepdim=True)
        manual = (zc / zc.norm(p=p, dim=1, keepdim=True)).amax(1)
        got = pnorm_logit_score(z, p)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, manual)
        torch.testing.assert_close(pnorm_logit_score(7.0 * z + 2.0, p), got)       # scale and shift free
        uncentred = pnorm_logit_score(z, p, center=False)
        torch.testing.assert_close(uncentred, (z.double() / z.double().norm(p=p, dim=1, keepdim=True)).amax(1))
    msp_norm = pnorm_logit_score(z, 2, temperature=0.1)
    zc = z.double() - z.double().mean(1, keepdim=True)
    torch.testing.assert_close(msp_norm, (zc / zc.norm(dim=1, keepdim=True) / 0.1).softmax(1).amax(1))


def test_pnorm_score_degenerate_rows_and_errors():
    z = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
    s = pnorm_logit_score(z, 2)
    assert s[0] == 0.0 and torch.isfinite(s).all()
    assert pnorm_logit_score(z, 2, temperature=1.0)[0] == pytest.approx(1 / 3)
    for bad in (0, -1, float("nan"), True, "2"):
        with pytest.raises(ValueError):
            pnorm_logit_score(z, bad)
    with pytest.raises(ValueError):
        pnorm_logit_score(torch.zeros(3), 2)
    with pytest.raises(TypeError):
        pnorm_logit_score(torch.zeros(3, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError):
        pnorm_logit_score(z, 2, temperature=0.0)


def test_select_pnorm_returns_the_argmin_and_msp_baseline():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(400, 10, generator=g) * torch.rand(400, 1, generator=g) * 5
    y = torch.randint(0, 10, (400,), generator=g)
    y[:300] = z[:300].argmax(1)                                  # 75 % right
    r = select_pnorm(z, y, ps=(1, 2, 4, math.inf))
    correct = z.argmax(1) == y
    for p, value in r["aurc"].items():
        assert value == pytest.approx(aurc(pnorm_logit_score(z, p), correct))
    assert r["aurc"][r["p"]] == min(r["aurc"].values())
    assert r["msp_aurc"] == pytest.approx(aurc(ls.msp_score(z), correct))
    with pytest.raises(ValueError):
        select_pnorm(z, y, ps=())
    with pytest.raises(ValueError):
        select_pnorm(z, y[:10])


@pytest.fixture(scope="module")
def small_trained(fashion_mnist_small):
    """A small MLP trained for 2 epochs on real Fashion-MNIST (1,000 images): (model, test split)."""
    ds = fashion_mnist_small
    model = ls.build_model("mlp", 10, 1, width=32)
    ls.fit(model, ds.train.x, ds.train.y, F.cross_entropy, epochs=2, batch_size=100, lr=3e-3, device="cpu",
           progress=False)
    return model, ds.test


def test_selective_report_on_a_real_model(small_trained):
    """The report agrees with the functions it is made of, on a model trained on real data."""
    model, test = small_trained
    z = ls.predict_logits(model, test.x)
    r = selective_report(z, test.y, coverages=(0.5, 1.0))
    correct = z.argmax(1) == test.y
    assert r["acc"] == pytest.approx(ls.accuracy(z, test.y))
    assert r["risk@100"] == pytest.approx(1 - r["acc"])
    assert r["aurc"] == pytest.approx(aurc(ls.msp_score(z), correct))
    assert r["e_aurc"] == pytest.approx(r["aurc"] - optimal_aurc(1 - r["acc"], len(correct)))
    # a trained model's confidence ranks its errors better than chance: risk at 50 % coverage < overall risk
    assert r["risk@50"] < r["risk@100"]
    assert 0 <= r["e_aurc"] < r["aurc"]


def test_run_scores_on_a_real_model(small_trained):
    model, test = small_trained
    r = run_scores(model, test.x, test.y)
    z = ls.predict_logits(model, test.x)
    assert r["acc"] == pytest.approx(ls.accuracy(z, test.y)) and r["nll"] == pytest.approx(ls.nll(z, test.y))
    assert r["ece"] == pytest.approx(ls.expected_calibration_error(z.softmax(1), test.y), abs=1e-6)
    assert r["aurc"] == pytest.approx(selective_report(z, test.y)["aurc"])
    with pytest.raises(ValueError):
        run_scores(model, test.x, test.y[:-1])


def test_compare_confidences_on_a_real_model(small_trained, fashion_mnist_small):
    model, test = small_trained
    out = compare_confidences(model, fashion_mnist_small.val, test, ps=(1, 2, 4), coverages=(0.5,))
    z_val = ls.predict_logits(model, fashion_mnist_small.val.x)
    assert out["p"] == select_pnorm(z_val, fashion_mnist_small.val.y, ps=(1, 2, 4))["p"]
    fit = select_pnorm(z_val, fashion_mnist_small.val.y, ps=(1, 2, 4))
    assert out["fallback"] == (fit["msp_aurc"] <= fit["aurc"][out["p"]])
    assert out["val_aurc"] == {"MSP": fit["msp_aurc"], "MaxLogit-pNorm": fit["aurc"][out["p"]]}
    assert all(r["fallback"] == out["fallback"] for r in out["rows"])
    names = [r["confidence"] for r in out["rows"]]
    assert names == ["MSP", "MaxLogit-pNorm"] and set(out["scores"]) == set(names)
    z = ls.predict_logits(model, test.x)
    norm = out["rows"][1]
    assert norm["aurc"] == pytest.approx(aurc(pnorm_logit_score(z, out["p"]), z.argmax(1) == test.y))
    assert out["rows"][0]["acc"] == norm["acc"]                 # same predictions, another ranking
    with pytest.raises(TypeError):
        compare_confidences(model, (test.x, test.y), test)


def test_differences_and_table():
    rows = [{"row": g, "epsilon": e, "seed": s, "acc": a, "ece": c}
            for g, e, s, a, c in [("a", 0.0, 0, 0.8, 0.1), ("a", 0.0, 1, 0.9, 0.2), ("a", 0.1, 0, 0.7, 0.1),
                                  ("a", 0.1, 1, 0.95, 0.3), ("b", 0.0, 0, 0.6, 0.0), ("b", 0.1, 0, 0.5, 0.0)]]
    assert ls_differences(rows, "row", "a", "acc") == pytest.approx([-0.1, 0.05])
    assert ls_differences(rows, "row", "b", "acc") == pytest.approx([-0.1])
    t = with_without_table(rows, "row", ["acc", "ece"], scale={"acc": 100}, digits=1)
    assert list(t.index) == ["a", "b"]
    assert t.loc["a", ("acc", "CE")] == "85.0 ± 7.1" and t.loc["a", ("acc", "LS − CE")] == "-2.5 ± 10.6"
    assert t.loc["b", ("ece", "LS")] == "0.0 ± 0.0"
    with pytest.raises(ValueError):
        ls_differences(rows, "row", "zzz", "acc")
    with pytest.raises(ValueError):
        ls_differences(rows + [{"row": "b", "epsilon": 0.2, "seed": 0, "acc": 0.1, "ece": 0.0}], "row", "b", "acc")
    with pytest.raises(ValueError):
        with_without_table([{"row": "a"}], "row", ["acc"])


def test_plots():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"row": g, "epsilon": e, "seed": s, "acc": a}
            for g, e, s, a in [("a", 0.0, 0, 0.8), ("a", 0.0, 1, 0.9), ("a", 0.1, 0, 0.7), ("b", 0.0, 0, 0.6),
                               ("b", 0.1, 0, 0.5), ("b", 0.1, 1, 0.55)]]
    ax = plot_with_without(rows, by="row", metric="acc", scale=100)
    means = sorted(round(float(y), 6) for c in ax.containers for y in c.lines[0].get_ydata())
    assert means == sorted([85.0, 70.0, 60.0, 52.5])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CE (ε = 0)", "LS (ε = 0.1)"]
    with pytest.raises(ValueError):
        plot_with_without([{"row": "a"}], by="row", metric="acc")
    ax = plot_ls_difference(rows, by="row", metric="acc", scale=100)
    means = [round(float(c.lines[0].get_ydata()[0]), 6) for c in ax.containers]
    assert means == [-10.0, -10.0]           # only seeds with both runs are paired: a: 70 - 80, b: 50 - 60
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6])
    ok = torch.tensor([True, True, False, True])
    ax = plot_risk_coverage({"x": (conf, ok), "y": (1 - conf, ok)}, max_coverage=0.5)
    assert len(ax.lines) == 2 and ax.get_xlim() == (0.0, 50.0)
    with pytest.raises(TypeError):
        plot_risk_coverage({})
    plt.close("all")


# --------------------------------------------------------------------------------------------- padded sequences
def _padded_batch(seed: int = 0, k: int = 11, pad: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, k, 6, generator=g) * 2
    target = torch.randint(1, k, (3, 6), generator=g)
    target[0, 4:] = pad
    target[2, 2:] = pad
    return logits, target


def test_token_report_ignores_padding():
    logits, target = _padded_batch()
    r = token_loss_report(logits, target, 0.1, pad_index=0)
    keep = target != 0
    assert r["tokens"] == int(keep.sum()) == 18 - 2 - 4
    flat_z = logits.movedim(1, -1)[keep]                       # (tokens, K)
    assert r["nll"] == pytest.approx(float(F.cross_entropy(flat_z, target[keep])), rel=1e-6)
    assert r["perplexity"] == pytest.approx(math.exp(r["nll"]), rel=1e-6)
    assert r["ls_loss"] == pytest.approx(r["ls_loss_torch"], rel=1e-6)
    assert r["ls_loss"] == pytest.approx(float(F.cross_entropy(flat_z, target[keep], label_smoothing=0.1)), rel=1e-6)
    assert r["ls_loss_padding_counted"] != pytest.approx(r["ls_loss"], rel=1e-3)
    assert r["token_acc"] == pytest.approx(float((flat_z.argmax(1) == target[keep]).double().mean()))


def test_token_report_of_uniform_logits():
    z = torch.zeros(2, 7, 4)
    t = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0]])
    r = token_loss_report(z, t, 0.2, pad_index=0)
    assert r["perplexity"] == pytest.approx(7.0) and r["ls_loss"] == pytest.approx(math.log(7))


def test_token_report_annotated_kl_is_zero_at_its_target_and_shifted_ce_elsewhere():
    logits, target = _padded_batch(seed=3)
    k = logits.shape[1]
    keep = target != 0
    qq = ls.annotated_transformer_targets(target.reshape(-1), k, 0.1, 0).reshape(target.shape + (k,))
    z_opt = torch.where(qq > 0, qq.clamp_min(1e-30).log(), torch.full_like(qq, -60.0)).movedim(-1, 1)
    assert token_loss_report(z_opt, target, 0.1, 0)["annotated_kl"] == pytest.approx(0.0, abs=1e-5)
    logp = logits.log_softmax(1).movedim(1, -1)
    ce = -(qq * logp).sum(-1)[keep].mean()
    ent = -(qq * qq.clamp_min(1e-30).log()).sum(-1)[keep].mean()
    assert token_loss_report(logits, target, 0.1, 0)["annotated_kl"] == pytest.approx(float(ce - ent), rel=1e-5)


@pytest.mark.parametrize("call, exc", [
    (lambda: token_loss_report(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long), 0.1, 0), ValueError),
    (lambda: token_loss_report(torch.zeros(1, 5, 3), torch.zeros(1, 4, dtype=torch.long), 0.1, 0), ValueError),
    (lambda: token_loss_report(torch.zeros(1, 5, 3), torch.zeros(1, 3, dtype=torch.long), 0.1, 0), ValueError),
    (lambda: token_loss_report(torch.zeros(1, 5, 3), torch.ones(1, 3, dtype=torch.long), 0.1, 9), ValueError),
    (lambda: token_loss_report(torch.zeros(1, 5, 3), torch.ones(1, 3, dtype=torch.long), 1.5, 0), ValueError),
    (lambda: token_loss_report(torch.zeros(1, 5, 3), torch.full((1, 3), 7), 0.1, 0), ValueError),
])
def test_token_errors(call, exc):
    with pytest.raises(exc):
        call()


# --------------------------------------------------------------------------------------------- chapter 8 specs
@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_settings_for_every_profile(name, recwarn):
    p = ls.get_profile(name)
    s = chapter8_settings(p)
    assert len(s["seeds"]) == 2 and set(s["seeds"]) <= set(p.seeds)
    assert s["tiny_width"] < p.width and s["weight_decay"] == p.weight_decay
    with pytest.raises(TypeError):
        chapter8_settings("cpu")


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_regularizer_rows_change_only_what_they_say(eps):
    p = ls.get_profile("smoke")
    specs = regularizer_specs(p, 1, eps, distill=True)
    baseline = ls.RunSpec.from_profile(p, loss=ls.smoothing_spec(eps), seed=1)
    assert specs["weight decay"] == baseline                  # the cached CE/LS model of chapter 3
    assert specs["weight decay"].key() == baseline.key()
    none = specs["none"]
    assert none == ls.RunSpec.from_profile(p, loss=ls.smoothing_spec(eps), seed=1, weight_decay=0.0)
    assert specs["dropout"] == ls.RunSpec.from_profile(p, loss=ls.smoothing_spec(eps), seed=1, weight_decay=0.0,
                                                       dropout=0.3)
    assert specs["augmentation"].augment and specs["augmentation"].weight_decay == 0.0
    d = specs["distillation"]
    loss = d.loss_spec()
    assert d.weight_decay == 0.0 and loss["name"] == ("distill_ls" if eps > 0 else "distill")
    assert ls.RunSpec.from_dict(loss["teacher"]) == ls.RunSpec.from_profile(p, loss={"name": "ce"}, seed=1)
    assert loss.get("epsilon", 0.0) == eps
    assert len({s.key() for s in specs.values()}) == len(specs)
    assert "distillation" not in regularizer_specs(p, 1, eps, distill=False)


def test_model_size_specs():
    p = ls.get_profile("smoke")
    m = model_size_specs(p, 0, 0.1)
    assert m["profile"] == ls.RunSpec.from_profile(p, loss=ls.smoothing_spec(0.1), seed=0)
    assert m["tiny"].width == chapter8_settings(p)["tiny_width"] and m["tiny"].model == p.model
    with pytest.raises(ValueError):
        model_size_specs(p, 0, -0.1)


# --------------------------------------------------------------------------------------------- distillation + LS
def test_distill_ls_loss_is_distill_plus_smoothed_ce():
    from lsutils.train import Batch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 2, 2, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    tspec = ls.RunSpec.from_profile(ls.get_profile("smoke"), loss={"name": "ce"}, seed=0).to_dict()
    ctx = ls.LossContext(train_x=x, train_y=y, device=torch.device("cpu"), load_model=lambda spec: teacher)
    s_logits = torch.randn(8, 3, generator=g)
    batch = Batch(x[:8], torch.arange(8))
    t_logits = teacher(x[:8]).detach()
    for eps, beta in [(0.0, 0.5), (0.1, 0.5), (0.2, 0.0), (0.3, 1.0)]:
        loss = ls.build_loss({"name": "distill_ls", "teacher": tspec, "temperature": 4.0, "beta": beta,
                              "epsilon": eps}, ctx)
        assert loss.wants_batch
        expected = beta * ls.distillation_loss(s_logits, t_logits, None, 4.0, 1.0) \
            + (1 - beta) * F.cross_entropy(s_logits, y[:8], label_smoothing=eps)
        torch.testing.assert_close(loss(s_logits, y[:8], batch), expected)
        if eps == 0.0:   # identical to chapter 5's "distill" loss
            plain = ls.build_loss({"name": "distill", "teacher": tspec, "temperature": 4.0, "beta": beta}, ctx)
            torch.testing.assert_close(loss(s_logits, y[:8], batch), plain(s_logits, y[:8], batch))
    with pytest.raises(ValueError):
        ls.build_loss({"name": "distill_ls", "teacher": tspec, "temperature": 4.0, "beta": 0.5, "epsilon": 0.1})
    with pytest.raises(ValueError):
        ls.build_loss({"name": "distill_ls", "teacher": tspec, "temperature": 4.0, "beta": 0.5, "epsilon": 1.5}, ctx)


def test_distill_ls_trains_through_the_cached_trainer(tmp_data_root, fake_fashion_mnist_debian):
    """A student with the 'distill_ls' loss trains end to end (teacher from the cache, tiny fake data)."""
    base = dict(dataset="fashion_mnist", n_train=200, n_val=50, data_seed=0, model="mlp", width=8, epochs=2,
                batch_size=25, lr=3e-3, weight_decay=0.0, augment=False, seed=0)
    teacher = ls.RunSpec(loss={"name": "ce"}, **base)
    student = ls.RunSpec(loss={"name": "distill_ls", "teacher": teacher.to_dict(), "temperature": 2.0,
                               "beta": 0.5, "epsilon": 0.1}, **base)
    run = ls.train_model(student, progress=False)
    assert not run.from_cache and len(run.history["train_loss"]) == 2
    assert math.isfinite(run.history["train_loss"][0])
    assert ls.train_model(student, progress=False).from_cache
