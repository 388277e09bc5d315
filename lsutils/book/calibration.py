"""Chapter 4: calibration — label smoothing and temperature scaling (Müller, Kornblith & Hinton 2019, §3).

The chapter's settings (the ε grid, the paper's Table 3), the training-curve analysis of the regime
(:func:`history_frame`, :func:`positive_from`, :func:`plot_training_curves`), the choice of ε on validation
(:func:`select_epsilon`, :func:`at_grid_edge`) and the figures (:func:`plot_sweep`, :func:`plot_reliability_row`,
:func:`plot_claims`). The metrics themselves (ECE, MCE with a minimum bin count, temperature scaling) live in
:mod:`lsutils.metrics`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from lsutils._validate import check_tensor
from lsutils.book.common import comparison_text, md, p_text, verdict

__all__ = ["EPSILONS", "MULLER2019_TABLE3", "md", "epsilon_of", "loss_name", "verdict", "p_text", "comparison_text",
           "history_frame", "positive_from", "select_epsilon", "at_grid_edge", "plot_training_curves", "plot_sweep",
           "plot_reliability_row", "plot_claims"]

#: The ε grid of the chapter (0 = plain cross-entropy). Other chapters build their CE / LS specs from these values,
#: so that one ε and one seed are one cached model.
EPSILONS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)

#: Müller, Kornblith & Hinton (2019), Table 3 (ECE, 15 bins), as quoted in the book's reference notes
#: (``shared/references.md``): network as trained, after temperature scaling (with its T), with label smoothing
#: (with its α). "—": not given in the notes. The EN-DE row could not be checked against the paper's text.
MULLER2019_TABLE3: tuple[dict[str, str], ...] = (
    {"data set, network": "CIFAR-100, ResNet-56", "ECE as trained": "0.150", "ECE + TS": "0.021", "T": "1.9",
     "ECE LS": "0.024", "LS ε": "0.05"},
    {"data set, network": "ImageNet, Inception-v4", "ECE as trained": "0.071", "ECE + TS": "0.022", "T": "1.4",
     "ECE LS": "0.035", "LS ε": "0.1"},
    {"data set, network": "EN-DE translation, Transformer", "ECE as trained": "0.056", "ECE + TS": "0.018",
     "T": "—", "ECE LS": "0.019", "LS ε": "—"},
)


def epsilon_of(spec: Any) -> float:
    """The smoothing ε of a CE / LS :class:`~lsutils.train.RunSpec` (or its ``loss_spec()`` dict); 0.0 for CE.

    >>> epsilon_of({"name": "ce"}), epsilon_of({"name": "ls", "epsilon": 0.05})
    (0.0, 0.05)
    """
    loss = spec.loss_spec() if hasattr(spec, "loss_spec") else spec
    if not isinstance(loss, Mapping) or loss.get("name") not in ("ce", "ls"):
        raise ValueError(f"spec must describe a 'ce' or 'ls' loss, got {loss!r}")
    return 0.0 if loss["name"] == "ce" else float(loss["epsilon"])


def loss_name(eps: float) -> str:
    """``"CE"`` for ε = 0, else ``"LS ε=0.05"``.

    >>> loss_name(0.0), loss_name(0.05)
    ('CE', 'LS ε=0.05')
    """
    eps = float(eps)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps}")
    return "CE" if eps == 0.0 else f"LS ε={eps:g}"


# --------------------------------------------------------------------------------------------- the regime
_HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_ece", "val_conf")


def history_frame(runs: Sequence[Any]):
    """The per-epoch history of trained CE / LS runs as one long ``pandas.DataFrame``.

    One row per (run, epoch): ``eps``, ``seed``, ``epoch`` (1-based), the history's ``train_loss``, ``train_acc``,
    ``val_loss`` (NLL), ``val_acc``, ``val_ece``, ``val_conf``, and ``overconfidence`` = ``val_conf - val_acc``
    (positive: the mean confidence exceeds the accuracy).
    """
    import pandas as pd

    rows = []
    for i, run in enumerate(runs):
        if not (hasattr(run, "spec") and hasattr(run, "history")):
            raise TypeError(f"runs[{i}] must be a TrainedRun (from train_model / train_many), got {type(run).__name__}")
        h = run.history
        missing = [k for k in _HISTORY_KEYS if k not in h]
        if missing:
            raise ValueError(f"runs[{i}].history lacks {missing}; it has {sorted(h)}")
        eps, seed = epsilon_of(run.spec), run.spec.seed
        for e in range(len(h["val_acc"])):
            row = {"eps": eps, "seed": seed, "epoch": e + 1, **{k: float(h[k][e]) for k in _HISTORY_KEYS}}
            row["overconfidence"] = row["val_conf"] - row["val_acc"]
            rows.append(row)
    if not rows:
        raise ValueError("runs is empty")
    return pd.DataFrame(rows)


def positive_from(values: Sequence[float]) -> int | None:
    """The first 1-based position from which every value is positive, or ``None`` when the last one is not.

    >>> positive_from([-0.2, 0.01, -0.01, 0.03, 0.05]), positive_from([0.1, -0.1]), positive_from([0.2, 0.3])
    (4, None, 1)
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("values is empty")
    if any(math.isnan(v) for v in vals):
        raise ValueError(f"values contain NaN: {vals}")
    if vals[-1] <= 0:
        return None
    k = len(vals)
    while k > 0 and vals[k - 1] > 0:
        k -= 1
    return k + 1


