"""Tests of lsutils.book.regularizers (chapter 8)."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

import lsutils as ls  # noqa: E402
from lsutils.book import regularizers as ch  # noqa: E402


@pytest.fixture(scope="module")
def small_trained(fashion_mnist_small):
    """A small MLP trained for 2 epochs on real Fashion-MNIST (1,000 images): (model, test split)."""
    ds = fashion_mnist_small
    model = ls.build_model("mlp", 10, 1, width=32)
    ls.fit(model, ds.train.x, ds.train.y, F.cross_entropy, epochs=2, batch_size=100, lr=3e-3, device="cpu",
           progress=False)
    return model, ds.test


def _padded_batch(seed: int = 0, k: int = 11, pad: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, k, 6, generator=g) * 2
    target = torch.randint(1, k, (3, 6), generator=g)
    target[0, 4:] = pad
    target[2, 2:] = pad
    return logits, target


def test_run_scores_on_a_real_model(small_trained):
    model, test = small_trained
    r = ch.run_scores(model, test.x, test.y)
    z = ls.predict_logits(model, test.x)
    assert r["acc"] == pytest.approx(ls.accuracy(z, test.y)) and r["nll"] == pytest.approx(ls.nll(z, test.y))
    assert r["ece"] == pytest.approx(ls.expected_calibration_error(z.softmax(1), test.y), abs=1e-6)
    assert r["aurc"] == pytest.approx(ls.metrics.selective_report(z, test.y)["aurc"])
    with pytest.raises(ValueError):
        ch.run_scores(model, test.x, test.y[:-1])


def test_compare_confidences_on_a_real_model(small_trained, fashion_mnist_small):
    model, test = small_trained
    out = ch.compare_confidences(model, fashion_mnist_small.val, test, ps=(1, 2, 4), coverages=(0.5,))
    z_val = ls.predict_logits(model, fashion_mnist_small.val.x)
    assert out["p"] == ls.metrics.select_pnorm(z_val, fashion_mnist_small.val.y, ps=(1, 2, 4))["p"]
    fit = ls.metrics.select_pnorm(z_val, fashion_mnist_small.val.y, ps=(1, 2, 4))
    assert out["fallback"] == (fit["msp_aurc"] <= fit["aurc"][out["p"]])
    assert out["val_aurc"] == {"MSP": fit["msp_aurc"], "MaxLogit-pNorm": fit["aurc"][out["p"]]}
    assert all(r["fallback"] == out["fallback"] for r in out["rows"])
    names = [r["confidence"] for r in out["rows"]]
    assert names == ["MSP", "MaxLogit-pNorm"] and set(out["scores"]) == set(names)
    z = ls.predict_logits(model, test.x)
    norm = out["rows"][1]
    assert norm["aurc"] == pytest.approx(ls.aurc(ls.metrics.pnorm_logit_score(z, out["p"]), z.argmax(1) == test.y))
    assert out["rows"][0]["acc"] == norm["acc"]                 # same predictions, another ranking
    with pytest.raises(TypeError):
        ch.compare_confidences(model, (test.x, test.y), test)


def test_differences_and_table():
    rows = [{"row": g, "epsilon": e, "seed": s, "acc": a, "ece": c}
            for g, e, s, a, c in [("a", 0.0, 0, 0.8, 0.1), ("a", 0.0, 1, 0.9, 0.2), ("a", 0.1, 0, 0.7, 0.1),
                                  ("a", 0.1, 1, 0.95, 0.3), ("b", 0.0, 0, 0.6, 0.0), ("b", 0.1, 0, 0.5, 0.0)]]
    assert ch.ls_differences(rows, "row", "a", "acc") == pytest.approx([-0.1, 0.05])
    assert ch.ls_differences(rows, "row", "b", "acc") == pytest.approx([-0.1])
    t = ch.with_without_table(rows, "row", ["acc", "ece"], scale={"acc": 100}, digits=1)
    assert list(t.index) == ["a", "b"]
    assert t.loc["a", ("acc", "CE")] == "85.0 ± 7.1" and t.loc["a", ("acc", "LS − CE")] == "-2.5 ± 10.6"
    assert t.loc["b", ("ece", "LS")] == "0.0 ± 0.0"
    with pytest.raises(ValueError):
        ch.ls_differences(rows, "row", "zzz", "acc")
    with pytest.raises(ValueError):
        ch.ls_differences(rows + [{"row": "b", "epsilon": 0.2, "seed": 0, "acc": 0.1, "ece": 0.0}], "row", "b", "acc")
    with pytest.raises(ValueError):
        ch.with_without_table([{"row": "a"}], "row", ["acc"])


def test_plots():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"row": g, "epsilon": e, "seed": s, "acc": a}
            for g, e, s, a in [("a", 0.0, 0, 0.8), ("a", 0.0, 1, 0.9), ("a", 0.1, 0, 0.7), ("b", 0.0, 0, 0.6),
                               ("b", 0.1, 0, 0.5), ("b", 0.1, 1, 0.55)]]
    ax = ch.plot_with_without(rows, by="row", metric="acc", scale=100)
    means = sorted(round(float(y), 6) for c in ax.containers for y in c.lines[0].get_ydata())
    assert means == sorted([85.0, 70.0, 60.0, 52.5])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CE (ε = 0)", "LS (ε = 0.1)"]
    with pytest.raises(ValueError):
        ch.plot_with_without([{"row": "a"}], by="row", metric="acc")
    ax = ch.plot_ls_difference(rows, by="row", metric="acc", scale=100)
    means = [round(float(c.lines[0].get_ydata()[0]), 6) for c in ax.containers]
    assert means == [-10.0, -10.0]           # only seeds with both runs are paired: a: 70 - 80, b: 50 - 60
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6])
    ok = torch.tensor([True, True, False, True])
    ax = ch.plot_risk_coverage({"x": (conf, ok), "y": (1 - conf, ok)}, max_coverage=0.5)
    assert len(ax.lines) == 2 and ax.get_xlim() == (0.0, 50.0)
    with pytest.raises(TypeError):
        ch.plot_risk_coverage({})
    plt.close("all")


def test_token_report_ignores_padding():
    logits, target = _padded_batch()
    r = ch.token_loss_report(logits, target, 0.1, pad_index=0)
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
    r = ch.token_loss_report(z, t, 0.2, pad_index=0)
    assert r["perplexity"] == pytest.approx(7.0) and r["ls_loss"] == pytest.approx(math.log(7))


def test_token_report_annotated_kl_is_zero_at_its_target_and_shifted_ce_elsewhere():
    logits, target = _padded_batch(seed=3)
    k = logits.shape[1]
    keep = target != 0
    qq = ls.losses.annotated_transformer_targets(target.reshape(-1), k, 0.1, 0).reshape(target.shape + (k,))
    z_opt = torch.where(qq > 0, qq.clamp_min(1e-30).log(), torch.full_like(qq, -60.0)).movedim(-1, 1)
    assert ch.token_loss_report(z_opt, target, 0.1, 0)["annotated_kl"] == pytest.approx(0.0, abs=1e-5)
    logp = logits.log_softmax(1).movedim(1, -1)
    ce = -(qq * logp).sum(-1)[keep].mean()
    ent = -(qq * qq.clamp_min(1e-30).log()).sum(-1)[keep].mean()
    assert ch.token_loss_report(logits, target, 0.1, 0)["annotated_kl"] == pytest.approx(float(ce - ent), rel=1e-5)


@pytest.mark.parametrize("call, exc", [
    (lambda: ch.token_loss_report(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long), 0.1, 0), ValueError),
    (lambda: ch.token_loss_report(torch.zeros(1, 5, 3), torch.zeros(1, 4, dtype=torch.long), 0.1, 0), ValueError),
    (lambda: ch.token_loss_report(torch.zeros(1, 5, 3), torch.zeros(1, 3, dtype=torch.long), 0.1, 0), ValueError),
    (lambda: ch.token_loss_report(torch.zeros(1, 5, 3), torch.ones(1, 3, dtype=torch.long), 0.1, 9), ValueError),
    (lambda: ch.token_loss_report(torch.zeros(1, 5, 3), torch.ones(1, 3, dtype=torch.long), 1.5, 0), ValueError),
    (lambda: ch.token_loss_report(torch.zeros(1, 5, 3), torch.full((1, 3), 7), 0.1, 0), ValueError),
])
def test_token_errors(call, exc):
    with pytest.raises(exc):
        call()


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_settings_for_every_profile(name, recwarn):
    p = ls.get_profile(name)
    s = ch.chapter8_settings(p)
    assert len(s["seeds"]) == 2 and set(s["seeds"]) <= set(p.seeds)
    assert s["tiny_width"] < p.width and s["weight_decay"] == p.weight_decay
    with pytest.raises(TypeError):
        ch.chapter8_settings("cpu")


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_regularizer_rows_change_only_what_they_say(eps):
    p = ls.get_profile("smoke")
    specs = ch.regularizer_specs(p, 1, eps, distill=True)
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
    assert d.weight_decay == 0.0 and loss["name"] == "distill" and loss.get("epsilon", 0.0) == eps
    assert ls.RunSpec.from_dict(loss["teacher"]) == ls.RunSpec.from_profile(p, loss={"name": "ce"}, seed=1)
    assert loss.get("epsilon", 0.0) == eps
    assert len({s.key() for s in specs.values()}) == len(specs)
    assert "distillation" not in ch.regularizer_specs(p, 1, eps, distill=False)


def test_model_size_specs():
    p = ls.get_profile("smoke")
    m = ch.model_size_specs(p, 0, 0.1)
    assert m["profile"] == ls.RunSpec.from_profile(p, loss=ls.smoothing_spec(0.1), seed=0)
    assert m["tiny"].width == ch.chapter8_settings(p)["tiny_width"] and m["tiny"].model == p.model
    with pytest.raises(ValueError):
        ch.model_size_specs(p, 0, -0.1)
