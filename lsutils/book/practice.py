"""Chapter 7, label smoothing in practice: noisy labels, ε schedules, online label smoothing, tuning ε.

The chapter's recipe, apart from the core (:mod:`lsutils`): its settings (:func:`practice_settings`), the pieces
of its two hand-run trainings (:func:`fresh_model`, :func:`fit_kwargs`, :class:`EpochProbe`, :class:`NoiseProbe`),
the summaries it draws from them (:func:`per_epoch_rows`, :func:`run_summary`, :func:`chance_agreement`,
:func:`off_target_mass`, :func:`score_model`), its search tools (:func:`random_search_configs`, :func:`select_best`)
and its figures. The losses themselves are the core's: ``{"name": "ls_schedule", ...}``
(:class:`~lsutils.losses.ScheduledSmoothingLoss`) and ``{"name": "online_ls", ...}``
(:class:`~lsutils.losses.OnlineLabelSmoothingLoss`).

Why hand-run trainings: the trainer (:func:`lsutils.train_model`) keeps scalar histories only. Memorisation per
epoch needs the model after every epoch (``fit``'s ``on_epoch_end`` callback, :class:`EpochProbe`), and online label
smoothing's learned soft targets live in the loss object. So the chapter calls :func:`lsutils.fit` itself, with the
spec's settings (:func:`fit_kwargs`) and the trainer's initialisation (:func:`fresh_model`) — the final weights are
bit-identical to ``train_model(spec)`` — and caches the result with :func:`lsutils.train.load_or_train`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from lsutils._validate import check_int, check_probability, check_tensor
from lsutils.book.common import md  # noqa: F401  (the chapter's generated prose: ch.md(...))

__all__ = ["md", "progress", "practice_settings", "fresh_model", "fit_kwargs", "EpochProbe", "NoiseProbe", "chance_agreement",
           "per_epoch_rows", "run_summary", "score_model", "method_label", "off_target_mass",
           "random_search_configs", "select_best", "plot_noise_curves", "plot_epsilon_schedules",
           "plot_method_comparison", "plot_soft_targets", "plot_validation_curve", "plot_search"]


# --------------------------------------------------------------------------------------------- settings
def practice_settings(profile: Any) -> dict[str, Any]:
    """The chapter's sizes for a compute profile.

    * ``seeds``: every seed of the profile (3 in ``cpu``), for paired comparisons;
    * ``eta``: 0.4, the fraction of training labels flipped to another class (symmetric noise);
      ``noise_epsilons``: ``(0.0, 0.1, 0.3)``, CE and two ε to choose from on clean validation;
      ``confirm_seeds``: two seeds after the profile's, on which CE and the chosen ε are trained again, so that
      the test comparison does not rest only on the seeds that chose ε;
    * ``schedule_epsilon``: 0.1, where the annealed schedules start; ``schedules``: ``("linear", "cosine")``;
      ``constant_epsilons``: ``(0.05, 0.1)``, the constant ε they are compared with (0.05 is their mean ε);
    * ``ols_alpha``: 0.5 (Zhang et al.'s value);
    * ``curve_epsilons``: the calibration chapter's grid ``(0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)`` (cached models);
    * ``grid_epsilons``: ``(0.0, 0.05, 0.1, 0.3)``, the grid search (4 cached models); ``search_budget``: its
      size, 4, also the number of random-search runs; ``search_seed``: the seed of the random draws;
      ``epsilon_range`` ``(0.01, 0.4)`` and ``lr_range`` ``(lr/3, 3·lr)``, where random search draws log-uniformly.

    >>> from lsutils.config import get_profile
    >>> s = practice_settings(get_profile("cpu"))
    >>> s["seeds"], s["confirm_seeds"], s["eta"], s["search_budget"]
    ((0, 1, 2), (3, 4), 0.4, 4)
    """
    for attr in ("seeds", "lr", "epochs"):
        if not hasattr(profile, attr):
            raise TypeError(f"profile must be an lsutils Profile (from get_profile()), got {type(profile).__name__}")
    seeds = tuple(profile.seeds)
    if len(seeds) < 2:
        raise ValueError(f"the profile needs at least two seeds for paired comparisons, got {profile.seeds}")
    grid = (0.0, 0.05, 0.1, 0.3)
    lr = float(profile.lr)
    confirm = (max(seeds) + 1, max(seeds) + 2)
    return {"seeds": seeds, "eta": 0.4, "noise_epsilons": (0.0, 0.1, 0.3), "confirm_seeds": confirm,
            "schedule_epsilon": 0.1, "schedules": ("linear", "cosine"), "constant_epsilons": (0.05, 0.1),
            "ols_alpha": 0.5, "curve_epsilons": (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3),
            "grid_epsilons": grid, "search_budget": len(grid), "search_seed": 0,
            "epsilon_range": (0.01, 0.4), "lr_range": (lr / 3.0, lr * 3.0)}


# --------------------------------------------------------------------------------------------- hand-run training
def progress(iterable: Any, desc: str) -> Any:
    """``iterable`` under one progress bar labelled ``desc`` (the notebook widget where ipywidgets is installed,
    else the text bar — without the warning ``tqdm.auto`` gives in a kernel without ipywidgets).

    >>> list(progress(range(3), "demo"))  # doctest: +SKIP
    [0, 1, 2]
    """
    from lsutils._validate import progress_bar

    if not isinstance(desc, str):
        raise TypeError(f"desc must be a str, got {type(desc).__name__}")
    return progress_bar(iterable, desc=desc)


def _check_spec(spec: Any) -> None:
    from lsutils.train import RunSpec

    if not isinstance(spec, RunSpec):
        raise TypeError(f"spec must be an lsutils RunSpec, got {type(spec).__name__}")


def fresh_model(spec: Any, data: Any) -> nn.Module:
    """The untrained model that :func:`lsutils.train_model` would train for ``spec``: same shape, same initial weights.

    Built under ``torch.manual_seed(spec.seed)`` inside ``torch.random.fork_rng()`` (the global generator is
    left as it was). ``data`` gives the number of classes, channels and image size.

    >>> import lsutils as ls
    >>> spec = ls.RunSpec.from_profile(ls.get_profile("smoke"), loss={"name": "ce"}, seed=0)
    >>> data = ls.load_profile_data(ls.get_profile("smoke"))   # doctest: +SKIP
    >>> torch.equal(fresh_model(spec, data).classifier.weight,
    ...             fresh_model(spec, data).classifier.weight)  # doctest: +SKIP
    True
    """
    from lsutils.models import build_model

    _check_spec(spec)
    if not (hasattr(data, "train") and hasattr(data, "num_classes")):
        raise TypeError(f"data must be an lsutils ImageDataset, got {type(data).__name__}")
    kw: dict[str, Any] = {"dropout": spec.dropout} if spec.dropout > 0 else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return build_model(spec.model, int(data.num_classes), int(data.train.x.shape[1]), width=spec.width,
                           image_size=int(data.train.x.shape[-1]), **kw)


def fit_kwargs(spec: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`lsutils.fit` that ``train_model(spec)`` uses: the spec's schedule and seed.

    >>> import lsutils as ls
    >>> spec = ls.RunSpec.from_profile(ls.get_profile("smoke"), loss={"name": "ce"}, seed=1)
    >>> sorted(fit_kwargs(spec))
    ['augment', 'batch_size', 'epochs', 'lr', 'seed', 'weight_decay']
    """
    _check_spec(spec)
    return {"epochs": spec.epochs, "batch_size": spec.batch_size, "lr": spec.lr,
            "weight_decay": spec.weight_decay, "seed": spec.seed, "augment": spec.augment}


class EpochProbe:
    """Looks at the model after every epoch of :func:`lsutils.fit`: pass it as ``fit(..., on_epoch_end=probe)``.

    ``EpochProbe(probe)`` calls ``probe(model)`` after each epoch (the trainer calls the probe once the epoch's
    validation is done, in eval mode, without gradients, with torch's random generators forked), keeps its dict of
    numbers, and :meth:`finish` returns them as ``{name: [one value per epoch]}``. The trainer guarantees that a
    probe that only measures leaves the weights exactly those of training without it (the chapter's tests compare
    them with ``lsutils.train_model(spec)``'s).

    >>> probe = EpochProbe(lambda m: {"n": 1.0})
    >>> m = torch.nn.Linear(2, 2)
    >>> probe(m, 0, {}); probe(m, 1, {}); probe.finish()
    {'n': [1.0, 1.0]}
    """

    def __init__(self, probe: Callable[[nn.Module], Mapping[str, float]]) -> None:
        if not callable(probe):
            raise TypeError(f"probe must be callable as probe(model) -> dict of numbers, got {type(probe).__name__}")
        self.probe = probe
        self.records: list[dict[str, float]] = []

    def __call__(self, model: nn.Module, epoch: int, history: Mapping[str, Any]) -> None:
        """``fit``'s ``on_epoch_end``: record ``probe(model)``."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"on_epoch_end is called as (model, epoch, history), got a {type(model).__name__}")
        out = self.probe(model)
        if not isinstance(out, Mapping) or not out:
            raise TypeError(f"probe(model) must return a non-empty dict of numbers, got {out!r}")
        self.records.append({str(k): float(v) for k, v in out.items()})

    def finish(self) -> dict[str, list[float]]:
        """The records as ``{name: [one value per epoch]}``."""
        if not self.records:
            raise ValueError("the probe has no record: was it passed to fit(..., on_epoch_end=probe)?")
        return {k: [r[k] for r in self.records] for k in self.records[0]}


class NoiseProbe:
    """What :class:`EpochProbe` measures after each epoch of a run on noisy labels, with early stopping built in.

    Called with the model after each of the run's ``epochs`` epochs, it returns:

    * ``memorised`` / ``clean_fit``: among the training examples whose label was flipped (``noisy_y !=
      data.train.y``), the fraction the model predicts as the **noisy** label / as the true class;
    * ``val_acc``: accuracy on the clean validation set;
    * ``checkpoint_epoch`` / ``checkpoint_test_acc``: early stopping with a checkpoint — the epoch with the best
      validation accuracy so far (the first on ties) and the *test* accuracy of that model;
    * ``test_acc``: the test accuracy at this epoch where it was computed (a new best validation accuracy, and
      the last epoch), else NaN. The test set is scored only there: it reports, it never chooses.
    """

    def __init__(self, data: Any, noisy_y: torch.Tensor, epochs: int) -> None:
        if not (hasattr(data, "train") and hasattr(data, "val") and hasattr(data, "test")):
            raise TypeError(f"data must be an lsutils ImageDataset, got {type(data).__name__}")
        check_tensor("noisy_y", noisy_y, floating=False)
        y = data.train.y
        if noisy_y.shape != y.shape:
            raise ValueError(f"noisy_y must have the shape of data.train.y {tuple(y.shape)}, got {tuple(noisy_y.shape)}")
        self.flipped = (noisy_y != y).nonzero().squeeze(1)
        if self.flipped.numel() == 0:
            raise ValueError("noisy_y equals data.train.y: no label was flipped, so there is nothing to memorise")
        self.data, self.noisy_y, self.epochs = data, noisy_y, check_int("epochs", epochs, minimum=1)
        self.epoch = 0
        self.best_val = -1.0
        self.checkpoint: tuple[int, float] = (0, float("nan"))

    def _accuracy(self, model: nn.Module, split: Any) -> float:
        from lsutils.models import predict_logits

        return float((predict_logits(model, split.x).argmax(1) == split.y).float().mean())

    def __call__(self, model: nn.Module) -> dict[str, float]:
        from lsutils.models import predict_logits

        if self.epoch >= self.epochs:
            raise RuntimeError(f"this probe was made for {self.epochs} epochs and has been called for all of them")
        self.epoch += 1
        pred = predict_logits(model, self.data.train.x[self.flipped]).argmax(1)
        val_acc = self._accuracy(model, self.data.val)
        test_acc = float("nan")
        if val_acc > self.best_val:
            self.best_val = val_acc
            test_acc = self._accuracy(model, self.data.test)
            self.checkpoint = (self.epoch, test_acc)
        elif self.epoch == self.epochs:
            test_acc = self._accuracy(model, self.data.test)
        return {"memorised": float((pred == self.noisy_y[self.flipped]).float().mean()),
                "clean_fit": float((pred == self.data.train.y[self.flipped]).float().mean()),
                "val_acc": val_acc, "test_acc": test_acc,
                "checkpoint_epoch": float(self.checkpoint[0]), "checkpoint_test_acc": self.checkpoint[1]}


def chance_agreement(accuracy: float, num_classes: int) -> float:
    """How often a model that never saw a flipped label predicts it anyway: ``(1 − accuracy) / (K − 1)``.

    A flipped label is drawn uniformly from the ``K − 1`` wrong classes, independently of the image. A model
    whose predictions do not depend on it is right with probability ``accuracy`` and otherwise predicts one of
    the wrong classes, which is the drawn one with probability ``1/(K − 1)`` on average. So this is the
    memorisation rate expected by chance (below ``1/K``, the rate of a uniform guess, whenever accuracy > 1/K).

    >>> round(chance_agreement(0.8, 10), 4)
    0.0222
    """
    accuracy = check_probability("accuracy", accuracy)
    k = check_int("num_classes", num_classes, minimum=2)
    return (1.0 - accuracy) / (k - 1)


_PROBE_KEYS = ("memorised", "clean_fit", "val_acc", "test_acc", "checkpoint_epoch", "checkpoint_test_acc")


def _check_probe_history(history: Any) -> int:
    if not isinstance(history, Mapping) or any(k not in history for k in _PROBE_KEYS):
        got = sorted(history) if isinstance(history, Mapping) else type(history).__name__
        raise ValueError(f"history must hold the lists {_PROBE_KEYS} (from NoiseProbe); got keys {got}")
    n = len(history["memorised"])
    if n == 0 or any(len(history[k]) != n for k in _PROBE_KEYS):
        raise ValueError(f"history's lists {_PROBE_KEYS} must be non-empty and of equal length, got "
                         f"{[len(history[k]) for k in _PROBE_KEYS]}")
    return n


def per_epoch_rows(history: Mapping[str, Sequence[float]], num_classes: int, **labels: Any) -> list[dict[str, Any]]:
    """One row per epoch of a probed run: ``labels``, ``epoch`` (1-based), ``memorised``, ``clean_fit``, ``val_acc``.

    Adds ``chance``: :func:`chance_agreement` of that epoch's (clean) validation accuracy.

    >>> h = {"memorised": [0.1, 0.5], "clean_fit": [0.6, 0.3], "val_acc": [0.7, 0.6], "test_acc": [0.7, 0.6],
    ...      "checkpoint_epoch": [1, 1], "checkpoint_test_acc": [0.7, 0.7]}
    >>> [r["epoch"] for r in per_epoch_rows(h, 10, seed=0)], per_epoch_rows(h, 10, seed=0)[0]["seed"]
    ([1, 2], 0)
    """
    n = _check_probe_history(history)
    return [{**labels, "epoch": e + 1, **{k: float(history[k][e]) for k in ("memorised", "clean_fit", "val_acc")},
             "chance": chance_agreement(float(history["val_acc"][e]), num_classes)} for e in range(n)]


def run_summary(history: Mapping[str, Sequence[float]], **labels: Any) -> dict[str, Any]:
    """The end of a probed run: ``labels``, last-epoch ``val_acc``, ``test_acc`` and ``memorised``, and early
    stopping's ``stopped_epoch`` and ``stopped_test_acc`` (the checkpoint with the best validation accuracy).

    >>> h = {"memorised": [0.1, 0.5], "clean_fit": [0.6, 0.3], "val_acc": [0.7, 0.6], "test_acc": [0.71, 0.62],
    ...      "checkpoint_epoch": [1, 1], "checkpoint_test_acc": [0.71, 0.71]}
    >>> r = run_summary(h, seed=0); r["test_acc"], r["stopped_epoch"], r["stopped_test_acc"]
    (0.62, 1, 0.71)
    """
    _check_probe_history(history)
    return {**labels, "val_acc": float(history["val_acc"][-1]), "test_acc": float(history["test_acc"][-1]),
            "memorised": float(history["memorised"][-1]), "stopped_epoch": int(history["checkpoint_epoch"][-1]),
            "stopped_test_acc": float(history["checkpoint_test_acc"][-1])}


# --------------------------------------------------------------------------------------------- scoring
def score_model(model: nn.Module, data: Any, *, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL, ECE (``n_bins`` bins) on the clean validation and test sets, and temperature scaling.

    Returns ``val_acc``, ``val_nll``, ``val_ece``, ``test_acc``, ``test_nll``, ``test_ece``, ``test_conf`` (mean
    max probability: below the accuracy = under-confident), ``temperature`` (one ``T`` fitted on the validation
    NLL, :func:`lsutils.fit_temperature`; ``T > 1`` = the model was over-confident), ``test_ece_ts`` and
    ``test_nll_ts`` (after dividing the test logits by ``T``).
    """
    from lsutils.metrics import calibration_report, fit_temperature
    from lsutils.models import predict_logits

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not (hasattr(data, "val") and hasattr(data, "test")):
        raise TypeError(f"data must be an lsutils ImageDataset with .val and .test, got {type(data).__name__}")
    row: dict[str, float] = {}
    logits = {}
    for split in ("val", "test"):
        s = getattr(data, split)
        logits[split] = predict_logits(model, s.x)
        rep = calibration_report(logits[split], s.y, n_bins=n_bins)
        row.update({f"{split}_acc": float(rep["acc"]), f"{split}_nll": float(rep["nll"]),
                    f"{split}_ece": float(rep["ece"])})
    row["test_conf"] = float(logits["test"].softmax(1).max(1).values.mean())
    t = fit_temperature(logits["val"], data.val.y)
    ts = calibration_report(logits["test"], data.test.y, n_bins=n_bins, temperature=t)
    row.update(temperature=float(t), test_ece_ts=float(ts["ece"]), test_nll_ts=float(ts["nll"]))
    return row


def method_label(loss: Mapping[str, Any]) -> str:
    """A short name for a loss spec, for legends and tables.

    >>> method_label({"name": "ce"}), method_label({"name": "ls", "epsilon": 0.05})
    ('CE', 'LS ε = 0.05')
    >>> method_label({"name": "ls_schedule", "epsilon": 0.1, "schedule": "cosine"})
    'cosine 0.1 → 0'
    >>> method_label({"name": "online_ls", "alpha": 0.5})
    'OLS α = 0.5'
    """
    if not isinstance(loss, Mapping) or not isinstance(loss.get("name"), str):
        raise TypeError(f"loss must be a loss spec dict with a 'name', got {loss!r}")
    name = loss["name"]
    if name == "ce" or (name == "ls" and float(loss.get("epsilon", 0.0)) == 0.0):
        return "CE"
    if name == "ls":
        return f"LS ε = {float(loss['epsilon']):g}"
    if name == "ls_schedule":
        sched = loss.get("schedule", "linear")
        if sched == "constant":
            return f"LS ε = {float(loss['epsilon']):g}"
        return f"{sched} {float(loss['epsilon']):g} → {float(loss.get('final_epsilon', 0.0)):g}"
    if name == "online_ls":
        return f"OLS α = {float(loss.get('alpha', 0.5)):g}"
    return name


def off_target_mass(matrix: Any) -> float:
    """The mean probability that the soft-target rows put off their own class: ``1 − mean(diag S)``.

    For uniform LS with ε this is ``ε(K − 1)/K``; for online LS, the training target's off-class mass is
    ``(1 − α)`` times it.

    >>> round(off_target_mass(torch.tensor([[0.9, 0.1], [0.2, 0.8]])), 4)
    0.15
    """
    s = torch.as_tensor(matrix, dtype=torch.float32)
    if s.dim() != 2 or s.shape[0] != s.shape[1] or s.shape[0] < 2:
        raise ValueError(f"matrix must be a square K × K matrix (K >= 2), got shape {tuple(s.shape)}")
    return float(1.0 - s.diagonal().mean())


# --------------------------------------------------------------------------------------------- tuning
def _check_range(name: str, rng: Any) -> tuple[float, float]:
    if not isinstance(rng, (tuple, list)) or len(rng) != 2:
        raise TypeError(f"{name} must be a pair (low, high), got {rng!r}")
    lo, hi = rng
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must hold two real numbers, got {rng!r}")
    if not (0 < lo <= hi) or not math.isfinite(hi):
        raise ValueError(f"{name} must satisfy 0 < low <= high (log-uniform draws), got {rng!r}")
    return float(lo), float(hi)


def random_search_configs(n: int, *, epsilon_range: tuple[float, float], lr_range: tuple[float, float],
                          seed: int = 0, digits: int = 3) -> list[dict[str, float]]:
    """``n`` configurations ``{"epsilon": ε, "lr": lr}``, each drawn log-uniformly from its range.

    Seeded (``numpy.random.default_rng(seed)``): the same arguments give the same list. Values are
    rounded to ``digits`` significant digits, so they read well and hash stably in run specs.
    ``epsilon_range`` must lie in (0, 1].

    >>> random_search_configs(2, epsilon_range=(0.01, 0.4), lr_range=(1e-3, 1e-2), seed=0)
    [{'epsilon': 0.105, 'lr': 0.00186}, {'epsilon': 0.0116, 'lr': 0.00104}]
    """
    import numpy as np

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the number of runs), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits must be an int >= 1, got {digits!r}")
    e_lo, e_hi = _check_range("epsilon_range", epsilon_range)
    if e_hi > 1:
        raise ValueError(f"epsilon_range must lie in (0, 1], got {epsilon_range!r}")
    l_lo, l_hi = _check_range("lr_range", lr_range)
    u = np.random.default_rng(seed).random((n, 2))

    def draw(lo: float, hi: float, ui: float) -> float:
        return float(f"{math.exp(math.log(lo) + ui * (math.log(hi) - math.log(lo))):.{digits}g}")

    return [{"epsilon": draw(e_lo, e_hi, a), "lr": draw(l_lo, l_hi, b)} for a, b in u]


def select_best(rows: Sequence[Mapping[str, Any]], metric: str = "val_acc", *, higher_is_better: bool = True
                ) -> Mapping[str, Any]:
    """The row with the best ``metric`` (the first one on ties): how a search picks its configuration.

    >>> select_best([{"eps": 0.0, "val_acc": 0.87}, {"eps": 0.1, "val_acc": 0.88}])["eps"]
    0.1
    """
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence) or not rows:
        raise ValueError("rows must be a non-empty sequence of dicts (one per run)")
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a str, got {type(metric).__name__}")
    missing = [i for i, r in enumerate(rows) if metric not in r]
    if missing:
        raise ValueError(f"rows {missing} lack the metric {metric!r}; keys of the first row: {sorted(rows[0])}")
    values = [float(r[metric]) for r in rows]
    if any(math.isnan(v) for v in values):
        raise ValueError(f"metric {metric!r} holds NaN: {values}")
    best = max(range(len(rows)), key=lambda i: (values[i] if higher_is_better else -values[i], -i))
    return rows[best]


# --------------------------------------------------------------------------------------------- figures
def _frame(rows: Any, needed: Sequence[str]):
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty:
        raise ValueError("rows is empty")
    missing = [k for k in needed if k not in df.columns]
    if missing:
        raise ValueError(f"rows lack the columns {missing}; columns: {sorted(df.columns)}")
    return df


def plot_noise_curves(rows: Any, *, hue: str = "method", axes: Any = None) -> Any:
    """Per-epoch memorisation (with its chance level) and clean validation accuracy, mean ± sd over seeds, by ``hue``.

    ``rows``: :func:`per_epoch_rows` of every run, with a ``hue`` column. Left: the fraction of flipped training
    labels the model predicts (solid) and :func:`chance_agreement` (dotted, same colour). Right: clean validation
    accuracy. Returns the two axes.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    df = _frame(rows, (hue, "epoch", "memorised", "chance", "val_acc")).copy()
    for col in ("memorised", "chance", "val_acc"):
        df[col] = 100 * df[col]
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    order = list(dict.fromkeys(df[hue]))
    palette = dict(zip(order, sns.color_palette(n_colors=len(order))))
    sns.lineplot(df, x="epoch", y="memorised", hue=hue, hue_order=order, palette=palette, errorbar="sd",
                 marker="o", ax=axes[0])
    sns.lineplot(df, x="epoch", y="chance", hue=hue, hue_order=order, palette=palette, errorbar=None,
                 linestyle=":", legend=False, ax=axes[0])
    axes[0].set_ylabel("flipped training labels predicted (%)")
    axes[0].set_title("Memorisation (dotted: expected by chance)")
    sns.lineplot(df, x="epoch", y="val_acc", hue=hue, hue_order=order, palette=palette, errorbar="sd",
                 marker="o", ax=axes[1])
    axes[1].set_ylabel("clean validation accuracy (%)")
    axes[1].set_title("Accuracy on clean held-out images")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", title=None)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return axes


def plot_epsilon_schedules(epsilon: float, epochs: int, steps_per_epoch: int, ax: Any = None) -> Any:
    """ε per training step for the constant, linear and cosine schedules, and the per-epoch linear staircase.

    Drawn from :class:`lsutils.losses.ScheduledSmoothingLoss` itself, stepped as the trainer steps it.
    """
    import matplotlib.pyplot as plt

    from lsutils.losses import SCHEDULES, ScheduledSmoothingLoss

    epochs = check_int("epochs", epochs, minimum=1)
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.4))
    y = torch.zeros(1, dtype=torch.long)
    logits = torch.zeros(1, 2)
    curves = [(s, "step") for s in SCHEDULES] + [("linear", "epoch")]
    for sched, gran in curves:
        loss = ScheduledSmoothingLoss(epsilon, sched, n_train=steps_per_epoch, granularity=gran)
        for e in range(epochs):
            loss.start_epoch(e, epochs)
            for _ in range(steps_per_epoch):
                loss(logits, y)
        t = torch.arange(len(loss.trace)) / len(loss.trace)
        if gran == "epoch":
            ax.step(t, loss.trace, where="post", ls="--", color="gray", label=f"linear, once per epoch ({epochs})")
        else:
            ax.plot(t, loss.trace, label=f"{sched} (every step)")
    ax.set_xlabel("fraction of training done, t")
    ax.set_ylabel("ε(t)")
    ax.set_title(f"ε schedules from ε₀ = {epsilon:g}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def plot_method_comparison(rows: Any, metrics: Mapping[str, str], *, x: str = "method", order: Sequence[str] | None = None,
                           reference: Mapping[str, float] | None = None) -> Any:
    """One panel per metric (``{column: axis label}``): mean ± sd over seeds for each ``x`` value, seeds as dots.

    Columns named ``*_acc``, ``*_ece``, ``*_conf`` are shown in percent. ``reference`` draws a horizontal line
    per metric (e.g. ``{"temperature": 1.0}``: calibrated). Returns the axes.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not isinstance(metrics, Mapping) or not metrics:
        raise TypeError("metrics must be a non-empty dict {column: axis label}")
    df = _frame(rows, (x, *metrics)).copy()
    order = list(order) if order is not None else list(dict.fromkeys(df[x]))
    _, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.6), squeeze=False)
    for ax, (col, label) in zip(axes[0], metrics.items()):
        scale = 100 if col.endswith(("_acc", "_ece", "_conf", "_ece_ts")) else 1
        df["_v"] = scale * df[col]
        sns.stripplot(df, x=x, y="_v", order=order, color="0.6", size=4, jitter=0.1, ax=ax)
        sns.pointplot(df, x=x, y="_v", order=order, errorbar="sd", linestyle="none", capsize=0.2, color="C0",
                      markers="D", ax=ax)
        if reference and col in reference:
            ax.axhline(reference[col], color="k", lw=0.8, ls="--")
        ax.set_xlabel("")
        ax.set_ylabel(label)
        ax.tick_params(axis="x", rotation=40)
        for lab in ax.get_xticklabels():
            lab.set_horizontalalignment("right")
        ax.grid(alpha=0.3, axis="y")
    return axes[0]


