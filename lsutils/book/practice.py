"""Label smoothing in practice: ε schedules, online label smoothing, and tools for tuning ε.

Two trainer losses (see :mod:`lsutils.registry` for the protocol):

* ``{"name": "ls_schedule", "epsilon": ε₀, "schedule": "linear" | "cosine" | "constant"}`` —
  label smoothing whose strength follows a schedule over training, from ``ε₀`` down to
  ``final_epsilon`` (default 0). With ``t ∈ [0, 1)`` the fraction of training done,

      constant:  ε(t) = ε₀
      linear:    ε(t) = ε_f + (ε₀ - ε_f)·(1 - t)
      cosine:    ε(t) = ε_f + (ε₀ - ε_f)·(1 + cos πt)/2

  The schedule advances **every step** (every batch), not every epoch: the loss counts the
  examples it has seen since ``start_epoch`` and knows the size of the training set from the
  trainer's :class:`~lsutils.registry.LossContext`, so ``t = (epoch + seen/N) / epochs``. With the
  ``cpu`` profile's 4 epochs an epoch-wise schedule would take only 4 values
  (``granularity="epoch"`` gives that, for comparison).
* ``{"name": "online_ls", "alpha": 0.5}`` — Online Label Smoothing (OLS, Zhang et al. 2021,
  *Delving Deep into Label Smoothing*): a class-wise soft-target matrix ``S`` (``K × K``, row
  ``S[k]`` = the soft target of class ``k``) learned from the model's own correct predictions.
  During epoch ``t`` the loss is

      L = α · H(onehot(y), p) + (1 - α) · H(S^{t-1}[y], p),

  while it accumulates, for every training example the model classifies correctly (argmax = its
  label), the softmax ``p`` into the row of its class; at the end of the epoch each row is
  normalised by its count (the mean predicted distribution of the correctly classified examples),
  and becomes ``S^t``. A class with no correct prediction gets the uniform row ``1/K``. ``S^0``,
  used during the first epoch, is the zero matrix in the paper's code (the first epoch trains on
  ``α``·CE alone; ``init="zeros"``, the default), or label-smoothed one-hot rows (``init="ls"``
  with ``init_epsilon``) or uniform rows (``init="uniform"``). The paper uses ``α = 0.5``.

Helpers for the chapter: :func:`epsilon_at` (the schedules as a function), :func:`class_soft_targets`
(the OLS update as a function), :func:`practice_settings` (the chapter's sizes from a profile),
:func:`random_search_configs` / :func:`select_best` (tuning), :func:`score_runs` (accuracy and
calibration of trained runs on validation and test), :func:`noisy_label_fit` (how much of the label
noise a model memorised) and :func:`plot_mean_std`.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from lsutils._validate import check_choice

from lsutils.losses import OnlineLabelSmoothingLoss, ScheduledSmoothingLoss

__all__ = ['schedule_spec', 'online_ls_spec', 'describe_loss', 'practice_settings', 'random_search_configs', 'select_best', 'score_runs', 'noisy_label_fit', 'plot_mean_std']


# --------------------------------------------------------------------------------------------- ε schedules


def schedule_spec(epsilon: float, schedule: str, **extra: Any) -> dict[str, Any]:
    """The loss spec of a scheduled ε: ``{"name": "ls_schedule", "epsilon": ε, "schedule": schedule, **extra}``.

    Validates the values now (rather than when the model trains). ``extra``: ``final_epsilon``,
    ``granularity``. A constant schedule trains the same model as ``smoothing_spec(ε)`` but under
    another cache key; use :func:`~lsutils.registry.smoothing_spec` for fixed ``ε``.

    >>> schedule_spec(0.1, "cosine")
    {'name': 'ls_schedule', 'epsilon': 0.1, 'schedule': 'cosine'}
    """
    unknown = sorted(set(extra) - {"final_epsilon", "granularity"})
    if unknown:
        raise TypeError(f"schedule_spec got unexpected keyword(s) {unknown}; allowed: final_epsilon, granularity")
    ScheduledSmoothingLoss(epsilon, schedule, **extra)  # validates
    return {"name": "ls_schedule", "epsilon": float(epsilon), "schedule": schedule, **extra}


# --------------------------------------------------------------------------------------------- online LS


def online_ls_spec(alpha: float = 0.5, **extra: Any) -> dict[str, Any]:
    """The loss spec of Online Label Smoothing, validated: ``{"name": "online_ls", "alpha": α, **extra}``.

    >>> online_ls_spec()
    {'name': 'online_ls', 'alpha': 0.5}
    """
    unknown = sorted(set(extra) - {"init", "init_epsilon"})
    if unknown:
        raise TypeError(f"online_ls_spec got unexpected keyword(s) {unknown}; allowed: init, init_epsilon")
    OnlineLabelSmoothingLoss(alpha, **extra)  # validates
    return {"name": "online_ls", "alpha": float(alpha), **extra}


def describe_loss(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A short label and the base ``ε`` of a loss spec, for tables: ``{"method": str, "epsilon": float}``.

    >>> describe_loss({"name": "ce"}), describe_loss({"name": "ls", "epsilon": 0.1})
    ({'method': 'CE', 'epsilon': 0.0}, {'method': 'LS', 'epsilon': 0.1})
    >>> describe_loss(schedule_spec(0.1, "cosine"))["method"]
    'LS cosine→0'
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise TypeError(f"spec must be a loss spec dict with a 'name', got {spec!r}")
    name = spec["name"]
    if name == "ce":
        return {"method": "CE", "epsilon": 0.0}
    if name == "ls":
        return {"method": "LS", "epsilon": float(spec["epsilon"])}
    if name == "ls_schedule":
        final = float(spec.get("final_epsilon", 0.0))
        sched = spec.get("schedule", "linear")
        label = "LS" if sched == "constant" else f"LS {sched}→{final:g}"
        if spec.get("granularity", "step") == "epoch":
            label += " (per epoch)"
        return {"method": label, "epsilon": float(spec["epsilon"])}
    if name == "online_ls":
        return {"method": "OLS", "epsilon": float("nan")}
    return {"method": name, "epsilon": float(spec.get("epsilon", float("nan")))}


# --------------------------------------------------------------------------------------------- the chapter's sizes
def practice_settings(profile: Any) -> dict[str, Any]:
    """Sizes of the noisy-label, schedule and tuning experiments for a compute profile.

    * ``seeds``: the profile's first two seeds (≥ 2 for a standard deviation; two keep the
      ``cpu`` chapter within its time budget);
    * ``noise``: fractions of training labels replaced by another class, ``(0.0, 0.2, 0.4)``;
    * ``noise_epsilons``: ``(0.0, 0.1, 0.3)`` (CE, the usual ε, a large one);
    * ``schedule_epsilon``: ``0.1``, the start of the annealed schedules; ``schedules``: the ones trained,
      ``("linear",)`` (cosine is drawn but not trained: two more models would break the ``cpu`` budget);
    * ``ols_alpha``: ``0.5`` (Zhang et al.'s value);
    * ``curve_epsilons``: ``(0.0, 0.05, 0.1, 0.2, 0.3)``, the ε sweep of the calibration chapter (cached), for
      the validation curve;
    * ``grid_epsilons``: ``(0.0, 0.1, 0.3)``, the grid search (3 of those cached models, seed ``seeds[0]``);
    * ``search_budget``: runs per search (the size of that grid, 3: each new run costs ≈ 8 s in the ``cpu``
      profile, and the chapter's budget allows about 20 new models); ``search_seed``: the seed of the random draws;
    * ``epsilon_range`` ``(0.01, 0.4)`` and ``lr_range`` ``(lr/3, 3·lr)``: where random search draws, log-uniformly.

    >>> from lsutils.config import get_profile
    >>> s = practice_settings(get_profile("cpu"))
    >>> s["seeds"], s["noise"], s["search_budget"]
    ((0, 1), (0.0, 0.2, 0.4), 3)
    """
    for attr in ("seeds", "lr"):
        if not hasattr(profile, attr):
            raise TypeError(f"profile must be an lsutils Profile (from get_profile()), got {type(profile).__name__}")
    seeds = tuple(profile.seeds[:2])
    if len(seeds) < 2:
        raise ValueError(f"the profile needs at least two seeds for mean ± std, got {profile.seeds}")
    grid = (0.0, 0.1, 0.3)
    lr = float(profile.lr)
    return {"seeds": seeds, "noise": (0.0, 0.2, 0.4), "noise_epsilons": (0.0, 0.1, 0.3),
            "schedule_epsilon": 0.1, "schedules": ("linear",), "ols_alpha": 0.5,
            "curve_epsilons": (0.0, 0.05, 0.1, 0.2, 0.3), "grid_epsilons": grid, "search_budget": len(grid),
            "search_seed": 0,
            "epsilon_range": (0.01, 0.4), "lr_range": (lr / 3.0, lr * 3.0)}


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
    rng = np.random.default_rng(seed)
    u = rng.random((n, 2))

    def draw(lo: float, hi: float, ui: float) -> float:
        value = math.exp(math.log(lo) + ui * (math.log(hi) - math.log(lo)))
        return float(f"{value:.{digits}g}")

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


# --------------------------------------------------------------------------------------------- scoring
_LOGITS_MEMO: "OrderedDict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()
_LOGITS_MEMO_SIZE = 128


def _split_logits(run: Any, name: str, split: Any, memo: bool) -> torch.Tensor:
    """Logits of ``run.model`` on ``split.x``, memoised per (run key, split name) for this exact input tensor."""
    from lsutils.models import predict_logits

    key = (str(getattr(run, "key", "")), name)
    if memo and key[0] and key in _LOGITS_MEMO:
        x_ref, logits = _LOGITS_MEMO[key]
        if x_ref is split.x:
            _LOGITS_MEMO.move_to_end(key)
            return logits
    logits = predict_logits(run.model, split.x)
    if memo and key[0]:
        _LOGITS_MEMO[key] = (split.x, logits)
        while len(_LOGITS_MEMO) > _LOGITS_MEMO_SIZE:
            _LOGITS_MEMO.popitem(last=False)
    return logits


def score_runs(runs: Iterable[Any], data: Any, *, n_bins: int = 15, splits: Sequence[str] = ("val", "test"),
               temperature_scaling: bool = False, memo: bool = True) -> list[dict[str, Any]]:
    """Accuracy, NLL and ECE of trained runs on the clean splits of ``data``, one dict per run.

    Args:
        runs: :class:`~lsutils.train.TrainedRun` objects (from ``train_model`` / ``train_many``).
        data: the :class:`~lsutils.data.ImageDataset` to score on (e.g. ``load_profile_data(p)``);
            its labels are the clean ones — label noise only ever touches the training set.
        n_bins: calibration bins (15, as Guo et al. and Müller et al.).
        splits: which of ``data``'s splits to score (``"train"``, ``"val"``, ``"test"``).
        temperature_scaling: also fit one temperature on the validation logits
            (:func:`lsutils.metrics.fit_temperature`) and add ``temperature``, ``test_ece_ts``
            and ``test_nll_ts`` (needs ``"val"`` and ``"test"`` in ``splits``).
        memo: reuse the logits of a run already scored on the same split tensor in this process
            (keyed by the run's cache key, which fixes its weights; the last 128 are kept), so a
            chapter that scores one cached model in several experiments predicts once. ``False``
            always recomputes (e.g. after changing a model's weights in place).

    Returns:
        For each run: ``method`` and ``epsilon`` (:func:`describe_loss`), ``loss`` (the spec's name),
        ``schedule``, ``label_noise``, ``lr``, ``seed``, then ``{split}_acc``, ``{split}_nll``,
        ``{split}_ece`` (from :func:`lsutils.metrics.calibration_report`) and ``{split}_conf`` (the mean
        confidence, i.e. mean max probability: below the accuracy = under-confident) for every split.
    """
    from lsutils.metrics import calibration_report, fit_temperature

    if isinstance(splits, str) or not all(isinstance(s, str) for s in splits):
        raise TypeError(f"splits must be a sequence of split names, e.g. ('val', 'test'), got {splits!r}")
    for flag, value in (("temperature_scaling", temperature_scaling), ("memo", memo)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    if temperature_scaling and not {"val", "test"} <= set(splits):
        raise ValueError(f"temperature_scaling=True needs 'val' (to fit T) and 'test' in splits, got {tuple(splits)}")
    for s in splits:
        check_choice("splits entry", s, ("train", "val", "test"))
        if not hasattr(data, s):
            raise TypeError(f"data must be an lsutils ImageDataset with a .{s} split, got {type(data).__name__}")
    rows = []
    for i, run in enumerate(runs):
        if not (hasattr(run, "model") and hasattr(run, "spec")):
            raise TypeError(f"runs[{i}] must be a TrainedRun (from train_model), got {type(run).__name__}")
        spec = run.spec
        loss = spec.loss_spec()
        row: dict[str, Any] = {**describe_loss(loss), "loss": loss["name"],
                               "schedule": loss.get("schedule", "constant" if loss["name"] in ("ce", "ls") else "-"),
                               "label_noise": float(spec.label_noise), "lr": float(spec.lr), "seed": int(spec.seed)}
        logits = {}
        for s in splits:
            split = getattr(data, s)
            logits[s] = _split_logits(run, s, split, memo)
            rep = calibration_report(logits[s], split.y, n_bins=n_bins)
            row[f"{s}_acc"] = float(rep["acc"])
            row[f"{s}_nll"] = float(rep["nll"])
            row[f"{s}_ece"] = float(rep["ece"])
            row[f"{s}_conf"] = float(logits[s].softmax(1).max(1).values.mean())
        if temperature_scaling:
            t = fit_temperature(logits["val"], data.val.y)
            ts = calibration_report(logits["test"], data.test.y, n_bins=n_bins, temperature=t)
            row.update(temperature=float(t), test_ece_ts=float(ts["ece"]), test_nll_ts=float(ts["nll"]))
        rows.append(row)
    return rows


def noisy_label_fit(run: Any, data: Any) -> dict[str, float]:
    """How much of the label noise a trained model has *memorised*, on its own training set.

    The noisy labels are rebuilt exactly as the trainer made them (:func:`~lsutils.train.add_label_noise`
    with the spec's ``label_noise`` and ``data_seed``). Among the flipped training examples (only
    those are run through the model), returns the fraction the model predicts as the **noisy**
    label (``fits_noisy``: memorised) and as the **clean** label (``fits_clean``: the true class,
    despite the wrong label), and ``n_flipped``. ``data`` must be the dataset the run was trained on
    (same sizes and data seed). A run without label noise gives ``n_flipped = 0`` and NaN fractions.
    """
    from lsutils.models import predict_logits
    from lsutils.train import add_label_noise

    if not (hasattr(run, "model") and hasattr(run, "spec")):
        raise TypeError(f"run must be a TrainedRun (from train_model), got {type(run).__name__}")
    spec = run.spec
    if not hasattr(data, "train"):
        raise TypeError(f"data must be an lsutils ImageDataset, got {type(data).__name__}")
    y = data.train.y
    if spec.n_train is not None and len(y) != spec.n_train:
        raise ValueError(f"data.train has {len(y)} examples but the run was trained on n_train={spec.n_train}; "
                         f"pass the dataset of the run's profile and data seed ({spec.data_seed})")
    noisy = add_label_noise(y, int(data.num_classes), spec.label_noise, seed=spec.data_seed)
    flipped = (noisy != y).nonzero().squeeze(1)
    n = int(flipped.numel())
    if n == 0:
        return {"n_flipped": 0, "fits_noisy": float("nan"), "fits_clean": float("nan")}
    pred = predict_logits(run.model, data.train.x[flipped]).argmax(1)
    return {"n_flipped": n, "fits_noisy": float((pred == noisy[flipped]).float().mean()),
            "fits_clean": float((pred == y[flipped]).float().mean())}


def plot_mean_std(rows: Sequence[Mapping[str, Any]], x: str, y: str, *, by: str | None = None, ax: Any = None,
                  scale: float = 1.0, label_fmt: Callable[[Any], str] = str, marker: str = "o",
                  label: str | None = None, **errorbar_kw: Any) -> Any:
    """Plot ``mean ± std`` (error bars over the rows sharing ``x`` and ``by``) of ``y`` against ``x``, one line per ``by``.

    ``scale`` multiplies ``y`` (e.g. 100 for percent); ``label_fmt`` turns a ``by`` value into its legend
    label (``label`` names the single line when ``by`` is ``None``). Numeric ``x`` values are
    plotted at their value and joined by lines; other values (e.g. method names) at 0, 1, 2, ... in
    order of first appearance, with the values as tick labels and no joining line. Further keywords
    (``linestyle``, ``color``, ``alpha``, ...) go to ``Axes.errorbar``. Returns the matplotlib ``Axes``
    (axis labels and title are the caller's; they default to ``x`` and ``y``).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if not rows:
        raise ValueError("rows is empty; need at least one run")
    keys = [x, y] + ([by] if by is not None else [])
    missing = sorted({k for r in rows for k in keys if k not in r})
    if missing:
        raise ValueError(f"rows lack the keys {missing}; keys present: {sorted(rows[0])}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    numeric = all(isinstance(r[x], (int, float)) and not isinstance(r[x], bool) for r in rows)
    order: dict[Any, int] = {}
    for r in rows:
        order.setdefault(r[x], len(order))
    groups: dict[Any, dict[Any, list[float]]] = {}
    for r in rows:
        groups.setdefault(r[by] if by is not None else None, {}).setdefault(r[x], []).append(float(r[y]) * scale)
    for g, points in groups.items():
        xs = sorted(points) if numeric else sorted(points, key=order.__getitem__)
        pos = [float(v) for v in xs] if numeric else [order[v] for v in xs]
        means = np.array([np.mean(points[v]) for v in xs])
        stds = np.array([np.std(points[v], ddof=1) if len(points[v]) > 1 else 0.0 for v in xs])
        kw = {"linestyle": "-" if numeric else "none", "capsize": 3, **errorbar_kw}
        ax.errorbar(pos, means, yerr=stds, marker=marker, label=label if g is None else label_fmt(g), **kw)
    if not numeric:
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([str(v) for v in order])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if by is not None or label is not None:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax
