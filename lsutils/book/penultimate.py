"""Chapter 3: what label smoothing does to the penultimate layer (Müller, Kornblith & Hinton 2019, Figure 1).

The chapter's settings, measurements and figures; the geometry itself (template planes, projections, tightness,
equidistance, logit gaps) lives in :mod:`lsutils.geometry`.

The paper writes the logit of class ``k`` as a (negative) squared distance to a *template* ``w_k``, the ``k``-th
row of the final layer's weight::

    z_k = x·w_k + b_k = -½‖x - w_k‖² + c_k + ½‖x‖²,   c_k = b_k + ½‖w_k‖²

``½‖x‖²`` is the same for every class and cancels in the softmax, so only *differences* of distances (plus the
per-class constants ``c_k``) decide the prediction. Figure 1 projects penultimate activations on the plane through
three templates; this module draws that figure for several class triples (:func:`plot_figure1`), measures it
(:func:`geometry_measures`, :func:`plot_geometry`), and measures what label smoothing does to the *similarity*
between classes that the logits carry (:func:`similarity_signal`, :func:`nontarget_share_matrix`,
:func:`distance_from_uniform`, :func:`plot_similarity`, :func:`plot_share_matrices`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from lsutils._validate import check_tensor
from lsutils.book.common import comparison_text, md, p_text, verdict
from lsutils.geometry import (_resolve_classes, classifier_templates, cluster_tightness, equidistance,
                              project_classes, project_to_plane, template_plane_basis, template_subspace_basis)

__all__ = ["FIGURE1_TRIPLES", "SIMILAR_CLASSES", "MULLER2019_TABLE2", "md", "figure1_triples", "similar_classes",
           "loss_label", "verdict", "p_text", "comparison_text", "geometry_measures", "similarity_signal", "nontarget_share_matrix",
           "distance_from_uniform", "plot_figure1", "plot_geometry", "plot_logit_gap_histogram",
           "plot_similarity", "plot_share_matrices"]

#: The class triples of Figure 1, per dataset: three triples of mutually *dissimilar* classes (as in the paper's
#: CIFAR-10, CIFAR-100 and ImageNet rows) and one triple of two *similar* classes plus a dissimilar third (the
#: paper's toy poodle / miniature poodle / tench). CIFAR-10's first triple is the paper's own.
FIGURE1_TRIPLES: dict[str, dict[str, tuple[str, str, str]]] = {
    "fashion_mnist": {"dissimilar 1": ("Trouser", "Bag", "Ankle boot"),
                      "dissimilar 2": ("Pullover", "Trouser", "Sneaker"),
                      "dissimilar 3": ("Dress", "Sandal", "Bag"),
                      "similar": ("T-shirt/top", "Shirt", "Sneaker")},
    "cifar10": {"dissimilar 1": ("airplane", "automobile", "bird"),
                "dissimilar 2": ("deer", "ship", "truck"),
                "dissimilar 3": ("frog", "horse", "airplane"),
                "similar": ("cat", "dog", "ship")},
}

#: "An image of a cat that looks like a dog": per dataset, the class of the images, the class they resemble, and
#: classes they do not resemble.
SIMILAR_CLASSES: dict[str, dict[str, Any]] = {
    "fashion_mnist": {"image": "Shirt", "similar": "T-shirt/top",
                      "dissimilar": ("Trouser", "Sandal", "Sneaker", "Bag", "Ankle boot")},
    "cifar10": {"image": "cat", "similar": "dog", "dissimilar": ("airplane", "automobile", "ship", "truck")},
}

#: Müller, Kornblith & Hinton (2019), Table 2: test accuracy (%) without / with label smoothing, as published.
MULLER2019_TABLE2: tuple[dict[str, str], ...] = (
    {"data set": "CIFAR-10", "architecture": "AlexNet", "CE": "86.8 ± 0.2", "LS": "86.7 ± 0.3"},
    {"data set": "CIFAR-100", "architecture": "ResNet-56", "CE": "72.1 ± 0.3", "LS": "72.7 ± 0.3"},
    {"data set": "ImageNet", "architecture": "Inception-v4", "CE": "80.9", "LS": "80.9"},
)


def _dataset_entry(table: Mapping[str, Any], dataset: Any) -> Any:
    if not isinstance(dataset, str) or dataset not in table:
        raise ValueError(f"dataset must be one of {sorted(table)}, got {dataset!r}")
    return table[dataset]


def figure1_triples(dataset: str) -> dict[str, tuple[str, str, str]]:
    """The Figure-1 class triples of ``dataset`` (name → three class names), in drawing order.

    >>> list(figure1_triples("cifar10"))[0], figure1_triples("cifar10")["dissimilar 1"]
    ('dissimilar 1', ('airplane', 'automobile', 'bird'))
    """
    return dict(_dataset_entry(FIGURE1_TRIPLES, dataset))


def similar_classes(dataset: str) -> dict[str, Any]:
    """``{"image", "similar", "dissimilar"}``: the class names of the "cat that looks like a dog" measurement.

    >>> similar_classes("fashion_mnist")["similar"]
    'T-shirt/top'
    """
    return dict(_dataset_entry(SIMILAR_CLASSES, dataset))


def loss_label(spec: Any) -> str:
    """``"CE"`` or ``"LS ε=0.1"`` for a :class:`~lsutils.train.RunSpec` (or its ``loss_spec()`` dict) of CE / LS.

    >>> loss_label({"name": "ls", "epsilon": 0.1}), loss_label({"name": "ce"})
    ('LS ε=0.1', 'CE')
    """
    loss = spec.loss_spec() if hasattr(spec, "loss_spec") else spec
    if not isinstance(loss, Mapping) or loss.get("name") not in ("ce", "ls"):
        raise ValueError(f"spec must describe a 'ce' or 'ls' loss, got {loss!r}")
    return "CE" if loss["name"] == "ce" else f"LS ε={loss['epsilon']:g}"


# --------------------------------------------------------------------------------------------- measurements
def geometry_measures(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      triples: Mapping[str, Sequence[int]]) -> list[dict[str, Any]]:
    """Tightness and equidistance of one model's penultimate activations on one split, one row per scope.

    Scopes: every entry ``name → (a, b, c)`` of ``triples`` (those three classes, every example of them in ``x``,
    projected on the plane of their templates, as in Figure 1), and ``"all classes"`` (every example, projected
    on the span of all ``K`` templates: the part of the penultimate space that the logit differences depend on).
    Rows: ``{"scope", "tightness", "equidistance", "pair_ratio"}`` (plain floats; see
    :func:`lsutils.geometry.cluster_tightness` and :func:`lsutils.geometry.equidistance`: both scale-free, smaller =
    tighter / more equidistant). ``pair_ratio`` (triples only, NaN for ``"all classes"``): the distance between the
    centroids of ``a`` and ``b`` divided by the mean of their distances to the centroid of ``c`` — below 1 when the
    first two classes sit closer to each other than to the third, as two similar classes do.
    """
    from lsutils.models import penultimate

    check_tensor("y", y, floating=False)
    if not isinstance(triples, Mapping) or not triples:
        raise TypeError(f"triples must be a non-empty mapping {{name: (a, b, c)}}, got {triples!r}")
    W, _ = classifier_templates(model)
    resolved = {name: _resolve_classes(cls, count=3, num_classes=W.shape[0]) for name, cls in triples.items()}
    feats = penultimate(model, x)
    if feats.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of examples, got {feats.shape[0]} and {y.shape[0]}")
    rows = []
    for name, (a, b, c) in resolved.items():
        mask = (y == a) | (y == b) | (y == c)
        plane = project_to_plane(feats[mask], template_plane_basis(W[a], W[b], W[c]), origin=W[a])
        mu = [plane[y[mask] == k].double().mean(0) for k in (a, b, c)]
        ratio = float((mu[0] - mu[1]).norm() / (0.5 * ((mu[0] - mu[2]).norm() + (mu[1] - mu[2]).norm())))
        rows.append({"scope": name, "tightness": cluster_tightness(plane, y[mask]),
                     "equidistance": equidistance(plane, y[mask]), "pair_ratio": ratio})
    span = (feats - W[0]) @ template_subspace_basis(W)
    rows.append({"scope": "all classes", "tightness": cluster_tightness(span, y), "equidistance": equidistance(span, y),
                 "pair_ratio": float("nan")})
    return rows


def _check_logits_labels(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("logits", logits, floating=True)
    if logits.dim() != 2 or logits.shape[1] < 3:
        raise ValueError(f"logits must have shape (N, K) with K >= 3, got {tuple(logits.shape)}")
    check_tensor("labels", labels, floating=False)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape (N,) = ({logits.shape[0]},), got {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return logits.detach().cpu().double(), labels.detach().cpu().long()


def similarity_signal(logits: torch.Tensor, labels: torch.Tensor, image_class: int, similar: int,
                      dissimilar: Sequence[int]) -> dict[str, float]:
    """What a model says about images of ``image_class`` that resemble class ``similar`` and not ``dissimilar``.

    Over the examples of ``image_class`` (rows of ``logits`` ``(N, K)`` whose label is ``image_class``):

    * ``p_similar``: mean probability of ``similar``; ``p_dissimilar``: mean probability of a class in
      ``dissimilar`` (averaged over those classes);
    * ``share_similar``: mean share of the non-target probability that goes to ``similar``,
      ``p_s / Σ_{k≠y} p_k`` (``1/(K-1)`` under the uniformly smoothed target);
    * ``log_ratio``: mean of ``z_s - mean_{d∈dissimilar} z_d`` (nats): how much more likely the model finds the
      similar class than a dissimilar one, the relative information that distillation uses (0 under the
      smoothed target, which puts ``ε/K`` on every wrong class);
    * ``n``: the number of examples.

    >>> z = torch.tensor([[5., 2., 0., 0.], [1., 0., 0., 0.]])
    >>> r = similarity_signal(z, torch.tensor([0, 1]), image_class=0, similar=1, dissimilar=[2, 3])
    >>> round(r["log_ratio"], 3), r["n"]
    (2.0, 1)
    """
    z, y = _check_logits_labels(logits, labels)
    k = z.shape[1]
    cls = _resolve_classes([image_class, similar, *dissimilar], num_classes=k)
    image_class, similar, dis = cls[0], cls[1], cls[2:]
    if not dis:
        raise ValueError("dissimilar must name at least one class")
    mask = y == image_class
    if not bool(mask.any()):
        raise ValueError(f"labels hold no example of image_class={image_class}")
    zc = z[mask]
    p = zc.softmax(1)
    other = 1.0 - p[:, image_class]
    return {"p_similar": float(p[:, similar].mean()), "p_dissimilar": float(p[:, dis].mean()),
            "share_similar": float((p[:, similar] / other.clamp_min(1e-300)).mean()),
            "log_ratio": float((zc[:, similar] - zc[:, dis].mean(1)).mean()), "n": int(mask.sum())}


def nontarget_share_matrix(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(K, K)`` matrix: row ``c`` = how the examples of class ``c`` share their non-target probability.

    Entry ``(c, k)``, ``k ≠ c``: the mean over examples of class ``c`` of ``p_k / Σ_{j≠c} p_j``; each row sums to 1;
    the diagonal is NaN. The uniformly smoothed target gives ``1/(K-1)`` everywhere; structure in the matrix
    (tops resembling tops, shoes resembling shoes) is the similarity information that Müller et al. found label
    smoothing to erase. Rows of classes without examples are NaN. Float64.

    >>> m = nontarget_share_matrix(torch.tensor([[3., 1., 0.], [0., 3., 0.]]), torch.tensor([0, 1]))
    >>> [round(v, 3) for v in m[0, 1:].tolist()], round(float(m[1, 0]), 3)
    ([0.731, 0.269], 0.5)
    """
    z, y = _check_logits_labels(logits, labels)
    k = z.shape[1]
    p = z.softmax(1)
    out = torch.full((k, k), float("nan"), dtype=torch.float64)
    for c in range(k):
        rows = p[y == c]
        if rows.shape[0] == 0:
            continue
        rest = rows.clone()
        rest[:, c] = 0.0
        share = (rest / rest.sum(1, keepdim=True).clamp_min(1e-300)).mean(0)
        share[c] = float("nan")
        out[c] = share
    return out


def distance_from_uniform(matrix: torch.Tensor) -> float:
    """Mean total-variation distance of the rows of :func:`nontarget_share_matrix` from the uniform ``1/(K-1)``.

    ``½ Σ_{k≠c} |M_ck - 1/(K-1)|``, averaged over the rows that are not NaN: 0 when every class spreads its
    non-target probability evenly (the smoothed target; similarity erased), up to ``1 - 1/(K-1)`` when it all
    goes to one other class.

    >>> nan = float("nan")
    >>> distance_from_uniform(torch.tensor([[nan, 0.5, 0.5], [1.0, nan, 0.0], [nan, nan, nan]]))
    0.25
    """
    check_tensor("matrix", matrix, floating=True)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 3:
        raise ValueError(f"matrix must be square (K, K) with K >= 3, got {tuple(matrix.shape)}")
    m = matrix.detach().cpu().double()
    k = m.shape[0]
    off = ~torch.eye(k, dtype=torch.bool)
    rows = m[off].view(k, k - 1)
    keep = ~torch.isnan(rows).any(1)
    if not bool(keep.any()):
        raise ValueError("matrix has no row without NaN off the diagonal")
    return float((0.5 * (rows[keep] - 1.0 / (k - 1)).abs().sum(1)).mean())


# --------------------------------------------------------------------------------------------- plots
def _split_xy(split: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(split, "x") and hasattr(split, "y"):
        return split.x, split.y
    if isinstance(split, (tuple, list)) and len(split) == 2:
        return split[0], split[1]
    raise TypeError(f"splits[{name!r}] must be a Split (with .x and .y) or a pair (x, y), got {type(split).__name__}")


_COLORS = ("tab:blue", "tab:orange", "tab:green")


def plot_figure1(models: Mapping[str, nn.Module], splits: Mapping[str, Any],
                 triples: Mapping[str, Sequence[Any]], class_names: Sequence[str], *, n_per_class: int = 100,
                 seed: int = 0):
    """Figure 1 redrawn: one row per class triple; columns = every model × every split (e.g. CE train, CE val, …).

    Each panel scatters ``n_per_class`` examples of each of the three classes (the same examples for every model),
    projected with :func:`lsutils.geometry.project_classes` on the plane through that model's own templates (origin
    ``w_a``, first axis towards ``w_b``); the templates are the black-edged stars. The panels of one model and one
    triple share their limits (train and validation compare directly); equal aspect, so distances read true.
    Returns the matplotlib ``Figure``.

    Args:
        models: ``{"CE": model, "LS ε=0.1": model}``; splits: ``{"train": data.train, "validation": data.val}``
            (``Split`` or ``(x, y)``); triples: ``{row title: three class names or indices}``;
        class_names: the dataset's class names.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    for name, value in (("models", models), ("splits", splits), ("triples", triples)):
        if not isinstance(value, Mapping) or not value:
            raise TypeError(f"{name} must be a non-empty mapping, got {type(value).__name__}")
    xy = {s: _split_xy(v, s) for s, v in splits.items()}
    resolved = {t: _resolve_classes(list(c), class_names, count=3) for t, c in triples.items()}
    nr, nc = len(triples), len(models) * len(splits)
    fig, axes = plt.subplots(nr, nc, figsize=(2.75 * nc + 1.6, 2.75 * nr), squeeze=False)
    for i, (tname, idx) in enumerate(resolved.items()):
        for j, (mname, model) in enumerate(models.items()):
            cols, pts = [], []
            for s, (sname, (x, y)) in enumerate(xy.items()):
                ax = axes[i, j * len(splits) + s]
                res = project_classes(model, x, y, idx, n_per_class=n_per_class, seed=seed)
                for k, cls in enumerate(idx):
                    q = res["coords"][res["labels"] == cls]
                    ax.scatter(q[:, 0], q[:, 1], s=5, alpha=0.55, color=_COLORS[k], linewidths=0)
                t = res["templates"]
                ax.scatter(t[:, 0], t[:, 1], marker="*", s=110, c=list(_COLORS), edgecolors="black",
                           linewidths=0.8, zorder=3)
                ax.set_title(f"{mname}, {sname}", fontsize=9)
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
                cols.append(ax)
                pts.append(torch.cat([res["coords"], t]))
            allp = torch.cat(pts)
            lo, hi = allp.min(0).values, allp.max(0).values
            centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * 1.06 + 1e-9
            for ax in cols:
                ax.set_xlim(float(centre[0]) - half, float(centre[0]) + half)
                ax.set_ylim(float(centre[1]) - half, float(centre[1]) + half)
                ax.set_aspect("equal", adjustable="box")
        handles = [Line2D([], [], ls="", marker="o", markersize=5, color=_COLORS[k], label=class_names[c])
                   for k, c in enumerate(idx)]
        handles.append(Line2D([], [], ls="", marker="*", markersize=9, markerfacecolor="white",
                              markeredgecolor="black", label="templates"))
        axes[i, -1].legend(handles=handles, title=tname, loc="center left", bbox_to_anchor=(1.03, 0.5),
                           fontsize=8, title_fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_geometry(rows: Any, *, measures: Sequence[str] = ("tightness", "equidistance"), hue: str = "loss",
                  split: str = "split", scope: str = "scope"):
    """Point plots of the geometry measures over seeds: one row per measure, one column per split.

    ``rows``: a DataFrame (or list of dicts) with columns ``scope``, ``split``, ``loss`` and the ``measures``,
    one row per (run, split, scope), as the chapter builds from :func:`geometry_measures`. Points are means over
    seeds, bars ± one standard deviation. Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    missing = [c for c in (hue, split, scope, *measures) if c not in df.columns]
    if missing:
        raise ValueError(f"rows lack the columns {missing}; columns present: {sorted(df.columns)}")
    splits = list(dict.fromkeys(df[split]))
    fig, axes = plt.subplots(len(measures), len(splits), figsize=(5.6 * len(splits), 3.3 * len(measures)),
                             squeeze=False, sharey="row")
    for i, m in enumerate(measures):
        for j, s in enumerate(splits):
            ax = axes[i, j]
            sns.pointplot(data=df[df[split] == s], x=scope, y=m, hue=hue, errorbar="sd", dodge=0.3,
                          linestyles="none", capsize=0.15, markersize=5, ax=ax)
            ax.set_title(f"{m} ({s})", fontsize=10)
            ax.set_xlabel("")
            ax.set_ylabel(f"{m} (smaller = {'tighter' if m == 'tightness' else 'more equal'})", fontsize=9)
            ax.tick_params(axis="x", labelsize=8, rotation=15)
            ax.grid(alpha=0.3, axis="y")
            if (i, j) != (0, 0):
                ax.get_legend().remove()
            else:
                ax.legend(fontsize=8, title=None)
    for ax in axes.flat:  # after every panel is drawn: the shared y range covers them all
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig


def plot_logit_gap_histogram(gaps: Mapping[str, torch.Tensor], *, optimum: float | None = None, ax=None,
                             title: str | None = None, bins: int = 60):
    """Overlaid histograms (densities) of logit gaps, one per entry of ``gaps`` (label → tensor of gaps).

    ``optimum`` draws a vertical line at the gap of label smoothing's optimum
    (:func:`lsutils.optimal_logit_gap` ``(K, ε)``). Returns the matplotlib ``Axes``.
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
        ax.axvline(optimum, color="black", ls="--", lw=1.5, label=f"LS optimum {optimum:.2f}")
    ax.set_xlabel("logit gap $z_y - z_k$ (true class minus each other class)")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_similarity(probs: Mapping[str, torch.Tensor], class_names: Sequence[str], *, image_class: str,
                    similar: str, ax=None, title: str | None = None):
    """Grouped bars (log scale) of mean class probabilities for images of ``image_class``, one group per class.

    ``probs``: label → ``(K,)`` probability vector (a target, or a model's mean softmax over the images). The
    bars of ``image_class`` and ``similar`` are labelled in bold. Returns the ``Axes``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if not isinstance(probs, Mapping) or not probs:
        raise TypeError("probs must be a non-empty mapping {label: (K,) probability vector}")
    k = len(class_names)
    vals = {}
    for name, v in probs.items():
        check_tensor(f"probs[{name!r}]", v, floating=True)
        if v.shape != (k,):
            raise ValueError(f"probs[{name!r}] must have shape ({k},) to match class_names, got {tuple(v.shape)}")
        vals[name] = v.detach().cpu().double().clamp_min(1e-6).numpy()
    for c in (image_class, similar):
        if c not in class_names:
            raise ValueError(f"class {c!r} is not one of {list(class_names)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / len(vals)
    pos = np.arange(k)
    for i, (name, v) in enumerate(vals.items()):
        ax.bar(pos + (i - (len(vals) - 1) / 2) * width, v, width=width, label=name)
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1.5)
    ax.set_xticks(pos)
    ax.set_xticklabels(class_names, rotation=30, ha="right", fontsize=8)
    for lab in ax.get_xticklabels():
        if lab.get_text() in (image_class, similar):
            lab.set_fontweight("bold")
    ax.set_ylabel("probability (log scale)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    return ax


def plot_share_matrices(matrices: Mapping[str, torch.Tensor], class_names: Sequence[str], *, ncols: int = 2):
    """Heatmaps of :func:`nontarget_share_matrix` (in %), one panel per entry; the title gives
    :func:`distance_from_uniform`. A shared colour scale; ``1/(K-1)`` is the uniform share. Returns the ``Figure``."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not isinstance(matrices, Mapping) or not matrices:
        raise TypeError("matrices must be a non-empty mapping {title: (K, K) share matrix}")
    k = len(class_names)
    for name, m in matrices.items():
        check_tensor(f"matrices[{name!r}]", m, floating=True)
        if m.shape != (k, k):
            raise ValueError(f"matrices[{name!r}] must have shape ({k}, {k}), got {tuple(m.shape)}")
    n = len(matrices)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.7 * nrows), squeeze=False)
    vmax = max(float(torch.nan_to_num(m, nan=0.0).max()) for m in matrices.values()) * 100
    short = [c.split("/")[0] for c in class_names]
    for ax, (name, m) in zip(axes.flat, matrices.items()):
        sns.heatmap((100 * m.double()).numpy(), ax=ax, vmin=0, vmax=vmax, cmap="viridis", annot=True, fmt=".0f",
                    annot_kws={"fontsize": 6}, cbar=False, xticklabels=short, yticklabels=short, square=True)
        ax.set_title(f"{name}\ndistance from uniform {distance_from_uniform(m):.2f}", fontsize=9)
        ax.set_xlabel("class receiving the non-target probability", fontsize=8)
        ax.set_ylabel("true class", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
