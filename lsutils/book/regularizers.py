"""Chapter 8: label smoothing beside other regularizers, in selective classification, and with few classes.

What the chapter's notebook needs besides the core: its settings (:func:`chapter_settings`), one trainer loss
(the confidence penalty of Pereyra et al. 2017, registered as ``"confidence_penalty"``), class-subset runs
(:func:`subset_spec`, :func:`subset_data`), scores computed once per model (:func:`split_logits`,
:func:`scores`, :func:`selective_scores`), paired comparisons over seeds (:func:`paired_table`) and the figures
(:func:`plot_points`, :func:`plot_risk_coverage`). Nothing here trains a model: the notebook builds its run
lists itself and passes them to :func:`lsutils.train_many`.

**Confidence penalty.** ``CE(z, y) − β·H(softmax(z))``: it penalises low-entropy (confident) predictions. Since
``−H(p) = KL(p ‖ u) − log K`` it pulls ``p`` toward the uniform ``u`` through ``KL(p ‖ u)``, where label
smoothing pulls through ``KL(u ‖ p)``: ``H(q', p) = (1 − ε)·[CE + ε/(1 − ε)·KL(u ‖ p)] + const``. So
``β = ε/(1 − ε)`` gives the penalty the same weight relative to the cross-entropy as label smoothing's
(:func:`matching_beta`).
"""
from __future__ import annotations

import math
import textwrap
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lsutils._validate import as_int, as_real, check_class_indices, check_logits_2d, check_probability, check_tensor
from lsutils.book.common import md  # noqa: F401  (the chapter's generated prose: ch.md(...))
from lsutils.losses import register_loss

__all__ = ["confidence_penalty", "matching_beta", "smoothing_cap", "decay_factor", "chapter_settings", "subset_spec",
           "subset_data", "split_logits", "scores", "per_class_confidence", "selective_scores", "paired_table",
           "consistency", "md_table",
           "plot_points", "plot_risk_coverage"]


# --------------------------------------------------------------------------------------------- the confidence penalty
def confidence_penalty(logits: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """``CE(logits, target) − beta · H(softmax(logits))``, averaged over the batch (Pereyra et al. 2017).

    ``logits``: ``(B, K)`` floating; ``target``: ``(B,)`` class indices; ``beta`` ≥ 0. Returns a scalar tensor.
    With ``beta = 0`` it is the plain cross-entropy; on uniform logits ``H = log K``.

    >>> z = torch.zeros(2, 4); y = torch.tensor([0, 3])
    >>> round(float(confidence_penalty(z, y, 0.5)), 4)      # log 4 − 0.5·log 4
    0.6931
    """
    check_logits_2d("logits", logits)
    check_tensor("target", target, floating=False)
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must have shape ({logits.shape[0]},) for logits {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    check_class_indices("target", target, logits.shape[1])
    return _penalised(logits, target, _check_beta(beta))


def _check_beta(beta: Any) -> float:
    beta = as_real("beta", beta)
    if beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta}")
    return beta


def _penalised(logits: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), dim=1)
    entropy = -(logp.exp() * logp).sum(dim=1)
    return F.nll_loss(logp, target.long()) - beta * entropy.mean()


@register_loss("confidence_penalty")
def _confidence_penalty_loss(beta: float, context: Any = None):
    """Trainer loss ``{"name": "confidence_penalty", "beta": β}`` (:func:`confidence_penalty`)."""
    beta = _check_beta(beta)
    return lambda logits, target: _penalised(logits, target, beta)


def matching_beta(epsilon: float) -> float:
    """``ε / (1 − ε)``: the confidence-penalty weight equal, relative to the CE term, to label smoothing's.

    >>> round(matching_beta(0.1), 4)
    0.1111
    """
    epsilon = check_probability("epsilon", epsilon, high_open=True)
    return epsilon / (1.0 - epsilon)


def smoothing_cap(num_classes: int, epsilon: float) -> float:
    """``1 − ε + ε/K``: the true class's target probability, the most an LS-optimal model is sure of.

    >>> round(smoothing_cap(10, 0.1), 4), round(smoothing_cap(2, 0.1), 4)
    (0.91, 0.95)
    """
    k = as_int("num_classes", num_classes, minimum=2)
    epsilon = check_probability("epsilon", epsilon)
    return 1.0 - epsilon + epsilon / k