def plot_soft_targets(history: Sequence[Any], class_names: Sequence[str], *, alpha: float,
                      extra: Mapping[str, Sequence[Sequence[Any]]] | None = None) -> Any:
    """Online LS's learned soft targets: the first learned ``S`` and the last one used, and their off-class mass.

    ``history``: the matrices one run used, epoch by epoch (``OnlineLabelSmoothingLoss.history``; the first is the
    initial ``S⁰``). Left and middle: heatmaps (percent) of ``S¹`` (learned after epoch 1) and of the last ``S``.
    Right: the training target's off-class mass ``(1 − α) · off_target_mass(S)`` per epoch for this run and for
    every run in ``extra`` (``{label: history}``). Returns the three axes.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    if len(history) < 3:
        raise ValueError(f"history must hold at least 3 matrices (S⁰ and two learned ones), got {len(history)}")
    alpha = check_probability("alpha", alpha)
    mats = [np.asarray(m, dtype=float) for m in history]
    k = mats[0].shape[0]
    if len(class_names) != k:
        raise ValueError(f"class_names has {len(class_names)} names for {k} classes")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1, 1, 0.9]})
    for ax, (e, m) in zip(axes[:2], ((1, mats[1]), (len(mats) - 1, mats[-1]))):
        sns.heatmap(100 * m, ax=ax, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100, cbar=False,
                    xticklabels=class_names, yticklabels=class_names, annot_kws={"fontsize": 7})
        ax.set_title(f"S learned after epoch {e} (%)")
        ax.set_xlabel("soft-target class")
        ax.set_ylabel("true class (row = its soft target)")
    runs = {"this run": history, **(dict(extra) if extra else {})}
    for label, hist in runs.items():
        mass = [100 * (1 - alpha) * off_target_mass(m) for m in hist[1:]]
        axes[2].plot(range(1, len(mass) + 1), mass, marker="o", ms=3, label=label)
    axes[2].set_xlabel("epoch after which S was learned")
    axes[2].set_ylabel("off-class mass of the target (%)")
    axes[2].set_title("How much OLS smooths, epoch by epoch")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize="small")
    fig.tight_layout()
    return axes


def plot_validation_curve(rows: Any, metrics: Mapping[str, str], *, x: str = "epsilon") -> Any:
    """Validation (solid) and test (dashed) curves against ``x``, mean ± sd over seeds; one panel per metric.

    ``metrics``: ``{"acc": "accuracy (%)", "nll": ..., "ece": ...}`` — the columns ``val_<m>`` and ``test_<m>``
    are read (``acc`` and ``ece`` in percent). ``x`` values sit at equal spacing (a categorical axis), so an
    uneven grid such as 0, 0.01, 0.02, 0.05, … reads evenly. Returns the axes.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not isinstance(metrics, Mapping) or not metrics:
        raise TypeError("metrics must be a non-empty dict {metric: axis label}")
    needed = [f"{s}_{m}" for m in metrics for s in ("val", "test")]
    df = _frame(rows, (x, *needed))
    levels = sorted(df[x].unique())
    _, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, (m, label) in zip(axes[0], metrics.items()):
        scale = 100 if m in ("acc", "ece", "conf") else 1
        for split, style in (("val", "-"), ("test", "--")):
            d = df.assign(_v=scale * df[f"{split}_{m}"], _x=df[x].map({v: f"{v:g}" for v in levels}))
            sns.pointplot(d, x="_x", y="_v", order=[f"{v:g}" for v in levels], errorbar="sd", capsize=0.15,
                          linestyles=style, label="validation" if split == "val" else "test", ax=ax,
                          color="C0" if split == "val" else "C1")
        ax.set_xlabel(x if x != "epsilon" else "ε")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return axes[0]


