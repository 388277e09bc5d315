"""The penultimate layer under label smoothing: Müller, Kornblith & Hinton (2019), Figure 1, and its measurements.

The paper writes the logit of class ``k`` as a (negative) squared distance to a *template* ``w_k``,
the ``k``-th row of the final layer's weight::

    z_k = x·w_k + b_k = -½‖x - w_k‖² + c_k + ½‖x‖²,   c_k = b_k + ½‖w_k‖²       (1)

``½‖x‖²`` is the same for every class and cancels in the softmax, so when the offsets ``c_k`` are
equal the classifier is exactly "the nearest template wins". Our models have a free bias and
unnormalised templates, so ``c_k`` differ: the distance picture is an approximation whose error is
the spread of ``c_k`` (:func:`template_offsets` measures it).

To draw the picture, pick three classes ``a, b, c``; their templates span an affine plane with the
orthonormal basis (:func:`template_plane_basis`)::

    u1 = (w_b - w_a) / ‖w_b - w_a‖,   u2 = r / ‖r‖,  r = (w_c - w_a) - ((w_c - w_a)·u1) u1,

and every activation is projected onto it, ``((x - w_a)·u1, (x - w_a)·u2)`` (:func:`project_to_plane`).
The differences of the three logits, ``z_b - z_a = (w_b - w_a)·x + b_b - b_a`` and ``z_c - z_a``, depend
on ``x`` only through this projection, so the plane shows everything that decides between the three
classes (up to the constant biases).

What the picture claims is measured with scale-free numbers (:func:`cluster_tightness`,
:func:`equidistance`, :func:`logit_gaps`), in the plane and in the full penultimate space.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from lsutils._validate import check_tensor

from lsutils.geometry import (_resolve_classes, classifier_templates, cluster_tightness, equidistance, logit_gaps, project_classes,
                              project_to_plane, template_offsets, template_plane_basis, template_subspace_basis)

__all__ = ['FIGURE1_TRIPLES', 'class_triple', 'geometry_measures', 'loss_label', 'measure_runs', 'compare_losses', 'MULLER2019_TABLE2', 'plot_template_projections', 'plot_logit_gap_histogram']

#: The class triples of the Figure-1 grid, per dataset name: three mutually *dissimilar* classes, and two
#: *similar* classes plus a third dissimilar one (the paper's toy poodle / miniature poodle / tench).
#: CIFAR-10's dissimilar triple is the paper's own (airplane, automobile, bird).
FIGURE1_TRIPLES: dict[str, dict[str, tuple[str, str, str]]] = {
    "fashion_mnist": {"dissimilar": ("Trouser", "Bag", "Ankle boot"),
                      "similar": ("T-shirt/top", "Shirt", "Sneaker")},
    "cifar10": {"dissimilar": ("airplane", "automobile", "bird"),
                "similar": ("cat", "dog", "ship")},
}


def class_triple(dataset: str, kind: str) -> tuple[str, str, str]:
    """The class names of :data:`FIGURE1_TRIPLES` for ``dataset`` and ``kind`` (``"dissimilar"`` or ``"similar"``).

    >>> class_triple("fashion_mnist", "similar")
    ('T-shirt/top', 'Shirt', 'Sneaker')
    """
    if not isinstance(dataset, str) or dataset not in FIGURE1_TRIPLES:
        raise ValueError(f"dataset must be one of {sorted(FIGURE1_TRIPLES)}, got {dataset!r}")
    if not isinstance(kind, str) or kind not in FIGURE1_TRIPLES[dataset]:
        raise ValueError(f"kind must be one of {sorted(FIGURE1_TRIPLES[dataset])}, got {kind!r}")
    return FIGURE1_TRIPLES[dataset][kind]


# --------------------------------------------------------------------------------------------- checks


# --------------------------------------------------------------------------------------------- the plane


# --------------------------------------------------------------------------------------------- examples


# --------------------------------------------------------------------------------------------- measurements


def geometry_measures(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      triples: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Every number of the chapter's tables for one model on one split ``x`` ``(N, ...)``, ``y`` ``(N,)``.

    Keys (plain Python floats):

    * ``acc``; ``feature_norm``: mean ``‖x‖`` of the penultimate activations;
    * ``tightness_<name>`` / ``equidistance_<name>`` for every entry ``name → (a, b, c)`` of ``triples``:
      those three classes, all their examples in ``x``, projected on their templates' plane (Figure 1);
    * ``tightness_span`` / ``equidistance_span``: all classes, projected on the span of all templates
      (:func:`template_subspace_basis`); ``tightness_full`` / ``equidistance_full``: all classes in the
      full penultimate space;
    * ``gap_max_median``: median of ``z_y - max_{k≠y} z_k``; ``gap_each_median``: median of ``z_y - z_k``
      over all examples and ``k ≠ y``;
    * ``offset_range``: ``max c - min c`` of :func:`template_offsets`, the error of the distance picture
      (logit units).
    """
    from lsutils.models import penultimate

    check_tensor("y", y, floating=False)
    if not isinstance(triples, Mapping):
        raise TypeError(f"triples must be a mapping {{name: (a, b, c)}}, got {type(triples).__name__}")
    W, bias = classifier_templates(model)
    resolved = {name: _resolve_classes(cls, count=3, num_classes=W.shape[0]) for name, cls in triples.items()}
    feats = penultimate(model, x)
    if feats.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of examples, got {feats.shape[0]} and {y.shape[0]}")
    logits = feats @ W.T + bias
    out = {"acc": float((logits.argmax(1) == y).float().mean()), "feature_norm": float(feats.norm(dim=1).mean())}
    for name, (a, b, c) in resolved.items():
        mask = (y == a) | (y == b) | (y == c)
        plane = project_to_plane(feats[mask], template_plane_basis(W[a], W[b], W[c]), origin=W[a])
        out[f"tightness_{name}"] = cluster_tightness(plane, y[mask])
        out[f"equidistance_{name}"] = equidistance(plane, y[mask])
    span = (feats - W[0]) @ template_subspace_basis(W)
    out["tightness_span"] = cluster_tightness(span, y)
    out["equidistance_span"] = equidistance(span, y)
    out["tightness_full"] = cluster_tightness(feats, y)
    out["equidistance_full"] = equidistance(feats, y)
    out["gap_max_median"] = float(logit_gaps(logits, y, "max").median())
    out["gap_each_median"] = float(logit_gaps(logits, y, "each").median())
    offsets = template_offsets(model)
    out["offset_range"] = float(offsets.max() - offsets.min())
    return out


def loss_label(spec: Any) -> str:
    """``"CE"`` or ``"LS ε=0.1"`` for a :class:`~lsutils.train.RunSpec` (or its ``loss_spec()`` dict) of CE / LS.

    >>> loss_label({"name": "ls", "epsilon": 0.1}), loss_label({"name": "ce"})
    ('LS ε=0.1', 'CE')
    """
    loss = spec.loss_spec() if hasattr(spec, "loss_spec") else spec
    if not isinstance(loss, Mapping) or loss.get("name") not in ("ce", "ls"):
        raise ValueError(f"spec must describe a 'ce' or 'ls' loss, got {loss!r}")
    return "CE" if loss["name"] == "ce" else f"LS ε={loss['epsilon']:g}"


def measure_runs(runs: Sequence[Any], splits: Mapping[str, Any],
                 triples: Mapping[str, Sequence[int]]) -> list[dict[str, Any]]:
    """:func:`geometry_measures` for every trained run and split: one row per (run, split), ready for ``summarize``.

    ``runs``: :class:`~lsutils.train.TrainedRun` objects of CE / LS specs; ``splits``: ``{"train": data.train,
    "validation": data.val}`` (``Split`` or ``(x, y)``). Each row has ``loss`` (:func:`loss_label`), ``seed``,
    ``split`` and the measures.
    """
    if not isinstance(splits, Mapping) or not splits:
        raise TypeError("splits must be a non-empty mapping {name: Split or (x, y)}")
    rows = []
    for i, run in enumerate(runs):
        if not (hasattr(run, "model") and hasattr(run, "spec")):
            raise TypeError(f"runs[{i}] must be a TrainedRun (from train_model / train_many), got {type(run).__name__}")
        for name, split in splits.items():
            x, y = _split_xy(split, name)
            rows.append({"loss": loss_label(run.spec), "seed": run.spec.seed, "split": name,
                         **geometry_measures(run.model, x, y, triples)})
    return rows


def compare_losses(rows: Sequence[Mapping[str, Any]], metric: str, *, split: str, expect: str = "lower",
                   digits: int = 3, scale: float = 1.0) -> dict[str, Any]:
    """Does LS move ``metric`` the way a claim says? CE vs LS on one split, seed by seed.

    ``rows``: from :func:`measure_runs` (keys ``loss``, ``seed``, ``split``, ``metric``), with exactly one CE and
    one LS label on ``split``. ``expect``: ``"lower"`` (the claim is LS < CE) or ``"higher"``.

    Returns ``{"CE": "mean ± std", "LS": "mean ± std", "ce_mean", "ls_mean", "agree": "k/n", "holds"}``:
    ``agree`` counts the seeds where LS beats CE of the *same* seed in the expected direction, ``holds`` is
    True when every seed agrees.

    >>> rows = [{"loss": l, "seed": s, "split": "val", "t": v}
    ...         for l, s, v in [("CE", 0, 1.0), ("CE", 1, 1.2), ("LS ε=0.1", 0, 0.5), ("LS ε=0.1", 1, 1.3)]]
    >>> compare_losses(rows, "t", split="val")["agree"]
    '1/2'
    """
    from lsutils.stats import fmt_mean_std, mean_std

    if expect not in ("lower", "higher"):
        raise ValueError(f"expect must be 'lower' or 'higher', got {expect!r}")
    sel = [r for r in rows if r.get("split") == split]
    if not sel:
        raise ValueError(f"no rows for split {split!r}; splits present: {sorted({r.get('split') for r in rows})}")
    if any(metric not in r for r in sel):
        raise ValueError(f"rows lack the metric {metric!r}; keys present: {sorted(sel[0])}")
    labels = sorted({r["loss"] for r in sel})
    ls_labels = [lab for lab in labels if lab != "CE"]
    if "CE" not in labels or len(ls_labels) != 1:
        raise ValueError(f"rows of split {split!r} must hold exactly 'CE' and one LS label, got {labels}")
    ce = {r["seed"]: float(r[metric]) for r in sel if r["loss"] == "CE"}
    lsv = {r["seed"]: float(r[metric]) for r in sel if r["loss"] == ls_labels[0]}
    seeds = sorted(set(ce) & set(lsv))
    if not seeds:
        raise ValueError("CE and LS rows share no seed; cannot compare seed by seed")
    better = [(lsv[s] < ce[s]) if expect == "lower" else (lsv[s] > ce[s]) for s in seeds]
    return {"CE": fmt_mean_std([ce[s] for s in seeds], digits=digits, scale=scale),
            "LS": fmt_mean_std([lsv[s] for s in seeds], digits=digits, scale=scale),
            "ce_mean": mean_std([ce[s] for s in seeds])[0], "ls_mean": mean_std([lsv[s] for s in seeds])[0],
            "agree": f"{sum(better)}/{len(seeds)}", "holds": all(better)}


#: Müller, Kornblith & Hinton (2019), Table 2: test accuracy (%) without / with label smoothing, as published.
MULLER2019_TABLE2: tuple[dict[str, str], ...] = (
    {"data set": "CIFAR-10", "architecture": "AlexNet", "CE": "86.8 ± 0.2", "LS": "86.7 ± 0.3"},
    {"data set": "CIFAR-100", "architecture": "ResNet-56", "CE": "72.1 ± 0.3", "LS": "72.7 ± 0.3"},
    {"data set": "ImageNet", "architecture": "Inception-v4", "CE": "80.9", "LS": "80.9"},
)


# --------------------------------------------------------------------------------------------- plots
def _split_xy(split: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(split, "x") and hasattr(split, "y"):
        return split.x, split.y
    if isinstance(split, (tuple, list)) and len(split) == 2:
        return split[0], split[1]
    raise TypeError(f"splits[{name!r}] must be a Split (with .x and .y) or a pair (x, y), got {type(split).__name__}")


def plot_template_projections(models: Mapping[str, nn.Module], splits: Mapping[str, Any], classes: Sequence[Any],
                              class_names: Sequence[str], *, n_per_class: int = 100, seed: int = 0,
                              title: str | None = None, show_templates: bool = False):
    """The Figure-1 grid for one class triple: rows = ``splits`` (e.g. train, validation), columns = ``models``.

    Each panel scatters ``n_per_class`` examples of each of the three classes (the same examples in every
    column), projected with :func:`project_classes` on the plane through the model's own templates
    (origin ``w_a``, first axis towards ``w_b``). Panels of one column share limits, so train and
    validation are comparable; columns are scaled separately (CE activations are larger). Equal aspect,
    so distances read true. ``show_templates`` also marks the templates (often far away from the points,
    because the logits are dot products, not distances). Returns the matplotlib ``Figure``.

    Args:
        models: ``{"CE": model, "LS ε=0.1": model}`` (column titles → models).
        splits: ``{"train": data.train, "validation": data.val}`` (row names → ``Split`` or ``(x, y)``).
        classes: three class indices or names (names are looked up in ``class_names``).
        class_names: the dataset's class names (legend).
    """
    import matplotlib.pyplot as plt

    if not isinstance(models, Mapping) or not models:
        raise TypeError("models must be a non-empty mapping {column title: model}")
    if not isinstance(splits, Mapping) or not splits:
        raise TypeError("splits must be a non-empty mapping {row name: Split or (x, y)}")
    idx = _resolve_classes(classes, class_names, count=3)
    names = [class_names[i] for i in idx]
    nr, nc = len(splits), len(models)
    fig, axes = plt.subplots(nr, nc, figsize=(3.6 * nc, 3.4 * nr), squeeze=False)
    colors = ("tab:blue", "tab:orange", "tab:green")
    for j, (mname, model) in enumerate(models.items()):
        col = []
        for i, (sname, split) in enumerate(splits.items()):
            x, y = _split_xy(split, sname)
            res = project_classes(model, x, y, idx, n_per_class=n_per_class, seed=seed)
            ax = axes[i, j]
            for k, cls in enumerate(idx):
                pts = res["coords"][res["labels"] == cls]
                ax.scatter(pts[:, 0], pts[:, 1], s=7, alpha=0.6, color=colors[k], label=names[k], linewidths=0)
            if show_templates:
                t = res["templates"]
                ax.scatter(t[:, 0], t[:, 1], marker="*", s=160, c=list(colors), edgecolors="black", zorder=3)
            ax.set_title(f"{mname} — {sname}", fontsize=10)
            ax.set_xlabel("coordinate along $u_1$")
            ax.set_ylabel("coordinate along $u_2$")
            ax.grid(alpha=0.3)
            col.append(torch.cat([res["coords"], res["templates"]]) if show_templates else res["coords"])
        pts = torch.cat(col)
        lo, hi = pts.min(0).values, pts.max(0).values
        centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * 1.08 + 1e-9
        for i in range(nr):
            axes[i, j].set_xlim(float(centre[0]) - half, float(centre[0]) + half)
            axes[i, j].set_ylim(float(centre[1]) - half, float(centre[1]) + half)
            axes[i, j].set_aspect("equal", adjustable="box")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", markersize=6, color=colors[k], label=names[k]) for k in range(3)]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.01))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_logit_gap_histogram(gaps: Mapping[str, torch.Tensor], *, optimum: float | None = None, ax=None,
                    title: str | None = None, bins: int = 60):
    """Overlaid histograms (densities) of logit gaps, one per entry of ``gaps`` (label → 1-D or 2-D tensor).

    ``optimum`` draws a vertical line at the theoretical gap of label smoothing (e.g.
    :func:`lsutils.optimal_logit_gap` ``(K, ε)``). Returns the matplotlib ``Axes``.
    """
    import matplotlib.pyplot as plt

    if not isinstance(gaps, Mapping) or not gaps:
        raise TypeError("gaps must be a non-empty mapping {label: tensor of gaps}")
    values = {}
    for name, g in gaps.items():
        check_tensor(f"gaps[{name!r}]", g, floating=True)
        values[name] = g.detach().float().cpu().flatten()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    allv = torch.cat(list(values.values()))
    lo, hi = float(allv.quantile(0.001)), float(allv.quantile(0.999))
    if optimum is not None and math.isfinite(optimum):
        lo, hi = min(lo, optimum), max(hi, optimum)
    edges = torch.linspace(lo, hi, bins + 1).numpy()
    for name, v in values.items():
        ax.hist(v.numpy(), bins=edges, density=True, alpha=0.55, label=name)
    if optimum is not None and math.isfinite(optimum):
        ax.axvline(optimum, color="black", ls="--", lw=1.5, label=f"LS optimum log(1+K(1-ε)/ε) = {optimum:.2f}")
    ax.set_xlabel("logit gap (true class minus other class)")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax
