"""Selective classification, post-hoc logit normalisation, padded token losses, and chapter 8's experiment specs.

**Selective classification** (Geifman & El-Yaniv 2017): a classifier may abstain. It answers the
fraction ``c`` (the *coverage*) of inputs it is most confident about; the *selective risk* is its
error rate on those. Sorting the ``N`` test examples by confidence, highest first, the
risk–coverage curve has one point per prefix ``i = 1..N``:

    coverage_i = i / N,        risk_i = (errors among the i most confident) / i,

and the area under it, ``AURC = (1/N) Σ_i risk_i``, scores the confidence *ranking* (lower is
better). The best possible ranking puts every correct prediction first; its area ``AURC*`` depends
only on the error rate, and ``E-AURC = AURC − AURC*`` is the part a better ranking could remove.
Ties in confidence are broken *in expectation* (every order of a tied group equally likely), so the
curve does not depend on how a sort orders equal values.

**Logit normalisation** (Cattelan & Silva 2024; used post hoc by Xia et al. 2025 to repair label
smoothing's selective classification): the confidence is read from the logits divided by their
``p``-norm, optionally after centring them,

    ẑ = (z − mean(z)) / ‖z − mean(z)‖_p,      MaxLogit-pNorm = max_k ẑ_k,      MSP-pNorm = max_k softmax(ẑ / τ)_k.

Dividing by the norm removes the overall scale of the logits, which label smoothing shrinks more for
confidently right examples than for wrong ones (Xia et al. 2025). :func:`pnorm_logit_score` computes
both; :func:`select_pnorm` picks ``p`` on held-out data by AURC.

**Padded sequences**: :func:`token_loss_report` scores ``(N, K, L)`` logits against ``(N, L)`` targets
with padding, the way sequence models are trained (``ignore_index``) and the way the Annotated
Transformer does it (:func:`lsutils.annotated_transformer_loss`).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lsutils._validate import (check_class_indices, check_labels_1d, check_probability, check_tensor)
from lsutils.metrics import msp_score

from lsutils.metrics import aurc, excess_aurc, pnorm_logit_score, select_pnorm, selective_report, risk_coverage_curve

__all__ = ['run_scores', 'plot_risk_coverage', 'plot_with_without', 'ls_differences', 'with_without_table', 'compare_confidences', 'plot_ls_difference', 'token_loss_report', 'chapter8_settings', 'regularizer_specs', 'model_size_specs']


# --------------------------------------------------------------------------------------------- input checks


# --------------------------------------------------------------------------------------------- risk-coverage


# --------------------------------------------------------------------------------------------- confidence scores


def run_scores(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> dict[str, float]:
    """Test metrics of one trained model: ``acc``, ``nll``, ``ece`` (``n_bins`` bins), ``aurc`` and ``e_aurc`` (MSP).

    ``x``: inputs ``(N, C, H, W)``; ``y``: labels ``(N,)``. Logits come from :func:`lsutils.predict_logits`.

    >>> m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> sorted(run_scores(m, torch.randn(8, 1, 2, 2), torch.arange(8) % 3))
    ['acc', 'aurc', 'e_aurc', 'ece', 'nll']
    """
    from lsutils.metrics import accuracy, expected_calibration_error, nll
    from lsutils.models import predict_logits

    z = predict_logits(model, x)
    labels = check_labels_1d("labels", y, z.shape[0], z.shape[1])
    correct = z.argmax(1) == labels
    conf = msp_score(z)
    return {"acc": accuracy(z, labels), "nll": nll(z, labels),
            "ece": expected_calibration_error(z.double().softmax(1), labels, n_bins=n_bins),
            "aurc": aurc(conf, correct), "e_aurc": excess_aurc(conf, correct)}


def plot_risk_coverage(curves: Mapping[str, tuple[Any, Any]], *, ax: Any = None, max_coverage: float = 1.0,
                       title: str | None = None) -> Any:
    """Plot risk–coverage curves, one line per ``label: (confidence (N,), correct (N,))``; returns the Axes.

    The legend gives each curve's AURC; ``max_coverage < 1`` zooms into the low-coverage end, where the
    most confident predictions are (and where a bad ranking shows first).
    """
    import matplotlib.pyplot as plt

    if not isinstance(curves, Mapping) or not curves:
        raise TypeError("curves must be a non-empty dict {label: (confidence, correct)}")
    max_coverage = check_probability("max_coverage", max_coverage, low_open=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6))
    top = 0.0
    for label, (conf, correct) in curves.items():
        c = risk_coverage_curve(conf, correct)
        keep = c["coverage"] <= max_coverage + 1e-12
        ax.plot(100 * c["coverage"][keep], 100 * c["risk"][keep],
                label=f"{label} (AURC {1000 * float(c['risk'].mean()):.1f}‰)")
        top = max(top, float(c["risk"][keep].max()) if keep.any() else 0.0)
    ax.set_xlabel("coverage (% of test images answered)")
    ax.set_ylabel("selective risk (% errors among answered)")
    ax.set_xlim(0, 100 * max_coverage)
    ax.set_ylim(0, 100 * top * 1.05 + 1e-9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax


def _groups_and_epsilons(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], epsilon_key: str):
    if not rows:
        raise ValueError("rows is empty; need at least one run")
    missing = {k for r in rows for k in list(keys) + [epsilon_key] if k not in r}
    if missing:
        raise ValueError(f"rows lack the keys {sorted(missing)}; keys present: {sorted(rows[0])}")
    return list(dict.fromkeys(r[keys[0]] for r in rows)), sorted({float(r[epsilon_key]) for r in rows})


def plot_with_without(rows: Sequence[Mapping[str, Any]], by: str, metric: str, *, ax: Any = None,
                      scale: float = 1.0, ylabel: str | None = None, title: str | None = None,
                      epsilon_key: str = "epsilon") -> Any:
    """Without (``ε = 0``) and with label smoothing, side by side for each value of ``by``: mean ± std over runs.

    ``rows``: one dict per run with keys ``by``, ``epsilon_key`` and ``metric``; groups keep their first-seen
    order. Each marker is ``scale · mean`` with an error bar of ``scale · std`` (sample std over the runs of
    the group); the small dots are the single runs. Markers, not bars: the differences of interest are a
    fraction of a point, which bars starting at 0 would hide. Returns the Axes.
    """
    import matplotlib.pyplot as plt

    from lsutils.stats import mean_std

    groups, epsilons = _groups_and_epsilons(rows, [by, metric], epsilon_key)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) + 1.5), 3.4))
    offsets = np.linspace(-0.15, 0.15, len(epsilons)) if len(epsilons) > 1 else np.zeros(1)
    for j, eps in enumerate(epsilons):
        label = "CE (ε = 0)" if eps == 0 else f"LS (ε = {eps:g})"
        xs, means, stds = [], [], []
        for i, g in enumerate(groups):
            vals = [scale * float(r[metric]) for r in rows if r[by] == g and float(r[epsilon_key]) == eps]
            if not vals:
                continue
            m, sd = mean_std(vals)
            xs.append(i + offsets[j])
            means.append(m)
            stds.append(sd)
            ax.plot([i + offsets[j]] * len(vals), vals, ".", color=f"C{j}", alpha=0.35, ms=4)
        ax.errorbar(xs, means, yerr=stds, fmt="o", color=f"C{j}", capsize=4, label=label)
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels([str(g) for g in groups])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel(ylabel or metric)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax


def ls_differences(rows: Sequence[Mapping[str, Any]], by: str, group: Any, metric: str, *,
                   epsilon_key: str = "epsilon", seed_key: str = "seed") -> list[float]:
    """Per seed: ``metric`` of the label-smoothed run minus that of the CE run (``ε = 0``), both in group ``group``.

    ``rows`` must hold, for that group, one run with ``ε = 0`` and one with a single ``ε > 0`` per seed.
    Returns the differences in seed order (the paired comparison: seed noise shared by both runs cancels).

    >>> rows = [{"g": "a", "epsilon": e, "seed": s, "acc": v}
    ...         for e, s, v in [(0.0, 0, 0.80), (0.1, 0, 0.83), (0.0, 1, 0.90), (0.1, 1, 0.89)]]
    >>> [round(d, 2) for d in ls_differences(rows, "g", "a", "acc")]
    [0.03, -0.01]
    """
    _groups_and_epsilons(rows, [by, metric, seed_key], epsilon_key)
    mine = [r for r in rows if r[by] == group]
    if not mine:
        raise ValueError(f"no rows with {by} == {group!r}")
    ce = {r[seed_key]: float(r[metric]) for r in mine if float(r[epsilon_key]) == 0.0}
    ls_rows = [r for r in mine if float(r[epsilon_key]) > 0.0]
    if len({float(r[epsilon_key]) for r in ls_rows}) != 1:
        raise ValueError(f"group {group!r} must hold exactly one ε > 0, got {sorted({r[epsilon_key] for r in ls_rows})}")
    ls_ = {r[seed_key]: float(r[metric]) for r in ls_rows}
    seeds = sorted(set(ce) & set(ls_))
    if not seeds:
        raise ValueError(f"group {group!r} has no seed with both a CE and an LS run")
    return [ls_[s] - ce[s] for s in seeds]


def with_without_table(rows: Sequence[Mapping[str, Any]], by: str, metrics: Sequence[str], *,
                       scale: Mapping[str, float] | None = None, digits: int = 2, epsilon_key: str = "epsilon",
                       seed_key: str = "seed"):
    """A ``pandas.DataFrame``: one row per ``by`` group; for each metric, CE, LS and the paired difference LS − CE.

    Cells are ``"mean ± std"`` over seeds (metric times ``scale[metric]``); the columns are a MultiIndex
    ``(metric, "CE" | "LS" | "LS − CE")``.
    """
    import pandas as pd

    from lsutils.stats import fmt_mean_std

    if isinstance(metrics, str):
        raise TypeError("metrics must be a sequence of names, e.g. ['acc', 'ece']")
    groups, epsilons = _groups_and_epsilons(rows, [by, *metrics, seed_key], epsilon_key)
    scale = dict(scale or {})
    data: dict[tuple[str, str], list[str]] = {}
    for m in metrics:
        f = scale.get(m, 1.0)
        for name, pick in (("CE", lambda e: e == 0.0), ("LS", lambda e: e > 0.0)):
            data[(m, name)] = [fmt_mean_std([r[m] for r in rows if r[by] == g and pick(float(r[epsilon_key]))],
                                            digits=digits, scale=f) for g in groups]
        data[(m, "LS − CE")] = [fmt_mean_std(ls_differences(rows, by, g, m, epsilon_key=epsilon_key,
                                                            seed_key=seed_key), digits=digits, scale=f)
                                for g in groups]
    table = pd.DataFrame(data, index=pd.Index(groups, name=by))
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def compare_confidences(model: torch.nn.Module, val: Any, test: Any, *, ps: Iterable[float] = tuple(range(1, 10)),
                        coverages: Sequence[float] = (0.8,)) -> dict[str, Any]:
    """Selective classification of one model with two confidences: the MSP and MaxLogit-pNorm.

    ``p`` is chosen on ``val`` (a split with ``.x``, ``.y``) by :func:`select_pnorm`; both scores are then
    evaluated on ``test``. Returns a dict with

    * ``"p"``: the chosen ``p``; ``"val_aurc"``: ``{"MSP": ..., "MaxLogit-pNorm": ...}`` on validation;
      ``"fallback"``: whether the MSP is at least as good as every ``p`` on validation (then Cattelan &
      Silva's procedure keeps the MSP; the test rows still report MaxLogit-pNorm at the chosen ``p``);
    * ``"rows"``: one :func:`selective_report` dict per score, with keys ``"confidence"``, ``"p"`` and ``"fallback"``;
    * ``"scores"``: ``{name: (confidence (N,), correct (N,))}`` on test, for :func:`plot_risk_coverage`.
    """
    from lsutils.models import predict_logits

    for name, split in (("val", val), ("test", test)):
        if not (hasattr(split, "x") and hasattr(split, "y")):
            raise TypeError(f"{name} must be a split with .x and .y (e.g. data.val), got {type(split).__name__}")
    z_val, z_test = predict_logits(model, val.x), predict_logits(model, test.x)
    fit = select_pnorm(z_val, val.y, ps)
    fallback = fit["msp_aurc"] <= fit["aurc"][fit["p"]]
    correct = z_test.argmax(1) == test.y
    scores = {"MSP": msp_score(z_test), "MaxLogit-pNorm": pnorm_logit_score(z_test, fit["p"])}
    rows = [{"confidence": name, "p": fit["p"] if name != "MSP" else None, "fallback": fallback,
             **selective_report(z_test, test.y, conf, coverages)} for name, conf in scores.items()]
    val_aurc = {"MSP": fit["msp_aurc"], "MaxLogit-pNorm": fit["aurc"][fit["p"]]}
    return {"p": fit["p"], "fallback": fallback, "val_aurc": val_aurc, "rows": rows,
            "scores": {k: (v, correct) for k, v in scores.items()}}


def plot_ls_difference(rows: Sequence[Mapping[str, Any]], by: str, metric: str, *, ax: Any = None,
                       scale: float = 1.0, ylabel: str | None = None, title: str | None = None,
                       epsilon_key: str = "epsilon", seed_key: str = "seed") -> Any:
    """The paired effect of label smoothing, LS − CE per seed (:func:`ls_differences`), for each value of ``by``.

    Markers: mean ± std over seeds of ``scale · (metric_LS − metric_CE)``; small dots: the single seeds; a line at 0
    (no effect). Returns the Axes.
    """
    import matplotlib.pyplot as plt

    from lsutils.stats import mean_std

    groups, _ = _groups_and_epsilons(rows, [by, metric, seed_key], epsilon_key)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) + 1.5), 3.4))
    ax.axhline(0.0, color="gray", lw=1)
    for i, g in enumerate(groups):
        d = [scale * v for v in ls_differences(rows, by, g, metric, epsilon_key=epsilon_key, seed_key=seed_key)]
        m, sd = mean_std(d)
        ax.plot([i] * len(d), d, ".", color="C3", alpha=0.4, ms=5)
        ax.errorbar([i], [m], yerr=[sd], fmt="o", color="C3", capsize=4)
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels([str(g) for g in groups])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel(ylabel or f"{metric}: LS − CE")
    ax.grid(axis="y", alpha=0.3)
    if title is not None:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------------------------- padded sequences
def _check_sequence(logits: Any, target: Any, pad_index: int) -> None:
    check_tensor("logits", logits, floating=True)
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (N, K, L) (classes on dim 1, as F.cross_entropy expects), "
                         f"got {tuple(logits.shape)}")
    check_tensor("target", target, floating=False)
    if tuple(target.shape) != (logits.shape[0], logits.shape[2]):
        raise ValueError(f"target must have shape (N, L) = {(logits.shape[0], logits.shape[2])} for logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    if isinstance(pad_index, bool) or not isinstance(pad_index, int):
        raise TypeError(f"pad_index must be an int, got {type(pad_index).__name__}")
    if not 0 <= pad_index < logits.shape[1]:
        raise ValueError(f"pad_index must be a class index in [0, {logits.shape[1] - 1}] (the padding token of the "
                         f"vocabulary), got {pad_index}")
    check_class_indices("target", target, logits.shape[1])
    if not (target != pad_index).any():
        raise ValueError("target holds only padding; at least one real token is needed")


def token_loss_report(logits: torch.Tensor, target: torch.Tensor, epsilon: float, pad_index: int) -> dict[str, float]:
    """Losses of a padded batch of sequences, ``logits (N, K, L)``, ``target (N, L)`` with ``pad_index`` padding.

    Keys (all per real token unless said otherwise):

    * ``tokens``: the number of real (non-padding) target tokens; ``token_acc``: argmax accuracy on them;
    * ``nll`` and ``perplexity = exp(nll)``: plain cross-entropy with ``ignore_index=pad_index``;
    * ``ls_loss``: :func:`lsutils.smoothed_cross_entropy` with ``ignore_index`` (PyTorch's convention, ``ε/K``
      on every class, the padding token included); ``ls_loss_torch``: ``F.cross_entropy(...,
      ignore_index, label_smoothing)`` (the same number);
    * ``ls_loss_padding_counted``: the same loss *without* ``ignore_index``, averaged over every position —
      the bug of forgetting the mask (padding scored as if it were a word);
    * ``annotated_kl``: :func:`lsutils.annotated_transformer_loss` per real token (``1 − ε`` / ``ε/(K−2)``, padding
      column and padded rows zeroed, a KL divergence: ``0`` at ``p = q'``).

    >>> z = torch.zeros(1, 5, 3); t = torch.tensor([[1, 2, 0]])
    >>> r = token_loss_report(z, t, 0.1, pad_index=0)
    >>> r["tokens"], round(r["perplexity"], 3)
    (2, 5.0)
    """
    from lsutils.losses import annotated_transformer_loss, smoothed_cross_entropy

    _check_sequence(logits, target, pad_index)
    epsilon = check_probability("epsilon", epsilon)
    keep = target != pad_index
    nll = F.cross_entropy(logits, target, ignore_index=pad_index)
    return {
        "tokens": int(keep.sum()),
        "token_acc": float((logits.argmax(1) == target)[keep].double().mean()),
        "nll": float(nll),
        "perplexity": float(torch.exp(nll)),
        "ls_loss": float(smoothed_cross_entropy(logits, target, epsilon, ignore_index=pad_index)),
        "ls_loss_torch": float(F.cross_entropy(logits, target, ignore_index=pad_index, label_smoothing=epsilon)),
        "ls_loss_padding_counted": float(smoothed_cross_entropy(logits, target, epsilon)),
        "annotated_kl": float(annotated_transformer_loss(logits.movedim(1, -1).reshape(-1, logits.shape[1]),
                                                         target.reshape(-1), epsilon, pad_index, reduction="mean")),
    }


# --------------------------------------------------------------------------------------------- distillation + LS


# --------------------------------------------------------------------------------------------- chapter 8 specs
def chapter8_settings(profile: Any) -> dict[str, Any]:
    """The sizes of chapter 8's experiments, derived from a :class:`~lsutils.config.Profile`.

    * ``seeds``: the profile's first two seeds (two seeds × ~20 new models fit the chapter's budget);
    * ``epsilon``: 0.1, the smoothing of the CE/LS models chapter 3 caches; ``epsilon_strong``: 0.3, the
      strongest smoothing of chapter 5's teachers (also cached), for the selective-classification comparison;
    * ``dropout``: 0.3 (between the penultimate layer and the classifier);
    * ``weight_decay``: the profile's own (AdamW, decoupled); the other rows use 0;
    * ``tiny_width``: the small model of the model-size comparison (the profile's model at width 2,
      i.e. 2 and 4 convolution channels instead of 32 and 64);
    * ``distill_temperature``, ``distill_beta``: the distillation row (teacher = the profile's CE model);
    * ``pnorm_grid``: the ``p`` values :func:`select_pnorm` chooses from; ``coverage``: where the
      selective risk is read (0.5: the most confident half, where LS's damage shows).

    >>> from lsutils.config import get_profile
    >>> chapter8_settings(get_profile("cpu"))["seeds"]
    (0, 1)
    """
    for attr in ("seeds", "weight_decay", "model", "width"):
        if not hasattr(profile, attr):
            raise TypeError(f"profile must be an lsutils Profile (from get_profile()), got {type(profile).__name__}")
    return {"seeds": tuple(profile.seeds[:2]), "epsilon": 0.1, "epsilon_strong": 0.3, "dropout": 0.3,
            "weight_decay": float(profile.weight_decay), "tiny_width": 2 if profile.model == "cnn" else 4,
            "distill_temperature": 4.0, "distill_beta": 0.5, "pnorm_grid": tuple(range(1, 10)), "coverage": 0.5}


def regularizer_specs(profile: Any, seed: int, epsilon: float, *, distill: bool | None = None) -> dict[str, Any]:
    """The runs of the regulariser table for one seed and one smoothing ``ε`` (0 = no label smoothing).

    Every row starts from ``RunSpec.from_profile(profile, loss=smoothing_spec(ε), seed=seed)`` and changes
    exactly what its name says; every row but ``"weight decay"`` sets ``weight_decay=0`` (the profile's
    AdamW default is 1e-2), so each regulariser is measured alone:

    * ``"none"``: ``weight_decay=0``; nothing else;
    * ``"weight decay"``: the profile's own spec (``weight_decay`` = the profile's; the model chapter 3 caches);
    * ``"dropout"``: ``weight_decay=0``, ``dropout`` = :func:`chapter8_settings`'s;
    * ``"augmentation"``: ``weight_decay=0``, ``augment=True`` (random crop with 4-pixel padding + flip);
    * ``"distillation"`` (when the trainer knows the loss ``"distill"`` of :mod:`lsutils.distill`, or
      ``distill=True``): ``weight_decay=0``, the teacher is the profile's CE model of the same seed
      (``RunSpec.from_profile(profile, loss={"name": "ce"}, seed=seed)``, cached), and the loss is
      ``{"name": "distill", "teacher": ..., "temperature": T, "beta": β}`` for ``ε = 0``, or
      ``{"name": "distill", ..., "epsilon": ε}`` (the student's hard-label
      term smoothed with ``ε``) otherwise.

    >>> from lsutils.config import get_profile
    >>> specs = regularizer_specs(get_profile("smoke"), 0, 0.1, distill=False)
    >>> list(specs), specs["none"].weight_decay, specs["dropout"].dropout
    (['none', 'weight decay', 'dropout', 'augmentation'], 0.0, 0.3)
    """
    from lsutils.losses import available_losses, smoothing_spec
    from lsutils.train import RunSpec

    s = chapter8_settings(profile)
    epsilon = check_probability("epsilon", epsilon)
    loss = smoothing_spec(epsilon)
    base = lambda **kw: RunSpec.from_profile(profile, loss=loss, seed=seed, **kw)  # noqa: E731
    specs = {"none": base(weight_decay=0.0), "weight decay": base(),
             "dropout": base(weight_decay=0.0, dropout=s["dropout"]),
             "augmentation": base(weight_decay=0.0, augment=True)}
    if distill is None:
        distill = "distill" in available_losses()
    if distill:
        teacher = RunSpec.from_profile(profile, loss=smoothing_spec(0.0), seed=seed)
        dloss: dict[str, Any] = {"name": "distill", "teacher": teacher.to_dict(),
                                 "temperature": s["distill_temperature"], "beta": s["distill_beta"]}
        if epsilon > 0:
            dloss.update(epsilon=epsilon)
        specs["distillation"] = RunSpec.from_profile(profile, loss=dloss, seed=seed, weight_decay=0.0)
    return specs


def model_size_specs(profile: Any, seed: int, epsilon: float) -> dict[str, Any]:
    """``{"tiny": spec, "profile": spec}``: the profile's model at ``chapter8_settings(profile)["tiny_width"]`` and at its own width.

    Both use the profile's schedule and ``smoothing_spec(ε)``; the ``"profile"`` spec is the one chapter 3 caches.

    >>> from lsutils.config import get_profile
    >>> model_size_specs(get_profile("smoke"), 0, 0.0)["tiny"].width
    2
    """
    from lsutils.losses import smoothing_spec
    from lsutils.train import RunSpec

    s = chapter8_settings(profile)
    loss = smoothing_spec(check_probability("epsilon", epsilon))
    return {"tiny": RunSpec.from_profile(profile, loss=loss, seed=seed, width=s["tiny_width"]),
            "profile": RunSpec.from_profile(profile, loss=loss, seed=seed)}
