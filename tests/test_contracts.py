"""The library's contracts, checked across modules (issue 13):

* one rule for scalar arguments: Python and numpy numbers and 0-d tensors alike, booleans refused;
* losses: NaN and infinity propagate (never an error, never a silent number), integer targets of any width, a clear error for
  tensors on different devices;
* metrics: tensors with gradients (and on another device) are accepted, detached, copied to the CPU;
* OOD scores against independent, hand-computed values;
* the cache refuses a pickle payload (``weights_only=True``) and retrains; ``load_or_train`` caches any model;
* the bf16 autocast path of the trainer runs on the CPU and agrees with fp32 up to bf16 rounding;
* class subsets in ``load_dataset`` / ``RunSpec``;
* ``stats.paired_comparison`` against SciPy's paired t-test.
"""
from __future__ import annotations

import math
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lsutils as ls
from lsutils import data as lsdata
from lsutils import losses as L
from lsutils import metrics as M

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------- scalars
@pytest.mark.parametrize("eps", [0.1, np.float32(0.1), np.float64(0.1), torch.tensor(0.1), torch.tensor([0.1])])
def test_scalar_rule_accepts_numbers_numpy_and_0d_tensors(eps):
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    want = F.cross_entropy(z, y, label_smoothing=0.1)
    torch.testing.assert_close(ls.smoothed_cross_entropy(z, y, eps), want, atol=1e-6, rtol=1e-6)
    assert ls.smoothing_spec(eps)["epsilon"] == pytest.approx(0.1)
    assert ls.metrics.calibration_report(z, y, temperature=eps)["acc"] == ls.accuracy(z, y)
    assert ls.energy_score(z, temperature=eps).shape == (4,)


@pytest.mark.parametrize("k", [10, np.int64(10), torch.tensor(10)])
def test_scalar_rule_for_integers(k):
    assert ls.smooth_targets(torch.tensor([2]), num_classes=k, epsilon=0.1).shape == (1, 10)
    assert ls.build_model("mlp", k, 1, width=4, image_size=2)(torch.zeros(1, 1, 2, 2)).shape == (1, 10)


@pytest.mark.parametrize("bad, exc", [(True, TypeError), (np.bool_(True), TypeError), ("0.1", TypeError),
                                      (torch.tensor([0.1, 0.2]), TypeError), (float("nan"), ValueError)])
def test_scalar_rule_refuses(bad, exc):
    with pytest.raises(exc, match="epsilon"):
        ls.smoothing_spec(bad)


def test_integer_arguments_refuse_floats_and_float_tensors():
    with pytest.raises(TypeError, match="num_classes"):
        ls.smooth_targets(torch.tensor([2]), num_classes=10.0, epsilon=0.1)
    with pytest.raises(TypeError, match="num_classes"):
        ls.smooth_targets(torch.tensor([2]), num_classes=torch.tensor(10.0), epsilon=0.1)


# --------------------------------------------------------------------------------------------- losses
def _teacherless_losses():
    """Every loss callable of the library on (logits, target), with its hyper-parameters."""
    sched = L.ScheduledSmoothingLoss(0.1, "linear", n_train=4)
    sched.start_epoch(0, 2)
    online = L.OnlineLabelSmoothingLoss(alpha=0.5, init="ls")
    online.start_epoch(0, 2)
    return {
        "smoothed_cross_entropy": lambda z, y: ls.smoothed_cross_entropy(z, y, 0.1),
        "fairseq": lambda z, y: L.fairseq_smoothed_nll_loss(z, y, 0.1),
        "annotated_transformer": lambda z, y: L.annotated_transformer_loss(z, y, 0.1, padding_idx=3),
        "als": lambda z, y: ls.als_loss(z, y, lam=1.0),
        "distillation": lambda z, y: ls.distillation_loss(z, torch.zeros_like(z), y, temperature=2.0, beta=0.5),
        "ls_schedule": sched,
        "online_ls": online,
        "registry ce": L.build_loss({"name": "ce"}, L.LossContext()),
        "registry ls": L.build_loss({"name": "ls", "epsilon": 0.1}, L.LossContext()),
        "registry als": L.build_loss({"name": "als", "lam": 2.0}, L.LossContext()),
    }


@pytest.mark.parametrize("name", list(_teacherless_losses()))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_losses_propagate_nan_and_inf(name, bad):
    loss = _teacherless_losses()[name]
    z = torch.randn(4, 5)
    z[1, 2] = bad
    out = loss(z, torch.tensor([0, 1, 2, 0]))
    assert isinstance(out, torch.Tensor) and not torch.isfinite(out).all(), f"{name} hid a {bad} logit"


@pytest.mark.parametrize("name", list(_teacherless_losses()))
@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_losses_accept_any_integer_target(name, dtype):
    losses = _teacherless_losses()
    z, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    want = losses[name](z, y)
    got = _teacherless_losses()[name](z, y.to(dtype))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("fn", [
    lambda z, y: ls.smoothed_cross_entropy(z, y, 0.1),
    lambda z, y: ls.als_loss(z, y, lam=1.0),
    lambda z, y: ls.distillation_loss(z, z.detach().clone(), y, temperature=2.0, beta=0.5),
    lambda z, y: L.OnlineLabelSmoothingLoss()(z, y),
])
def test_losses_name_both_devices_when_they_differ(fn):
    z = torch.randn(4, 3, device="meta")               # any device other than the target's
    with pytest.raises(ValueError, match="same device.*meta.*cpu"):
        fn(z, torch.tensor([0, 1, 2, 0]))


def test_distillation_refuses_teacher_on_another_device():
    with pytest.raises(ValueError, match="same device"):
        ls.distillation_loss(torch.randn(2, 3), torch.randn(2, 3, device="meta"), None, temperature=1.0)


# --------------------------------------------------------------------------------------------- metrics
def _requires_grad_case():
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(200, 4, generator=g)
    y = torch.where(torch.rand(200, generator=g) < 0.7, z.argmax(1), torch.randint(0, 4, (200,), generator=g))
    return z.requires_grad_(True), y


@pytest.mark.parametrize("fn", [
    lambda z, y: M.expected_calibration_error(z.softmax(1), y),
    lambda z, y: M.max_calibration_error(z.softmax(1), y),
    lambda z, y: M.calibration_bins(z.softmax(1), y)["count"].sum(),
    lambda z, y: M.calibration_report(z, y)["ece"],
    lambda z, y: M.fit_temperature(z, y),
    lambda z, y: M.accuracy(z, y),
    lambda z, y: M.nll(z, y),
    lambda z, y: M.msp_score(z).sum(),
    lambda z, y: M.aurc(M.msp_score(z), z.argmax(1) == y),
    lambda z, y: M.ood_metrics(M.max_logit_score(z), M.max_logit_score(z - 1))["auroc"],
])
def test_metrics_accept_tensors_with_gradients(fn):
    z, y = _requires_grad_case()
    value = fn(z, y)
    plain = fn(z.detach(), y)
    assert float(value) == pytest.approx(float(plain))
    assert z.grad is None                                 # nothing was backpropagated, nothing was kept


def test_metrics_accept_int32_labels_and_detach_to_cpu():
    z, y = _requires_grad_case()
    assert M.expected_calibration_error(z.softmax(1), y.int()) == M.expected_calibration_error(z.detach().softmax(1), y)
    assert M.msp_score(z).device.type == "cpu" and not M.msp_score(z).requires_grad


def test_plot_reliability_accepts_tensors_with_gradients():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z, y = _requires_grad_case()
    ax = ls.plot_reliability(z.softmax(1), y)
    assert ax.texts                                       # the ECE box and the per-bin counts
    plt.close(ax.figure)


def test_ood_scores_against_hand_computed_values():
    # logits (0, log 3): softmax (1/4, 3/4); (log 2, log 2, 0): softmax (2/5, 2/5, 1/5)
    z = torch.tensor([[0.0, math.log(3.0), -60.0]], dtype=torch.float64)      # the third class: exp(-60) is negligible
    assert M.msp_score(z).item() == pytest.approx(0.75, rel=1e-12)
    assert M.max_logit_score(z).item() == pytest.approx(math.log(3.0), rel=1e-12)
    assert M.energy_score(z).item() == pytest.approx(math.log(4.0), rel=1e-12)
    z2 = torch.tensor([[math.log(2.0), math.log(2.0), 0.0]], dtype=torch.float64)
    assert M.msp_score(z2).item() == pytest.approx(0.4, rel=1e-12)
    assert M.energy_score(z2).item() == pytest.approx(math.log(5.0), rel=1e-12)
    # energy at temperature T: T * log(sum exp(z / T)); with T = 2 and z = (0, 2 log 3): 2 log(1 + 3)
    z3 = torch.tensor([[0.0, 2 * math.log(3.0)]], dtype=torch.float64)
    assert M.energy_score(z3, temperature=2.0).item() == pytest.approx(2 * math.log(4.0), rel=1e-12)


def test_auroc_and_aupr_against_definitions():
    # 2 ID scores (positive) and 2 OOD scores: pairs (ID > OOD): (3>1, 3>2, 2.5>1, 2.5>2) -> AUROC 1
    assert M.ood_metrics(torch.tensor([3.0, 2.5]), torch.tensor([1.0, 2.0]))["auroc"] == 1.0
    # ID (1, 4), OOD (2, 3): ID beats OOD in 2 of 4 pairs -> AUROC 0.5
    m = M.ood_metrics(torch.tensor([1.0, 4.0]), torch.tensor([2.0, 3.0]))
    assert m["auroc"] == 0.5
    # AUPR-In = average precision, ranking 4 (ID), 3, 2 (OOD), 1 (ID): precision at the ID hits 1/1 and 2/4 -> (1 + 0.5) / 2
    assert m["aupr_in"] == pytest.approx(0.75)
    # AUPR-Out: OOD positive, score negated: ranking 1 (ID), 2 (OOD), 3 (OOD), 4 (ID): hits at ranks 2, 3 -> (1/2 + 2/3) / 2
    assert m["aupr_out"] == pytest.approx((0.5 + 2 / 3) / 2)


# --------------------------------------------------------------------------------------------- cache
class _Boom:
    """Unpickling this runs code: a payload the cache must refuse, not execute."""

    def __reduce__(self):
        return (os.system, ("echo pwned > " + os.environ.get("LSUTILS_TEST_PWNED", "/dev/null"),))


def _spec(**kw):
    values = dict(dataset="fashion_mnist", n_train=64, n_val=32, data_seed=0, model="mlp", width=4,
                  loss={"name": "ce"}, epochs=1, batch_size=32, lr=3e-3, weight_decay=1e-2, augment=False, seed=0)
    values.update(kw)
    return ls.RunSpec(**values)


def _fake_dataset(n_train: int = 64, n_val: int = 32) -> lsdata.ImageDataset:
    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.arange(n) % 10
        return lsdata.Split(torch.randn(n, 1, 28, 28, generator=g) + 0.3 * y.view(-1, 1, 1, 1), y)

    return lsdata.ImageDataset(name="fashion_mnist", classes=lsdata.FASHION_MNIST_CLASSES, train=split(n_train),
                               val=split(n_val), test=split(8), mean=(0.0,), std=(1.0,))