def decay_factor(profile: Any, weight_decay: float) -> float:
    """How much decoupled weight decay alone would shrink a weight over one run of ``profile``: ``Π_t (1 − lr_t·λ)``.

    ``lr_t`` is the trainer's one-cycle schedule (:func:`lsutils.train.one_cycle_schedule`) over
    ``epochs · ⌈n_train / batch_size⌉`` steps; AdamW multiplies every weight by ``1 − lr_t·λ`` at each step
    before its gradient update. A factor near 1 means the decay does nothing within the run.

    >>> import lsutils as ls
    >>> round(decay_factor(ls.get_profile("smoke"), 0.0), 4)
    1.0
    """
    from lsutils.train import one_cycle_schedule

    for attr in ("epochs", "n_train", "batch_size", "lr"):
        if not hasattr(profile, attr):
            raise TypeError(f"profile must be an lsutils Profile (from get_profile()), got {type(profile).__name__}")
    lam = as_real("weight_decay", weight_decay)
    if lam < 0:
        raise ValueError(f"weight_decay must be >= 0, got {lam}")
    if profile.n_train is None:
        raise ValueError("profile.n_train is None (all images): give a profile with a fixed training-set size")
    steps = profile.epochs * math.ceil(profile.n_train / profile.batch_size)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=profile.lr)
    sched = one_cycle_schedule(opt, profile.lr, steps)
    log_factor = 0.0
    for _ in range(steps):
        log_factor += math.log(max(1.0 - opt.param_groups[0]["lr"] * lam, 1e-300))
        opt.step()
        sched.step()
    return math.exp(log_factor)


# --------------------------------------------------------------------------------------------- settings and runs
def chapter_settings(profile: Any) -> dict[str, Any]:
    """The sizes and strengths of chapter 8's experiments for a :class:`~lsutils.config.Profile`.

    * ``seeds``: the profile's seeds; ``epsilons``: the LS models (shared with chapters 3–7 through the cache)
      from which the chapter's ε is chosen on validation NLL, and which the selective-classification section scores;
    * ``weight_decay``: 2.0, the strong decoupled (AdamW) weight decay of the "weight decay" row (the profile's own
      ``weight_decay`` is the baseline); ``dropout``: 0.5 on the penultimate features (Srivastava et al.'s default
      for hidden units);
    * ``class_sets``: the nested class subsets of the few-classes experiment, most confusable first (Fashion-MNIST:
      pullover/coat; the five tops; ``None`` = all classes, the profile's own models); ``k_epsilon``: its smoothing;
    * ``pnorm_grid``: the ``p`` values MaxLogit-pNorm chooses from on validation.

    >>> chapter_settings(__import__("lsutils").get_profile("smoke"))["class_sets"]
    ((2, 4), (0, 2, 3, 4, 6), None)
    """
    for attr in ("seeds", "weight_decay", "n_train", "n_val"):
        if not hasattr(profile, attr):
            raise TypeError(f"profile must be an lsutils Profile (from get_profile()), got {type(profile).__name__}")
    return {"seeds": tuple(profile.seeds), "epsilons": (0.05, 0.1, 0.3), "weight_decay": 2.0, "dropout": 0.5,
            "class_sets": ((2, 4), (0, 2, 3, 4, 6), None), "k_epsilon": 0.1, "pnorm_grid": tuple(range(1, 10))}


_NUM_CLASSES = {"fashion_mnist": 10, "cifar10": 10}


