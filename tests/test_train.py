"""Tests of lsutils.train: the fast trainer, label noise, run specs, the trained-model cache, the benchmark."""
from __future__ import annotations

import copy
import math
import dataclasses
import os
import pathlib
import random
import re
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from lsutils import data as lsdata
from lsutils import models, train
from lsutils.losses import register_loss
from lsutils.train import Batch, RunSpec, add_label_noise, augment_batch, cache_path, fit, train_many, train_model

REPO = pathlib.Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------- test losses (unique names)
_RECORD: dict[str, list] = {"contexts": [], "teachers": []}


@register_loss("_train_test_ce")
def _ce_factory(scale: float = 1.0):
    return lambda logits, y: scale * F.cross_entropy(logits, y)


@register_loss("_train_test_ctx")
def _ctx_factory(context):
    if context is None:       # RunSpec validates its loss with context=None
        return None
    _RECORD["contexts"].append(context)
    return lambda logits, y: F.cross_entropy(logits, y)


@register_loss("_train_test_teacher")
def _teacher_factory(teacher, context):
    if context is None:
        return None
    model = context.load_model(teacher)
    _RECORD["teachers"].append(model)
    return lambda logits, y: F.cross_entropy(logits, y)


class _BatchRecorder:
    """A ``wants_batch`` loss with a ``start_epoch`` hook that records what the trainer hands it."""

    wants_batch = True

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.epochs: list[tuple[int, int]] = []
        self.indices: list[list[torch.Tensor]] = []
        self.x_matches = True

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.epochs.append((epoch, epochs))
        self.indices.append([])

    def __call__(self, logits, y, batch):
        assert isinstance(batch, Batch)
        self.indices[-1].append(batch.index.clone())
        self.x_matches &= torch.equal(batch.x, self.x[batch.index])
        return F.cross_entropy(logits, y)


# ----------------------------------------------------------------------------------- fixtures
def _tiny(n: int = 96, k: int = 3, side: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, 1, side, side, generator=g) + y.view(-1, 1, 1, 1).float()  # learnable
    return x, y


def _model(k: int = 3, seed: int = 0, side: int = 8):
    torch.manual_seed(seed)
    return models.build_model("cnn", k, 1, width=4, image_size=side)


def _fake_dataset(n_train: int = 64, n_val: int = 32, seed: int = 0) -> lsdata.ImageDataset:
    """Fashion-MNIST-shaped random data (28×28, 10 classes) with the sizes a spec asks for."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.arange(n) % 10
        return lsdata.Split(torch.randn(n, 1, 28, 28, generator=g) + 0.3 * y.view(-1, 1, 1, 1), y)

    return lsdata.ImageDataset(name="fashion_mnist", classes=lsdata.FASHION_MNIST_CLASSES, train=split(n_train),
                               val=split(n_val), test=split(8), mean=(0.0,), std=(1.0,))


def _spec(**kw) -> RunSpec:
    values = dict(dataset="fashion_mnist", n_train=64, n_val=32, data_seed=0, model="cnn", width=4,
                  loss={"name": "_train_test_ce"}, epochs=1, batch_size=32, lr=3e-3, weight_decay=1e-2,
                  augment=False, seed=0)
    values.update(kw)
    return RunSpec(**values)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def _fit(model, x, y, **kw):
    args = dict(epochs=2, batch_size=16, lr=3e-3, device="cpu", progress=False)
    args.update(kw)
    loss = args.pop("loss", F.cross_entropy)
    return fit(model, x, y, loss, **args)


# ----------------------------------------------------------------------------------- fit
def test_fit_is_deterministic_under_a_seed():
    x, y = _tiny()
    a, b, c = _model(), _model(), _model()
    ha = _fit(a, x, y, seed=3, val=(x[:20], y[:20]))
    hb = _fit(b, x, y, seed=3, val=(x[:20], y[:20]))
    _fit(c, x, y, seed=4)
    assert _same_weights(a, b)
    assert ha["train_loss"] == hb["train_loss"] and ha["val_acc"] == hb["val_acc"]
    assert not _same_weights(a, c)


def test_fit_learns_and_returns_history():
    x, y = _tiny(n=192)
    model = _model()
    h = _fit(model, x, y, epochs=4, lr=1e-2, val=lsdata.Split(x[:60], y[:60]))
    assert set(h) == {"train_loss", "train_acc", "val_loss", "val_acc", "val_ece", "val_conf", "seconds"}
    assert all(len(v) == 4 for v in h.values())
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert h["val_acc"][-1] > 0.6          # 3 well-separated classes: chance is 1/3
    assert not model.training               # left in eval mode
    assert all(s > 0 for s in h["seconds"])
    assert "val_loss" not in _fit(_model(), x, y, epochs=1)


def test_fit_batches_cover_each_example_once_per_epoch_and_call_hooks():
    x, y = _tiny(n=70)
    loss = _BatchRecorder(x)
    _fit(_model(), x, y, epochs=3, batch_size=16, loss=loss)
    assert loss.epochs == [(0, 3), (1, 3), (2, 3)]
    assert loss.x_matches
    orders = []
    for batches in loss.indices:
        sizes = [len(b) for b in batches]
        assert len(batches) == 5 and max(sizes) <= 16 and max(sizes) - min(sizes) <= 1   # 70 = 14 × 5
        order = torch.cat(batches)
        assert torch.equal(order.sort().values, torch.arange(70))
        orders.append(order)
    assert not torch.equal(orders[0], orders[1])   # reshuffled every epoch


def test_fit_progress_bar(capsys):
    x, y = _tiny(n=40)
    _fit(_model(), x, y, epochs=2, batch_size=16, progress=True, desc="tiny-run")
    err = capsys.readouterr().err
    assert "tiny-run" in err and "6/6" in err and "loss=" in err and "acc=" in err   # 2 epochs × 3 steps
    _fit(_model(), x, y, epochs=1, progress=False)
    assert capsys.readouterr().err == ""


def test_fit_batch_size_larger_than_data():
    x, y = _tiny(n=10)
    loss = _BatchRecorder(x)
    _fit(_model(), x, y, epochs=1, batch_size=64, loss=loss)
    assert [len(b) for b in loss.indices[0]] == [10]


def test_fit_with_augmentation_runs_and_is_seeded():
    x, y = _tiny(n=48)
    a, b = _model(), _model()
    _fit(a, x, y, augment=True, seed=1)
    _fit(b, x, y, augment=True, seed=1)
    assert _same_weights(a, b)


def test_fit_restores_global_rng_and_seeds_dropout():
    x, y = _tiny(n=48)
    a = models.build_model("cnn", 3, 1, width=4, image_size=8, dropout=0.5)
    c = copy.deepcopy(a)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    _fit(a, x, y, seed=5)
    assert torch.equal(torch.get_rng_state(), state)   # fit leaves the caller's random stream alone
    torch.manual_seed(999)                              # ... and does not depend on it
    _fit(c, x, y, seed=5)
    assert _same_weights(a, c)


def test_fit_on_epoch_end_sees_each_epoch_in_eval_mode_and_changes_nothing():
    x, y = _tiny(n=64)
    base = models.build_model("cnn", 3, 1, width=4, image_size=8, dropout=0.3)   # dropout: draws from torch's RNG
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    calls = []

    def probe(model, epoch, history):
        calls.append({"epoch": epoch, "training": model.training, "grad": torch.is_grad_enabled(),
                      "epochs_seen": len(history["train_loss"]), "val": list(history["val_acc"])})
        torch.rand(1000)                                  # drawing random numbers must not change training
        history["train_loss"].append(-1.0)                # nor can it edit the trainer's history
        return "ignored"

    ha = _fit(a, x, y, epochs=3, seed=2, val=(x[:16], y[:16]), on_epoch_end=probe)
    hb = _fit(b, x, y, epochs=3, seed=2, val=(x[:16], y[:16]))
    assert _same_weights(a, b) and ha["train_loss"] == hb["train_loss"]    # bit-identical to training without it
    assert [c["epoch"] for c in calls] == [0, 1, 2]
    assert not any(c["training"] or c["grad"] for c in calls)
    assert [c["epochs_seen"] for c in calls] == [1, 2, 3]                    # after that epoch's bookkeeping
    assert calls[-1]["val"] == ha["val_acc"]                                 # ... and its validation
    assert not a.training                                                    # fit still ends in eval mode

    # back in training mode after each call: the next epoch trains with dropout and BatchNorm updates
    modes = []
    _fit(_model(), x, y, epochs=2, on_epoch_end=lambda m, e, h: modes.append(m.training),
         loss=lambda logits, t: (modes.append(("step", logits.requires_grad)), F.cross_entropy(logits, t))[1])
    assert modes.count(False) == 2 and all(m == ("step", True) for m in modes if m is not False)


@pytest.mark.parametrize("bad", [3, "probe", object()])
def test_fit_on_epoch_end_must_be_callable(bad):
    x, y = _tiny(n=16)
    with pytest.raises(TypeError, match="on_epoch_end must be None or callable"):
        _fit(_model(), x, y, epochs=1, on_epoch_end=bad)


def test_fit_on_epoch_end_errors_propagate_and_restore_training_mode():
    x, y = _tiny(n=16)
    model = _model()

    def boom(m, epoch, history):
        raise RuntimeError("probe failed")

    with pytest.raises(RuntimeError, match="probe failed"):
        _fit(model, x, y, epochs=2, on_epoch_end=boom)
    assert model.training


# ----------------------------------------------------------------------------------- the run log
def test_run_log_records_train_model_load_or_train_and_fit(tmp_data_root, tmp_path, monkeypatch):
    log = tmp_path / "runs" / "chapter.jsonl"
    monkeypatch.setenv(train.RUN_LOG_ENV_VAR, str(log))
    monkeypatch.setenv("LSUTILS_PROFILE", "smoke")
    ds = _fake_dataset()
    spec = _spec(epochs=2)
    first = train_model(spec, progress=False, data=ds)
    again = train_model(spec, progress=False, data=ds)
    x, y = _tiny(n=32)
    custom = train.load_or_train({"what": "log-test"}, lambda: _model(),
                                 lambda m: _fit(m, x, y, epochs=3, batch_size=8), device="cpu")
    _fit(_model(), x, y, epochs=1)                           # a bare fit outside any cached call
    records = train.read_run_log(log)
    assert [r["kind"] for r in records] == ["train_model", "train_model", "load_or_train", "fit"]
    a, b, c, d = records
    assert a["spec"] == spec.to_dict() and a["key"] == first.key and not a["from_cache"] and b["from_cache"]
    assert a["profile"] == "smoke" and not a["nested"] and a["seconds"] >= 0
    assert a["fits"] == [{**a["fits"][0], "model_class": "SmallCNN", "input_shape": [1, 28, 28], "n_train": 64,
                          "epochs": 2, "batch_size": 32, "augment": False, "n_val": 32}]
    assert a["fits"][0]["n_params"] == sum(p.numel() for p in first.model.parameters())
    assert b["fits"] == []                                   # loaded: nothing trained
    assert c["config"] == {"what": "log-test"} and c["key"] == custom.key and not c["from_cache"]
    assert [(f["n_train"], f["epochs"], f["batch_size"], f["n_val"]) for f in c["fits"]] == [(32, 3, 8, 0)]
    assert d["fits"][0]["epochs"] == 1 and not d["from_cache"]
    assert all(r["format"] == "lsutils-run-log/1" for r in records)


def test_run_log_marks_a_teacher_loaded_while_training_as_nested(tmp_data_root, tmp_path, monkeypatch):
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv(train.RUN_LOG_ENV_VAR, str(log))
    teacher = _spec(seed=1)
    student = _spec(loss={"name": "_train_test_teacher", "teacher": teacher.to_dict()})
    train_model(teacher, progress=False, data=_fake_dataset())      # load_model(teacher) then hits the cache
    train_model(student, progress=False, data=_fake_dataset())
    first, inner, outer = train.read_run_log(log)    # the teacher's lookup finishes (and is logged) first
    assert not first["nested"] and not first["from_cache"] and len(first["fits"]) == 1
    assert inner["nested"] and inner["spec"] == teacher.to_dict() and inner["from_cache"] and inner["fits"] == []
    assert not outer["nested"] and outer["spec"] == student.to_dict() and len(outer["fits"]) == 1


def test_run_log_off_by_default_and_unwritable_warns_once(tmp_data_root, tmp_path, monkeypatch):
    monkeypatch.delenv(train.RUN_LOG_ENV_VAR, raising=False)
    x, y = _tiny(n=16)
    _fit(_model(), x, y, epochs=1)
    assert not list(tmp_path.rglob("*.jsonl"))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(train.RUN_LOG_ENV_VAR, str(blocker / "log.jsonl"))
    monkeypatch.setattr(train, "_RUN_LOG_WARNED", set())
    with pytest.warns(RuntimeWarning, match="cannot write the run log"):
        _fit(_model(), x, y, epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fit(_model(), x, y, epochs=1)                   # warned once per path; training goes on


def test_read_run_log_rejects_bad_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"kind": "fit"}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 3: expected a JSON object"):
        train.read_run_log(path)
    path.write_text('{"kind": "fit"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2: not JSON"):
        train.read_run_log(path)


def test_augment_batch_crops_and_flips():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    out1, out2 = augment_batch(x, g1), augment_batch(x, g2)
    assert out1.shape == x.shape and torch.equal(out1, out2)
    flips = augment_batch(x, torch.Generator().manual_seed(1), padding=0)
    for i in range(2):
        assert torch.equal(flips[i], x[i]) or torch.equal(flips[i], x[i].flip(2))
    # every crop is a window of the reflect-padded image (with or without a flip)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    crops = augment_batch(x, torch.Generator().manual_seed(2), padding=2, flip=False)
    for i in range(2):
        windows = [padded[i, :, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(crops[i], w) for w in windows)
    many = augment_batch(x.repeat(32, 1, 1, 1), torch.Generator().manual_seed(3))
    assert len({tuple(m.flatten()[:8].tolist()) for m in many}) > 4   # offsets differ across the batch
    with pytest.raises(ValueError, match="padding"):
        augment_batch(x, padding=6)
    with pytest.raises(ValueError, match="shape"):
        augment_batch(torch.zeros(3, 4))


@pytest.mark.parametrize("change, exc, match", [
    (dict(y=torch.zeros(95, dtype=torch.long)), ValueError, "same number"),
    (dict(x=torch.zeros(0, 1, 8, 8), y=torch.zeros(0, dtype=torch.long)), ValueError, "empty"),
    (dict(x=torch.full((96, 1, 8, 8), float("nan"))), ValueError, "NaN"),
    (dict(x=torch.zeros(96, 1, 8, 8, dtype=torch.long)), TypeError, "floating"),
    (dict(y=torch.zeros(96)), TypeError, "integer class indices"),
    (dict(y=torch.zeros(96, dtype=torch.int32)), TypeError, "torch.long"),
    (dict(y=torch.zeros(96, 1, dtype=torch.long)), ValueError, "1-D"),
    (dict(y=torch.full((96,), 3, dtype=torch.long)), ValueError, r"class index 3.*\[0, 2\]"),
    (dict(y=torch.full((96,), -1, dtype=torch.long)), ValueError, "class index -1"),
    (dict(epochs=0), ValueError, "epochs must be >= 1"),
    (dict(epochs=1.5), TypeError, "epochs must be an int"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(lr=0.0), ValueError, "lr must be"),
    (dict(lr=-1e-3), ValueError, "lr must be"),
    (dict(lr=float("nan")), ValueError, "lr must be"),
    (dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(augment="yes"), TypeError, "augment"),
    (dict(val=(torch.zeros(4, 1, 8, 8), torch.zeros(5, dtype=torch.long))), ValueError, "same number"),
    (dict(val=(torch.zeros(4, 1, 8, 8), torch.full((4,), 7, dtype=torch.long))), ValueError, "val y"),
    (dict(val=[1, 2, 3]), TypeError, "val must be"),
    (dict(loss="ce"), TypeError, "loss_fn must be callable"),
    (dict(loss=lambda logits, y: F.cross_entropy(logits, y, reduction="none")), ValueError, "scalar"),
    (dict(device="gpu0"), ValueError, "device"),
])
def test_fit_bad_inputs_raise_clearly(change, exc, match):
    x, y = _tiny()
    change = dict(change)
    x, y = change.pop("x", x), change.pop("y", y)
    with pytest.raises(exc, match=match):
        _fit(_model(), x, y, **change)


def test_fit_rejects_non_models_and_diverging_runs():
    x, y = _tiny()
    with pytest.raises(TypeError, match="nn.Module"):
        fit("model", x, y, F.cross_entropy, epochs=1, batch_size=8, lr=1e-3, progress=False)
    with pytest.raises(ValueError, match="augment=True needs images"):
        fit(torch.nn.Linear(4, 2), torch.zeros(8, 4), torch.zeros(8, dtype=torch.long), F.cross_entropy,
            epochs=1, batch_size=4, lr=1e-3, augment=True, device="cpu", progress=False)
    with pytest.raises(FloatingPointError, match="diverged"):
        _fit(_model(), x, y, loss=lambda logits, t: F.cross_entropy(logits, t) * float("inf"))


def test_evaluate_matches_manual_cross_entropy():
    x, y = _tiny(n=50)
    model = _model().eval()
    loss, acc = train.evaluate(model, x, y, batch_size=16)
    with torch.no_grad():
        logits = models.forward_logits(model, x)      # the trainer's arithmetic (bf16 body where it uses bf16)
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(1) == y).float().mean().item())


# ----------------------------------------------------------------------------------- label noise
def test_add_label_noise_fraction_seeding_and_other_classes():
    y = torch.arange(3000) % 4
    noisy = add_label_noise(y, 4, 0.3, seed=7)
    flipped = noisy != y
    assert int(flipped.sum()) == 900 and torch.equal(y, torch.arange(3000) % 4)   # exact count; input untouched
    assert torch.equal(noisy, add_label_noise(y, 4, 0.3, seed=7))
    assert not torch.equal(noisy, add_label_noise(y, 4, 0.3, seed=8))
    shift = ((noisy - y) % 4)[flipped]
    counts = torch.bincount(shift, minlength=4)
    assert counts[0] == 0 and all(abs(int(c) - 300) < 60 for c in counts[1:])   # uniform over the 3 others
    assert torch.equal(add_label_noise(y, 4, 0.0), y)
    assert bool((add_label_noise(y, 4, 1.0) != y).all())
    assert add_label_noise(y[:0], 4, 0.5).numel() == 0


@pytest.mark.parametrize("args, exc, match", [
    ((torch.zeros(5), 3, 0.1), TypeError, "integer"),
    ((torch.zeros(5, dtype=torch.long), 1, 0.1), ValueError, "num_classes"),
    ((torch.zeros(5, dtype=torch.long), 3, 1.5), ValueError, "fraction"),
    ((torch.full((5,), 4, dtype=torch.long), 3, 0.1), ValueError, "class index 4"),
    ((torch.zeros(5, 2, dtype=torch.long), 3, 0.1), ValueError, "1-D"),
])
def test_add_label_noise_bad_inputs(args, exc, match):
    with pytest.raises(exc, match=match):
        add_label_noise(*args)


# ----------------------------------------------------------------------------------- run specs
def test_spec_key_changes_with_every_field():
    base = _spec()
    changed = dict(dataset="cifar10", n_train=None, n_val=31, data_seed=1, model="mlp", width=5,
                   loss={"name": "_train_test_ce", "scale": 2.0}, epochs=2, batch_size=33, lr=1e-3,
                   weight_decay=0.0, augment=True, seed=1, label_noise=0.2, dropout=0.1, classes=(0, 1))
    assert set(changed) == {f.name for f in dataclasses.fields(RunSpec)}
    keys = {base.key()}
    for name, value in changed.items():
        keys.add(dataclasses.replace(base, **{name: value}).key())
    assert len(keys) == 1 + len(changed)
    assert _spec().key() == base.key() and len(base.key()) == 64
    assert _spec(lr=1).key() == _spec(lr=1.0).key()   # ints and floats normalised


def test_spec_key_depends_on_the_code_and_the_arithmetic(monkeypatch):
    key = _spec().key()
    monkeypatch.setattr(train, "code_fingerprint", lambda modules=(): "0" * 64)
    assert _spec().key() != key
    monkeypatch.undo()
    monkeypatch.setenv("LSUTILS_PRECISION", "fp32")
    fp32 = _spec().key()
    monkeypatch.setenv("LSUTILS_PRECISION", "bf16")
    assert _spec().key() != fp32


def test_code_fingerprint_ignores_docstrings_but_not_code(tmp_path, monkeypatch):
    (tmp_path / "fp_demo.py").write_text('"""Doc."""\ndef f(x):\n    """Doc."""\n    return x + 1  # note\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    base = train.code_fingerprint(["fp_demo"])
    assert base != train.code_fingerprint()
    train._module_fingerprint.cache_clear()
    (tmp_path / "fp_demo.py").write_text('"""Other words."""\ndef f(x):\n    """More."""\n    return x + 1\n')
    assert train.code_fingerprint(["fp_demo"]) == base          # documentation and comments do not count
    train._module_fingerprint.cache_clear()
    (tmp_path / "fp_demo.py").write_text('def f(x):\n    return x + 2\n')
    assert train.code_fingerprint(["fp_demo"]) != base          # code does
    train._module_fingerprint.cache_clear()


def test_a_changed_trainer_retrains(tmp_data_root, monkeypatch):
    ds = _fake_dataset()
    assert not train_model(_spec(), progress=False, data=ds).from_cache
    assert train_model(_spec(), progress=False, data=ds).from_cache
    real = train.code_fingerprint
    monkeypatch.setattr(train, "code_fingerprint", lambda modules=(): real(modules) + "changed")
    assert not train_model(_spec(), progress=False, data=ds).from_cache   # new code, new key: trained again


@register_loss("_train_test_free")
def _free_factory(context=None, **params):
    return lambda logits, y: F.cross_entropy(logits, y)


def test_spec_loss_is_frozen_and_thaws_back():
    teacher = _spec(seed=9)
    spec = _spec(loss={"name": "_train_test_free", "temperature": 4, "teacher": teacher.to_dict(), "ts": [1, 2]})
    hash(spec)
    assert isinstance(spec.loss, tuple)
    thawed = spec.loss_spec()
    assert thawed == {"name": "_train_test_free", "temperature": 4, "teacher": teacher.to_dict(), "ts": [1, 2]}
    assert RunSpec.from_dict(thawed["teacher"]) == teacher
    assert _spec(loss={"name": "_train_test_free", "teacher": teacher}) == \
        _spec(loss={"name": "_train_test_free", "teacher": teacher.to_dict()})
    assert RunSpec.from_dict(spec.to_dict()) == spec
    assert _spec(loss=spec.loss) == spec                   # the frozen form is accepted too


def test_spec_from_profile_and_validation():
    from lsutils.config import get_profile

    p = get_profile("smoke")
    spec = RunSpec.from_profile(p, loss={"name": "ls", "epsilon": 0.1}, seed=2, label_noise=0.2, data_seed=3)
    assert (spec.dataset, spec.n_train, spec.n_val, spec.model, spec.width, spec.epochs, spec.batch_size) == \
        (p.dataset, p.n_train, p.n_val, p.model, p.width, p.epochs, p.batch_size)
    assert (spec.seed, spec.label_noise, spec.data_seed) == (2, 0.2, 3)
    with pytest.raises(TypeError, match="unknown RunSpec field"):
        RunSpec.from_profile(p, loss={"name": "ce"}, seed=0, epoch=3)
    with pytest.raises(TypeError, match="Profile"):
        RunSpec.from_profile("cpu", loss={"name": "ce"}, seed=0)
    for bad, exc, match in [(dict(epochs=0), ValueError, "epochs"), (dict(lr=0), ValueError, "lr"),
                            (dict(label_noise=1.0), ValueError, "label_noise"),
                            (dict(dropout=-0.1), ValueError, "dropout"),
                            (dict(loss="ls"), TypeError, "loss must be a dict"),
                            (dict(loss={"epsilon": 0.1}), ValueError, "'name'"),
                            (dict(loss={"name": "ls", "w": torch.ones(2)}), TypeError, "plain data"),
                            (dict(loss={"name": "lss", "epsilon": 0.1}), ValueError, "unknown loss 'lss'"),
                            (dict(loss={"name": "ls", "epsilon": 2.0}), ValueError, "epsilon must be in"),
                            (dict(loss={"name": "ls", "eps": 0.1}), TypeError, "bad hyper-parameters"),
                            (dict(loss={"name": "distill", "temperature": 2.0, "teacher": {"loss": {"name": "ce"}}}),
                             TypeError, "missing"),
                            (dict(n_train=0), ValueError, "n_train"), (dict(augment=1), TypeError, "augment"),
                            (dict(dataset=""), ValueError, "dataset"), (dict(model="cnnn"), ValueError, "model"),
                            (dict(classes=(1, 1)), ValueError, "distinct"), (dict(epochs=2.0), TypeError, "epochs")]:
        with pytest.raises(exc, match=match):
            _spec(**bad)


# ----------------------------------------------------------------------------------- cache
def _no_tmp_files(root: pathlib.Path) -> bool:
    return not [p for p in (root / "cache").iterdir() if p.suffix != ".pt"]


def test_train_model_miss_then_hit(tmp_data_root):
    spec, ds = _spec(), _fake_dataset()
    first = train_model(spec, progress=False, data=ds)
    path = cache_path(spec)
    assert not first.from_cache and path.is_file() and path.parent == tmp_data_root / "cache"
    assert path.name == f"{spec.key()}.pt" and first.key == spec.key()
    assert _no_tmp_files(tmp_data_root)
    assert set(first.history) == {"train_loss", "train_acc", "val_loss", "val_acc", "val_ece", "val_conf", "seconds"}
    second = train_model(spec, progress=False)            # no data needed on a hit
    assert second.from_cache and _same_weights(first.model, second.model)
    assert second.history == first.history and not second.model.training
    other = train_model(_spec(seed=1), progress=False, data=ds)
    assert not other.from_cache and not _same_weights(first.model, other.model)


def test_train_model_same_spec_same_weights_in_fresh_caches(tmp_path, monkeypatch):
    runs = []
    for sub in ("a", "b"):
        monkeypatch.setenv(lsdata.DATA_ENV_VAR, str(tmp_path / sub))
        runs.append(train_model(_spec(), progress=False, data=_fake_dataset()))
    assert not runs[1].from_cache and _same_weights(runs[0].model, runs[1].model)


def _corrupt_truncated(path, other):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_garbage(path, other):
    path.write_bytes(random.Random(0).randbytes(2048))


def _corrupt_pickle_header(path, other):
    path.write_bytes(b"\x80\x0a" + random.Random(1).randbytes(512))   # torch.load warns about "protocol 10"


def _corrupt_wrong_key(path, other):
    path.write_bytes(other.read_bytes())          # a valid file of another spec


def _corrupt_missing_field(path, other):
    payload = torch.load(path, weights_only=True)
    del payload["history"]
    torch.save(payload, path)


def _corrupt_checksum(path, other):
    payload = torch.load(path, weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name] += 1.0
    torch.save(payload, path)


def _corrupt_not_a_dict(path, other):
    torch.save([1, 2, 3], path)


def _corrupt_wrong_shapes(path, other):
    from lsutils.train import _state_checksum
    import json

    payload = torch.load(path, weights_only=True)
    payload["meta"]["num_classes"] = 7
    meta = json.dumps(payload["meta"], sort_keys=True) + payload["config"]
    payload["checksum"] = _state_checksum(payload["state_dict"], payload["history"], meta)
    torch.save(payload, path)


@pytest.mark.parametrize("corrupt", [_corrupt_truncated, _corrupt_garbage, _corrupt_pickle_header, _corrupt_wrong_key, _corrupt_missing_field,
                                     _corrupt_checksum, _corrupt_not_a_dict, _corrupt_wrong_shapes])
def test_corrupt_cache_file_warns_and_retrains(tmp_data_root, corrupt):
    spec, ds = _spec(), _fake_dataset()
    good = train_model(spec, progress=False, data=ds)
    train_model(_spec(seed=1), progress=False, data=ds)
    corrupt(cache_path(spec), cache_path(_spec(seed=1)))
    with pytest.warns(RuntimeWarning, match="retraining") as record:
        again = train_model(spec, progress=False, data=ds)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert not again.from_cache and _same_weights(good.model, again.model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train_model(spec, progress=False).from_cache   # the file was rewritten
    assert _no_tmp_files(tmp_data_root)


def test_train_model_checks_data_against_spec(tmp_data_root):
    with pytest.raises(ValueError, match="n_train=64"):
        train_model(_spec(), progress=False, data=_fake_dataset(n_train=50))
    with pytest.raises(TypeError, match="ImageDataset"):
        train_model(_spec(), progress=False, data=(1, 2))
    with pytest.raises(TypeError, match="RunSpec"):
        train_model({"name": "ce"}, progress=False)


def test_train_model_label_noise_and_context(tmp_data_root):
    ds = _fake_dataset()
    _RECORD["contexts"].clear()
    train_model(_spec(loss={"name": "_train_test_ctx"}, label_noise=0.25, data_seed=0), progress=False, data=ds)
    ctx = _RECORD["contexts"][-1]
    expected = add_label_noise(ds.train.y, 10, 0.25, seed=0)
    assert torch.equal(ctx.train_y.cpu(), expected) and int((expected != ds.train.y).sum()) == 16
    assert torch.equal(ctx.train_x.cpu(), ds.train.x) and callable(ctx.load_model)


def test_train_model_teacher_through_load_model(tmp_data_root):
    ds = _fake_dataset()
    teacher = _spec(seed=5)
    _RECORD["teachers"].clear()
    student = _spec(loss={"name": "_train_test_teacher", "teacher": teacher.to_dict()})
    # load_model(teacher) calls train_model(teacher) without data: a cache hit once the teacher is trained
    train_model(teacher, progress=False, data=ds)
    run = train_model(student, progress=False, data=ds)
    assert not run.from_cache and _same_weights(_RECORD["teachers"][-1], train_model(teacher, progress=False).model)


def test_train_many_counts_cache_hits(tmp_data_root):
    ds = _fake_dataset()
    specs = [_spec(seed=s) for s in (0, 1)]
    first = train_many(specs, progress=False, data=ds)
    assert [r.from_cache for r in first] == [False, False]
    second = train_many(specs, progress=False)
    assert [r.from_cache for r in second] == [True, True] and [r.spec for r in second] == specs
    with pytest.raises(TypeError, match="specs\\[0\\]"):
        train_many([{"name": "ce"}])
    with pytest.raises(TypeError, match="unexpected keyword"):
        train_many(specs, epochs=3)


def test_train_model_on_real_fashion_mnist(fashion_mnist_root, monkeypatch):
    monkeypatch.setenv(lsdata.DATA_ENV_VAR, str(fashion_mnist_root))
    spec = _spec(n_train=1000, n_val=200, epochs=2, batch_size=100, seed=321)
    run = train_model(spec, progress=False)
    assert cache_path(spec).parent == fashion_mnist_root / "cache"
    assert run.history["val_acc"][-1] > 0.5      # 10 classes: chance is 0.1
    assert train_model(spec, progress=False).from_cache


# ----------------------------------------------------------------------------------- benchmark
def test_benchmark_quick_prints_ratio_last(fashion_mnist_root):
    env = dict(os.environ, **{lsdata.DATA_ENV_VAR: str(fashion_mnist_root)})
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_trainer.py"), "--quick"], env=env,
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1]), out.stdout
    assert any("user loop" in line and "samples/s" in line for line in lines)
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines if ":" in line}
    # the FLOP counter sees exactly the cpu-profile CNN's convolutions and matmuls (forward + both gradients,
    # no input gradient for the first layer): 2·MACs × (2 + 3 + 3 + 3) layers' worth, computed by hand
    macs = {"conv1": 14 * 14 * 32 * 9, "conv2": 7 * 7 * 64 * 9 * 32, "hidden": 3136 * 128, "classifier": 128 * 10}
    by_hand = 2 * (2 * macs["conv1"] + 3 * (macs["conv2"] + macs["hidden"] + macs["classifier"]))
    assert by_hand == 8_060_928
    assert fields["flops_per_sample"] == f"counted {by_hand} analytic {by_hand}", out.stdout
    from lsutils import config
    assert fields["precision"] == config.precision("cpu")
    assert fields["cpu"].endswith("bf16)") and len(fields["cpu"]) > len(" (no native bf16)")
    matmul = float(re.fullmatch(r"(\d+\.\d) GFLOP/s \(2048x2048, \d+ threads\)", fields["fp32_matmul"]).group(1))
    ours = float(re.search(r"([\d,]+) samples/s", fields["lsutils.fit (preloaded tensors, seeded permutation, "
                                                      "channels_last)"]).group(1).replace(",", ""))
    fraction = float(re.fullmatch(r"\d+\.\d\d", fields["peak_fraction"]).group(0))
    assert matmul > 0 and ours > 0
    assert fraction == pytest.approx(by_hand * ours / (matmul * 1e9), abs=0.011), out.stdout


@pytest.mark.parametrize("n", [1, 2, 4, 7, 8, 40])
def test_fit_runs_with_very_few_steps(n):
    # OneCycleLR divides by zero for 4 total steps; the trainer keeps lr constant for runs under 8 steps
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.randn(n, 1, 2, 2), torch.randint(0, 3, (n,))
    hist = fit(model, x, y, torch.nn.functional.cross_entropy, epochs=1, batch_size=1, lr=1e-2, device="cpu",
               progress=False)
    assert len(hist["train_loss"]) == 1 and math.isfinite(hist["train_loss"][0])