def select_epsilon(rows: Any, metric: str = "val_ece", *, eps: str = "eps") -> tuple[float, Any]:
    """The ε > 0 whose mean ``metric`` over seeds is lowest, and the means of every ε (a ``pandas.Series``).

    ``rows``: a DataFrame (or list of dicts), one row per run, with columns ``eps`` and ``metric`` (computed on
    the *validation* split: the test split plays no part in the choice).

    >>> import pandas as pd
    >>> df = pd.DataFrame({"eps": [0, 0, .05, .05, .1, .1], "val_ece": [.07, .08, .02, .03, .06, .05]})
    >>> select_epsilon(df)[0]
    0.05
    """
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for col in (eps, metric):
        if col not in df.columns:
            raise ValueError(f"rows lack the column {col!r}; columns: {sorted(df.columns)}")
    means = df.groupby(eps)[metric].mean()
    positive = means[means.index > 0]
    if positive.empty:
        raise ValueError("rows hold no run with ε > 0 to choose from")
    return float(positive.idxmin()), means


def at_grid_edge(value: float, grid: Sequence[float]) -> bool:
    """Whether ``value`` is the smallest positive or the largest value of ``grid`` (a choice at the edge of a grid
    may lie outside it: widen the grid).

    >>> at_grid_edge(0.05, (0, 0.01, 0.05, 0.3)), at_grid_edge(0.01, (0, 0.01, 0.05, 0.3))
    (False, True)
    """
    positive = sorted(float(g) for g in grid if float(g) > 0)
    if not positive:
        raise ValueError(f"grid holds no positive value: {list(grid)}")
    if float(value) not in positive:
        raise ValueError(f"value {value} is not a positive value of the grid {positive}")
    return float(value) in (positive[0], positive[-1])


# --------------------------------------------------------------------------------------------- plots
def _band(ax, df, x: str, y: str, label: str, color: str, scale: float = 1.0, style: str = "-", marker: str = "o"):
    g = df.groupby(x)[y]
    m, s = g.mean() * scale, g.std().fillna(0.0) * scale
    xs = m.index.to_numpy()
    ax.plot(xs, m.to_numpy(), style, marker=marker, markersize=3, color=color, label=label)
    ax.fill_between(xs, (m - s).to_numpy(), (m + s).to_numpy(), color=color, alpha=0.15, linewidth=0)


def plot_training_curves(hist: Any, eps_values: Sequence[float], *, mark_epoch: int | None = None,
                         first_epoch: int = 1):
    """Validation NLL, ECE, confidence and accuracy against the epoch, one line per ε (mean ± sd over seeds, a band).

    ``hist``: :func:`history_frame`. Panels: accuracy (validation solid, training dotted), validation NLL,
    validation ECE (%), and the over-confidence ``val_conf - val_acc`` (points; above 0 = over-confident).
    ``mark_epoch`` draws a vertical line (e.g. where CE turns over-confident); epochs before ``first_epoch`` are
    left out (the first epoch's values are often far off the scale of the rest). Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt

    if not hasattr(hist, "columns") or "epoch" not in hist.columns:
        raise TypeError("hist must be the DataFrame of history_frame(runs)")
    eps_values = [float(e) for e in eps_values]
    missing = [e for e in eps_values if e not in set(hist["eps"])]
    if missing or not eps_values:
        raise ValueError(f"eps_values {missing or eps_values} are not in hist (it holds {sorted(set(hist['eps']))})")
    hist = hist[hist["epoch"] >= first_epoch]
    if hist.empty:
        raise ValueError(f"hist has no epoch >= first_epoch={first_epoch}")
    colors = dict(zip(eps_values, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for e in eps_values:
        d = hist[hist["eps"] == e]
        name, c = loss_name(e), colors[e]
        _band(axes[0], d, "epoch", "val_acc", f"{name} validation", c, 100)
        _band(axes[0], d, "epoch", "train_acc", f"{name} training", c, 100, style=":", marker="")
        _band(axes[1], d, "epoch", "val_loss", name, c)
        _band(axes[2], d, "epoch", "val_ece", name, c, 100)
        _band(axes[3], d, "epoch", "overconfidence", name, c, 100)
    axes[3].axhline(0, color="black", lw=1)
    titles = ("accuracy (%)", "validation NLL (nats)", "validation ECE (%)",
              "validation confidence − accuracy (points)")
    for ax, t in zip(axes, titles):
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if mark_epoch is not None:
            ax.axvline(mark_epoch, color="gray", ls="--", lw=1)
    axes[0].set_ylim(max(0, axes[0].get_ylim()[0]), 100.5)
    axes[0].legend(fontsize=7)
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_sweep(results: Any, eps_selected: float, *, num_classes: int = 10):
    """The ε sweep, mean ± sd over seeds: six panels against ε (equally spaced, labelled with the grid values).

    ``results``: one row per run with ``eps``, ``val_ece``, ``ece``, ``ece_ts``, ``nll``, ``nll_ts``, ``mce``,
    ``mce_ts``, ``temperature``, ``acc``, ``conf`` (as from :func:`lsutils.metrics.temperature_scaled_report`).
    The panel of the validation ECE marks ``eps_selected``; the temperature panel draws T = 1 and T = 1.5.
    Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    need = ("eps", "val_ece", "ece", "ece_ts", "nll", "nll_ts", "mce", "mce_ts", "temperature", "acc", "conf")
    missing = [c for c in need if c not in getattr(results, "columns", [])]
    if missing:
        raise ValueError(f"results must be a DataFrame with the columns {list(need)}; missing {missing}")
    grid = sorted(set(float(e) for e in results["eps"]))
    if float(eps_selected) not in grid:
        raise ValueError(f"eps_selected={eps_selected} is not one of the swept values {grid}")
    pos = {e: i for i, e in enumerate(grid)}
    df = results.assign(x=results["eps"].map(lambda e: pos[float(e)]))

    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    ax = axes[0, 0]
    _band(ax, df, "x", "val_ece", "validation ECE", "tab:purple", 100)
    sel = df[df["eps"] == eps_selected]["val_ece"].mean() * 100
    ax.plot([pos[eps_selected]], [sel], "*", ms=16, color="gold", mec="black", label=f"chosen: ε = {eps_selected:g}")
    ax.set_title("validation ECE (%): the choice of ε", fontsize=10)
    for ax, key, title, scale in ((axes[0, 1], "ece", "test ECE (%)", 100), (axes[0, 2], "nll", "test NLL (nats)", 1),
                                  (axes[1, 2], "mce", "test MCE (%), bins of ≥ min. count", 100)):
        _band(ax, df, "x", key, "as trained", "tab:blue", scale)
        _band(ax, df, "x", f"{key}_ts", "+ temperature scaling", "tab:orange", scale, style="--", marker="s")
        ax.set_title(title, fontsize=10)
    ax = axes[1, 0]
    _band(ax, df, "x", "temperature", "fitted T", "tab:green")
    ax.axhline(1.0, color="gray", lw=1, ls=":", label="T = 1")
    ax.axhline(1.5, color="tab:red", lw=1, ls="--", label="T = 1.5 (premise)")
    ax.set_title("temperature fitted on validation NLL", fontsize=10)
    ax = axes[1, 1]
    _band(ax, df, "x", "conf", "mean confidence", "tab:red", 100)
    _band(ax, df, "x", "acc", "accuracy", "tab:blue", 100, style="--", marker="s")
    eps = np.array(grid)
    ax.plot(range(len(grid)), 100 * (1 - eps + eps / num_classes), "k:", label="cap 1 − ε + ε/K")
    ax.set_title("test confidence and accuracy (%)", fontsize=10)
    for ax in axes.flat:
        ax.set_xticks(range(len(grid)))
        ax.set_xticklabels([f"{e:g}" for e in grid])
        ax.set_xlabel("label smoothing ε")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_reliability_row(panels: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *, n_bins: int = 15):
    """Reliability diagrams side by side, with per-bin counts: ``{title: (probs (N, K), labels (N,))}``.

    Each panel is :func:`lsutils.plot_reliability` with ``counts=True``; one legend below. Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt

    from lsutils.metrics import plot_reliability

    if not isinstance(panels, Mapping) or not panels:
        raise TypeError("panels must be a non-empty mapping {title: (probs, labels)}")
    for name, value in panels.items():
        if not (isinstance(value, tuple) and len(value) == 2):
            raise TypeError(f"panels[{name!r}] must be a pair (probs, labels), got {type(value).__name__}")
        check_tensor(f"panels[{name!r}] probs", value[0], floating=True)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels), 4.3), squeeze=False)
    for ax, (name, (probs, labels)) in zip(axes[0], panels.items()):
        plot_reliability(probs, labels, n_bins=n_bins, ax=ax, title=name, legend=False, counts=True)
        ax.title.set_fontsize(10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_claims(comparisons: Mapping[str, Any], *, unit: str = "points of ECE"):
    """A forest plot of paired comparisons: one row per claim, the mean difference and its 95 % confidence interval.

    ``comparisons``: ``{row label: PairedComparison}`` (from :func:`lsutils.paired_comparison`); the p-value is
    written at the right of each row. Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt

    if not isinstance(comparisons, Mapping) or not comparisons:
        raise TypeError("comparisons must be a non-empty mapping {label: PairedComparison}")
    for name, c in comparisons.items():
        if not all(hasattr(c, a) for a in ("mean", "ci_low", "ci_high", "p")):
            raise TypeError(f"comparisons[{name!r}] must be a PairedComparison, got {type(c).__name__}")
    names = list(comparisons)
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(names) + 1.2))
    for i, name in enumerate(names):
        c = comparisons[name]
        y = len(names) - 1 - i
        lo, hi = c.ci_low, c.ci_high
        color = "tab:blue" if c.p < 0.05 else "tab:gray"
        ax.plot([lo, hi], [y, y], color=color, lw=2)
        ax.plot([c.mean], [y], "o", color=color, ms=7)
        for d in getattr(c, "diffs", ()):
            ax.plot([d], [y + 0.18], "|", color="black", ms=6)
        ax.annotate(p_text(c.p), xy=(1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=9)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names[::-1], fontsize=9)
    ax.set_xlabel(f"difference ({unit}): mean and 95 % CI (blue: p < 0.05); ticks: the seeds")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