def _scaled(n: int | None, k: int, total: int) -> int | None:
    return None if n is None else max(k, n * k // total)


def subset_spec(profile: Any, classes: Sequence[int] | None, loss: Mapping[str, Any], seed: int) -> Any:
    """The profile's run restricted to ``classes``: the same images per class and the same number of steps.

    ``classes=None`` (or all the dataset's classes in order) is exactly the profile's spec
    ``RunSpec.from_profile(profile, loss=loss, seed=seed)``, so it shares the cached model; otherwise the spec
    keeps ``classes`` and scales ``n_train``, ``n_val`` and ``batch_size`` by ``K/10``, so that every epoch has as
    many optimizer steps as the profile's (the schedule, the epochs and the learning rate stay the same).

    >>> import lsutils as ls
    >>> s = subset_spec(ls.get_profile("smoke"), (2, 4), {"name": "ce"}, 0)
    >>> s.classes, s.n_train, s.n_val, s.batch_size
    ((2, 4), 100, 100, 26)
    """
    from lsutils.train import RunSpec

    total = _NUM_CLASSES.get(getattr(profile, "dataset", None))
    if total is None:
        raise TypeError(f"profile must be an lsutils Profile with dataset in {sorted(_NUM_CLASSES)}, got {profile!r}")
    if classes is not None:
        classes = tuple(classes)
        if classes == tuple(range(total)):
            classes = None
    if classes is None:
        return RunSpec.from_profile(profile, loss=loss, seed=seed)
    k = len(classes)
    return RunSpec.from_profile(profile, loss=loss, seed=seed, classes=classes,
                                n_train=_scaled(profile.n_train, k, total), n_val=_scaled(profile.n_val, k, total),
                                batch_size=max(1, round(profile.batch_size * k / total)))


def subset_data(profile: Any, spec: Any) -> Any:
    """The data a :func:`subset_spec` run trains on, with the profile's test set restricted to its classes.

    The test set keeps ``n_test · K/10`` images (all of the classes' test images when the profile uses all).
    """
    from lsutils.data import load_dataset, load_profile_data

    if not hasattr(spec, "classes") or not hasattr(spec, "n_val"):
        raise TypeError(f"spec must be a RunSpec, got {type(spec).__name__}")
    if spec.classes is None:
        return load_profile_data(profile, seed=spec.data_seed)
    total = _NUM_CLASSES[spec.dataset]
    return load_dataset(spec.dataset, n_train=spec.n_train, n_val=spec.n_val, seed=spec.data_seed,
                        n_test=_scaled(profile.n_test, len(spec.classes), total), classes=spec.classes)


# --------------------------------------------------------------------------------------------- scores
def split_logits(model: torch.nn.Module, data: Any, splits: Sequence[str] = ("train", "val", "test"),
                 batch_size: int = 512) -> dict[str, torch.Tensor]:
    """``{split: logits (N_split, K)}`` of ``model`` (eval mode) on ``data``'s splits, computed once each.

    ``batch_size`` goes to :func:`lsutils.predict_logits`: on the book's CPU, chunks of 512 images run the
    profile's CNN about 2.5 times faster than the default 2,048.
    """
    from lsutils.models import predict_logits

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out = {}
    for name in splits:
        split = getattr(data, name, None)
        if split is None or not hasattr(split, "x"):
            raise TypeError(f"data must have a split {name!r} with .x and .y (an lsutils ImageDataset)")
        out[name] = predict_logits(model, split.x, batch_size=batch_size).float().cpu()
    return out


def scores(logits: Mapping[str, torch.Tensor], data: Any, n_bins: int = 15) -> dict[str, float]:
    """One model's numbers from its :func:`split_logits`: test accuracy, NLL, ECE and more.

    Keys: ``acc``, ``nll``, ``ece`` (``n_bins`` bins), ``conf`` (mean max probability) and ``overconf`` (``conf −
    acc``) on test; ``T``, the temperature fitted on validation NLL (> 1: over-confident, < 1: under-confident),
    ``val_nll`` and ``ece_ts`` (the test ECE after dividing the logits by ``T``) when ``"val"`` is given; ``train_acc`` (eval mode, no augmentation), ``gap`` (train − test
    accuracy) and ``train_conf`` when ``"train"`` is given.

    >>> import types
    >>> sp = types.SimpleNamespace(y=torch.tensor([0, 1, 1]))
    >>> z = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    >>> round(scores({"test": z}, types.SimpleNamespace(test=sp))["acc"], 4)
    0.6667
    """
    from lsutils.metrics import calibration_report, fit_temperature, nll

    if not isinstance(logits, Mapping) or "test" not in logits:
        raise TypeError("logits must be a dict {split: logits} with at least 'test' (see split_logits)")
    test = calibration_report(logits["test"], data.test.y, n_bins)
    out = {k: test[k] for k in ("acc", "nll", "ece", "conf")}
    out["overconf"] = out["conf"] - out["acc"]
    if "val" in logits:
        with warnings.catch_warnings():        # a separable validation set: T at the edge of its range is the answer
            warnings.simplefilter("ignore", RuntimeWarning)
            out["T"] = fit_temperature(logits["val"], data.val.y)
        out["val_nll"] = nll(logits["val"], data.val.y)
        out["ece_ts"] = calibration_report(logits["test"], data.test.y, n_bins, temperature=out["T"])["ece"]
    if "train" in logits:
        z = logits["train"]
        out["train_acc"] = float((z.argmax(1) == data.train.y).double().mean())
        out["gap"] = out["train_acc"] - out["acc"]
        out["train_conf"] = float(z.double().softmax(1).amax(1).mean())
    return out


def per_class_confidence(logits: torch.Tensor, labels: torch.Tensor, names: Sequence[str] | None = None) -> Any:
    """Accuracy and mean confidence (max probability) of the images of each true class: a ``pandas.DataFrame``.

    ``logits`` ``(N, K)``, ``labels`` ``(N,)``; ``names``: the ``K`` class names (default ``0 .. K-1``). Columns
    ``acc``, ``conf`` and ``overconf = conf − acc`` (negative: under-confident on that class), one row per class.

    >>> z = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 1.0]]); y = torch.tensor([0, 1, 1])
    >>> per_class_confidence(z, y, ["a", "b"])["acc"].tolist()
    [1.0, 0.5]
    """
    import pandas as pd

    check_logits_2d("logits", logits)
    k = logits.shape[1]
    check_tensor("labels", labels, floating=False)
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    check_class_indices("labels", labels, k)
    names = [str(c) for c in range(k)] if names is None else [str(n) for n in names]
    if len(names) != k:
        raise ValueError(f"names must give one name per class ({k}), got {len(names)}")
    probs = logits.detach().double().softmax(1)
    conf, pred = probs.max(1)
    hit = (pred == labels).double()
    rows = []
    for c in range(k):
        m = labels == c
        if m.any():
            rows.append({"class": names[c], "acc": float(hit[m].mean()), "conf": float(conf[m].mean())})
    df = pd.DataFrame(rows).set_index("class")
    df["overconf"] = df["conf"] - df["acc"]
    return df


def selective_scores(logits: Mapping[str, torch.Tensor], data: Any, ps: Iterable[float] = tuple(range(1, 10))
                     ) -> dict[str, Any]:
    """Selective classification of one model with two confidences: the MSP and MaxLogit-pNorm.

    ``p`` is chosen on the validation logits by :func:`lsutils.metrics.select_pnorm` (lowest AURC), then both
    confidences are scored on test. Returns ``p``; ``fallback`` (whether the MSP was at least as good as the chosen
    ``p`` on validation: Cattelan & Silva's procedure would then keep the MSP); ``rows``, one dict per confidence
    (``confidence``, ``acc``, ``aurc``, ``e_aurc``); and ``curves`` ``{name: (confidence (N,), correct (N,))}`` on test.
    """
    from lsutils.metrics import msp_score, pnorm_logit_score, select_pnorm, selective_report

    if not isinstance(logits, Mapping) or not {"val", "test"} <= set(logits):
        raise TypeError("logits must be a dict with 'val' and 'test' logits (see split_logits)")
    fit = select_pnorm(logits["val"], data.val.y, tuple(ps))
    z, y = logits["test"], data.test.y
    correct = z.argmax(1) == y
    conf = {"MSP": msp_score(z), "MaxLogit-pNorm": pnorm_logit_score(z, fit["p"])}
    rows = [{"confidence": name, **{k: v for k, v in selective_report(z, y, c, coverages=()).items()}}
            for name, c in conf.items()]
    return {"p": fit["p"], "fallback": fit["msp_aurc"] <= fit["aurc"][fit["p"]], "rows": rows,
            "curves": {name: (c, correct) for name, c in conf.items()}}


# --------------------------------------------------------------------------------------------- comparisons over seeds
def paired_table(rows: Any, by: str, metrics: Mapping[str, float], a: Mapping[str, Any], b: Mapping[str, Any], *,
                 on: str = "seed", digits: int = 2) -> Any:
    """Paired comparisons ``a − b`` (:func:`lsutils.stats.paired_comparison`) for each value of ``by`` and metric.

    ``rows``: a DataFrame or list of dicts, one per run; ``metrics``: ``{column: scale}`` (e.g. ``{"acc": 100}``);
    ``a``/``b``: column values selecting the two arms within each group (e.g. ``{"epsilon": 0.1}``,
    ``{"epsilon": 0.0}``). Groups without both arms are skipped. Returns a DataFrame indexed by ``(by, metric)``
    with ``mean``, ``sd``, ``ci_low``, ``ci_high``, ``p``, ``n`` and ``text`` (``"+1.23 ± 0.45 (95 % CI ..., p = ...)"``).

    >>> rows = [{"g": "x", "e": e, "seed": s, "acc": v} for e, s, v in
    ...         [(0, 0, .80), (0, 1, .82), (0, 2, .81), (1, 0, .83), (1, 1, .84), (1, 2, .84)]]
    >>> t = paired_table(rows, "g", {"acc": 100}, {"e": 1}, {"e": 0})
    >>> print(t.loc[("x", "acc"), "text"])
    +2.67 ± 0.58 (95 % CI [+1.23, +4.10], p = 0.02, n = 3)
    """
    import pandas as pd

    from lsutils.stats import paired_comparison

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(list(rows))
    if by not in df.columns:
        raise ValueError(f"by={by!r} is not a column of rows; columns: {sorted(df.columns)}")
    if not isinstance(metrics, Mapping) or not metrics:
        raise TypeError("metrics must be a non-empty dict {column: scale}, e.g. {'acc': 100}")
    records = []
    for group in dict.fromkeys(df[by]):
        sub = df[df[by] == group]
        if not all((sub[k] == v).any() for arm in (a, b) for k, v in arm.items() if k in sub.columns):
            continue
        for metric, scale in metrics.items():
            try:
                r = paired_comparison(sub, metric, a, b, on=on, scale=scale)
            except ValueError as exc:
                if "no rows match" in str(exc):
                    continue
                raise
            records.append({by: group, "metric": metric, "mean": r.mean, "sd": r.std, "ci_low": r.ci_low,
                            "ci_high": r.ci_high, "p": r.p, "n": r.n, "text": r.text(digits)})
    if not records:
        raise ValueError(f"no group of {by!r} holds both arms a={dict(a)} and b={dict(b)}")
    return pd.DataFrame.from_records(records).set_index([by, "metric"])


def consistency(comparisons: Mapping[Any, Any], direction: str, alpha: float = 0.05) -> str:
    """How a set of paired comparisons agrees with one direction: ``"all"``, ``"some"``, ``"sign"`` or ``"none"``.

    ``comparisons``: ``{label: comparison}``, each a :class:`lsutils.stats.PairedComparison` or a row of
    :func:`paired_table` (with ``mean`` and ``p``); ``direction``: ``"higher"`` (mean > 0) or ``"lower"``.
    ``"all"``: every one significant (``p < alpha``) in that direction; ``"some"``: at least one; ``"sign"``: none
    significant, but every mean in that direction; ``"none"``: otherwise.

    >>> consistency({"a": {"mean": 1.0, "p": 0.01}, "b": {"mean": 2.0, "p": 0.2}}, "higher")
    'some'
    """
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    if not isinstance(comparisons, Mapping) or not comparisons:
        raise TypeError("comparisons must be a non-empty dict {label: comparison}")
    sign = 1.0 if direction == "higher" else -1.0
    means, ps = [], []
    for label, c in comparisons.items():
        get = (lambda k: c[k]) if isinstance(c, Mapping) or hasattr(c, "loc") else (lambda k: getattr(c, k))
        try:
            means.append(sign * float(get("mean")))
            ps.append(float(get("p")))
        except (KeyError, AttributeError, TypeError) as exc:
            raise TypeError(f"comparison {label!r} has no 'mean' and 'p': {exc}") from None
    hits = [m > 0 and p < alpha for m, p in zip(means, ps)]
    if all(hits):
        return "all"
    if any(hits):
        return "some"
    return "sign" if all(m > 0 for m in means) else "none"


def md_table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (for :func:`lsutils.book.common.md`) from a header and rows of cells.

    >>> print(md_table(["a", "b"], [[1, "x | y"]]))
    | a | b |
    | --- | --- |
    | 1 | x \\| y |
    """
    header = [str(h) for h in header]
    if not header:
        raise ValueError("header must name at least one column")
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for i, row in enumerate(body):
        cells = [str(c).replace("|", "\\|") for c in row]
        if len(cells) != len(header):
            raise ValueError(f"row {i} has {len(cells)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- figures
def plot_points(rows: Any, x: str, panels: Mapping[str, tuple[str, float]], *, hue: str | None = None,
                order: Sequence[Any] | None = None, hue_order: Sequence[Any] | None = None,
                ref_lines: Mapping[str, float] | None = None, title: str | None = None, ncols: int | None = None,
                panel_size: tuple[float, float] = (3.6, 3.1)) -> Any:
    """Point plots with error bars (mean ± sd over seeds) and the single runs as small dots, one panel per metric.

    ``rows``: a DataFrame or list of dicts, one per run; ``panels``: ``{column: (y label, scale)}``; ``hue``: the
    column that splits each x position (e.g. with and without LS); ``ref_lines``: ``{column: y}`` dashed
    reference lines (e.g. ``T = 1``, a difference of 0). Returns the figure.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(list(rows))
    if not isinstance(panels, Mapping) or not panels:
        raise TypeError("panels must be a non-empty dict {column: (label, scale)}")
    missing = sorted({x, *panels, *([hue] if hue else [])} - set(df.columns))
    if missing:
        raise ValueError(f"rows lack the columns {missing}; columns: {sorted(df.columns)}")
    ncols = ncols or len(panels)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False)
    order = list(order) if order is not None else list(dict.fromkeys(df[x]))
    if hue is not None:
        hue_order = list(hue_order) if hue_order is not None else list(dict.fromkeys(df[hue]))
    for ax, (col, (label, scale)) in zip(axes.flat, panels.items()):
        d = df.assign(_y=df[col].astype(float) * scale)
        kw = dict(data=d, x=x, y="_y", hue=hue, order=order, hue_order=hue_order, ax=ax)
        sns.stripplot(**kw, dodge=hue is not None, alpha=0.35, size=3.5, legend=False, jitter=0.05)
        sns.pointplot(**kw, dodge=0.4 if hue is not None else False, errorbar="sd", capsize=0.12, linestyle="none",
                      markersize=5, err_kws={"linewidth": 1.3})
        if ref_lines and col in ref_lines:
            ax.axhline(ref_lines[col], color="gray", lw=1, ls="--")
        ax.set_xlabel("")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([textwrap.fill(str(o), 10, break_long_words=False) for o in order], fontsize=9)
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if hue is not None:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncols=len(labels), frameon=False,
                   bbox_to_anchor=(0.5, 1.0 + 0.02 * nrows))
    if title:
        fig.suptitle(title, y=1.06 + 0.02 * nrows if hue is not None else 1.0)
    fig.tight_layout()
    return fig