def test_cache_refuses_a_pickle_payload_and_retrains(tmp_data_root, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LSUTILS_TEST_PWNED", str(marker))
    spec, ds = _spec(), _fake_dataset()
    good = ls.train_model(spec, progress=False, data=ds)
    path = ls.train.cache_path(spec)
    with open(path, "wb") as f:                          # a file that runs os.system when unpickled
        pickle.dump({"format": ls.train.CACHE_FORMAT, "payload": _Boom()}, f)
    with pytest.warns(RuntimeWarning, match="cannot be read.*retraining"):
        again = ls.train_model(spec, progress=False, data=ds)
    assert not marker.exists(), "the cache executed a pickled payload"
    assert not again.from_cache
    for a, b in zip(good.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_load_or_train_caches_any_model(tmp_data_root):
    calls = []

    def build():
        torch.manual_seed(0)
        return nn.Linear(3, 2)

    def train(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.add_(1.0)
        return {"loss": [1.0, 0.5]}

    first = ls.train.load_or_train({"what": "demo", "seed": 0}, build, train, device="cpu")
    second = ls.train.load_or_train({"what": "demo", "seed": 0}, build, train, device="cpu")
    other = ls.train.load_or_train({"what": "demo", "seed": 1}, build, train, device="cpu")
    assert calls == [1, 1] and not first.from_cache and second.from_cache and not other.from_cache
    assert second.history == {"loss": [1.0, 0.5]} and torch.equal(first.model.weight, second.model.weight)
    assert not second.model.training
    with pytest.raises(TypeError, match="plain data|JSON|serializable"):
        ls.train.load_or_train({"w": torch.ones(1)}, build, train, device="cpu")
    with pytest.raises(TypeError, match="history as a dict"):
        ls.train.load_or_train({"what": "bad"}, build, lambda m: [1.0], device="cpu")


def test_load_or_train_key_includes_the_given_code(tmp_data_root, monkeypatch):
    key = ls.train._key({"x": 1}, ("lsutils.stats",), torch.device("cpu"))
    assert key != ls.train._key({"x": 1}, (), torch.device("cpu"))
    assert key != ls.train._key({"x": 2}, ("lsutils.stats",), torch.device("cpu"))


# --------------------------------------------------------------------------------------------- bf16 on the CPU
def test_fit_under_bf16_autocast_on_the_cpu_matches_fp32(monkeypatch):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(256) % 4
    x = torch.randn(256, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()
    hist, logits = {}, {}
    for mode in ("fp32", "bf16"):
        monkeypatch.setenv("LSUTILS_PRECISION", mode)
        assert ls.config.precision("cpu") == mode
        torch.manual_seed(0)
        model = ls.build_model("cnn", 4, 1, width=4, image_size=8)
        hist[mode] = ls.fit(model, x, y, F.cross_entropy, epochs=3, batch_size=64, lr=1e-2, device="cpu",
                            progress=False, val=(x, y))
        logits[mode] = ls.predict_logits(model, x)
        assert next(model.parameters()).dtype == torch.float32         # weights stay float32 under autocast
        assert model.classifier.weight.stride()[0] >= 1 and logits[mode].dtype == torch.float32
    assert hist["bf16"]["val_acc"][-1] == pytest.approx(hist["fp32"]["val_acc"][-1], abs=0.1)
    assert hist["bf16"]["train_loss"][-1] == pytest.approx(hist["fp32"]["train_loss"][-1], rel=0.2)
    assert hist["bf16"]["train_loss"] != hist["fp32"]["train_loss"]     # bf16 really ran


def test_precision_variable_is_checked(monkeypatch):
    monkeypatch.setenv("LSUTILS_PRECISION", "fp8")
    with pytest.raises(ValueError, match="LSUTILS_PRECISION"):
        ls.config.precision("cpu")


# --------------------------------------------------------------------------------------------- class subsets
def test_class_subsets(fashion_mnist_root):
    keep = (0, 6, 2)                      # T-shirt/top, Shirt, Pullover, relabelled 0, 1, 2
    ds = ls.load_dataset("fashion_mnist", n_train=90, n_val=30, n_test=60, classes=keep, root=fashion_mnist_root,
                         download=False)
    full = ls.load_dataset("fashion_mnist", n_val=0, root=fashion_mnist_root, download=False)
    assert ds.classes == ("T-shirt/top", "Shirt", "Pullover") and ds.num_classes == 3
    for split in (ds.train, ds.val, ds.test):
        assert set(split.y.tolist()) == {0, 1, 2}
    # every kept image is an image of its class in the full data set
    first = ds.test.x[0]
    idx = int(((full.test.x - first).abs().flatten(1).sum(1) == 0).nonzero()[0])
    assert keep[int(ds.test.y[0])] == int(full.test.y[idx])
    with pytest.raises(ValueError, match="distinct"):
        ls.load_dataset("fashion_mnist", classes=(1, 1), root=fashion_mnist_root, download=False)
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        ls.load_dataset("fashion_mnist", classes=(1, 10), root=fashion_mnist_root, download=False)
    spec = _spec(classes=keep, n_train=90, n_val=30)
    assert spec.classes == keep and spec.key() != _spec(n_train=90, n_val=30).key()


# --------------------------------------------------------------------------------------------- paired comparisons
def test_paired_comparison_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(5):
        base = rng.normal()
        rows += [{"arm": "a", "seed": seed, "v": base + 0.5 + 0.1 * rng.normal()},
                 {"arm": "b", "seed": seed, "v": base}]
    r = ls.paired_comparison(rows, "v", {"arm": "a"}, {"arm": "b"})
    a = [x["v"] for x in rows if x["arm"] == "a"]
    b = [x["v"] for x in rows if x["arm"] == "b"]
    t = stats.ttest_rel(a, b)
    assert r.t == pytest.approx(t.statistic) and r.p == pytest.approx(t.pvalue)
    ci = t.confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert r.verdict == "higher" and r.n == 5 and r.seeds == (0, 1, 2, 3, 4)


def test_paired_comparison_three_seeds_two_sd_is_p_007():
    # differences with mean exactly 2 sd: t = 2 sqrt(3) with 2 degrees of freedom, p = 0.074 — not significant at 0.05
    rows = [{"arm": "a", "seed": s, "v": d} for s, d in enumerate([1.0, 2.0, 3.0])]
    rows += [{"arm": "b", "seed": s, "v": 0.0} for s in range(3)]
    r = ls.paired_comparison(rows, "v", {"arm": "a"}, {"arm": "b"})
    assert r.mean == 2 * r.std and r.t == pytest.approx(2 * math.sqrt(3)) and r.p == pytest.approx(0.0742, abs=5e-4)
    assert r.verdict == "same" and r.word() == "no significant difference"


def test_paired_comparison_consumes_a_generator_once_and_checks_its_input():
    gen = ({"arm": arm, "seed": s, "v": s + (arm == "a")} for s in range(3) for arm in "ab")
    r = ls.paired_comparison(gen, "v", {"arm": "a"}, {"arm": "b"})
    assert r.diffs == (1.0, 1.0, 1.0) and r.p == 0.0 and r.verdict == "higher"
    rows = [{"arm": "a", "seed": 0, "v": 1.0}, {"arm": "b", "seed": 0, "v": 0.0}]
    with pytest.raises(ValueError, match="at least 2 shared seed"):
        ls.paired_comparison(rows, "v", {"arm": "a"}, {"arm": "b"})
    with pytest.raises(ValueError, match="no rows match"):
        ls.paired_comparison(rows, "v", {"arm": "c"}, {"arm": "b"})
    with pytest.raises(ValueError, match="several rows"):
        ls.paired_comparison(rows + rows, "v", {"arm": "a"}, {"arm": "b"})
    with pytest.raises(TypeError, match="dict of column"):
        ls.paired_comparison(rows, "v", "a", {"arm": "b"})
    with pytest.raises(ValueError, match="not a column"):
        ls.paired_comparison(rows, "w", {"arm": "a"}, {"arm": "b"})