def plot_search(grid_rows: Sequence[Mapping[str, Any]], random_rows: Sequence[Mapping[str, Any]],
                picks: Mapping[str, Mapping[str, Any]], metric: str = "val_acc", ax: Any = None) -> Any:
    """Grid (squares) and random search (circles) in the (ε, learning rate) plane, coloured by ``metric``.

    The configuration each search picked (``picks["grid"]``, ``picks["random"]``) is ringed in red.
    """
    import matplotlib.pyplot as plt

    rows = list(grid_rows) + list(random_rows)
    if not grid_rows or not random_rows:
        raise ValueError("both searches need at least one run")
    for r in rows:
        for k in ("epsilon", "lr", metric):
            if k not in r:
                raise ValueError(f"every row needs 'epsilon', 'lr' and {metric!r}; got keys {sorted(r)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4))
    values = [100 * r[metric] for r in rows]
    sc = None
    for group, marker, name in ((grid_rows, "s", "grid"), (random_rows, "o", "random")):
        sc = ax.scatter([r["epsilon"] for r in group], [r["lr"] for r in group],
                        c=[100 * r[metric] for r in group], marker=marker, s=90, cmap="viridis",
                        vmin=min(values), vmax=max(values), edgecolors="k", label=name)
        if name in picks:
            ax.scatter([picks[name]["epsilon"]], [picks[name]["lr"]], s=320, facecolors="none", edgecolors="red",
                       linewidths=2)
    ax.set_yscale("log")
    ax.set_xlabel("ε")
    ax.set_ylabel("peak learning rate")
    ax.figure.colorbar(sc, ax=ax, label=f"{metric.replace('_', ' ')} (%)")
    ax.set_title("Grid (squares) and random search (circles); red: the pick")
    ax.legend(fontsize="small", loc="upper right")
    ax.grid(alpha=0.3)
    return ax