def plot_risk_coverage(curves: Mapping[str, tuple[Any, Any]], *, ax: Any = None, max_coverage: float = 1.0,
                       title: str | None = None, min_coverage_for_ylim: float = 0.02) -> Any:
    """Risk–coverage curves, one line per ``label: (confidence (N,), correct (N,))``; returns the Axes.

    The legend gives each curve's AURC; ``max_coverage < 1`` zooms into the low-coverage end, where the
    most confident predictions are (and where a bad ranking shows first). The y range is set by the curves from
    a coverage of ``min_coverage_for_ylim`` on: the first few points (one wrong answer among the first ten
    is 10 %) would otherwise flatten the rest.
    """
    import matplotlib.pyplot as plt

    from lsutils.metrics import risk_coverage_curve

    if not isinstance(curves, Mapping) or not curves:
        raise TypeError("curves must be a non-empty dict {label: (confidence, correct)}")
    max_coverage = check_probability("max_coverage", max_coverage, low_open=True)
    min_cov = check_probability("min_coverage_for_ylim", min_coverage_for_ylim, high=max_coverage)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6))
    top = 0.0
    for label, (conf, correct) in curves.items():
        c = risk_coverage_curve(conf, correct)
        keep = c["coverage"] <= max_coverage + 1e-12
        ax.plot(100 * c["coverage"][keep], 100 * c["risk"][keep],
                label=f"{label} (AURC {1000 * float(c['risk'].mean()):.1f}‰)")
        scale = keep & (c["coverage"] >= min_cov)
        top = max(top, float(np.max(c["risk"][scale])) if scale.any() else 0.0)
    ax.set_xlabel("coverage (% of test images answered)")
    ax.set_ylabel("selective risk (% wrong among answered)")
    ax.set_xlim(0, 100 * max_coverage)
    ax.set_ylim(0, 100 * top * 1.05 + 1e-9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax
