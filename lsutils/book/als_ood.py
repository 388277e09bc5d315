"""Adaptive label smoothing (ALS) for out-of-distribution detection (Xu, Lee, Yoon & Park 2024).

Label smoothing fixes the target of the true class at ``1 - ε + ε/K``; Xu et al. argue that this cap shrinks the
maximum probability and the logits, so that max-probability (MSP) and max-logit OOD scores separate in- and
out-of-distribution inputs worse. ALS keeps only the part of LS that spreads the *other* classes evenly:

    L_ALS = H(y, p) + λ · sqrt( 1/(K-1) · Σ_{i≠k} (p_i - p̄)² ),   k = argmax_i p_i,

with ``p = softmax(z)`` and ``p̄`` the mean of the ``K-1`` non-maximal probabilities. The paper writes ``N`` where we
write ``K``; we read ``N`` as the number of classes, so the second term is the (population) standard deviation of the
``K-1`` non-maximal probabilities of each example, averaged over the batch. It is zero exactly when the non-maximal
probabilities are equal, and it does not constrain the maximum: a one-hot ``p`` (``p_max = 1``) makes it zero too.
The paper gives no code and we do not know its λ; :data:`ALS_DEFAULT_LAMBDA` is this book's choice (chapter 6
sweeps λ and explains the choice).

This module holds the loss (:func:`als_loss`, the trainer loss ``{"name": "als", "lam": λ}`` and the diagnostics
:func:`non_max_std` / :func:`als_term_gradient_norm`), the chapter's OOD sets (:func:`noise_images`,
:func:`transformed_images`, :func:`digits_ood_like`, :func:`build_ood_sets`), its evaluation helpers
(:func:`ood_rows`, :func:`sorted_mean_probabilities`) and its figures.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from lsutils._validate import (check_choice, check_int, check_logits_2d, check_tensor)

from lsutils.losses import _check_lam, _non_max_std, als_term_gradient_norm

__all__ = ['ALS_DEFAULT_LAMBDA', 'OOD_SETS', 'noise_images', 'transformed_images', 'digits_ood_like', 'build_ood_sets', 'OOD_SCORES', 'ood_rows', 'ood_table', 'model_outputs', 'evaluate_ood_run', 'mean_metric', 'sorted_mean_probabilities', 'logit_summary', 'MODEL_COLORS', 'plot_score_histograms', 'plot_ood_examples', 'plot_logit_norms', 'plot_sorted_probabilities', 'plot_pull', 'plot_lambda_sweep', 'als_settings', 'select_lambda']

#: λ of :func:`als_loss` when none is given: the λ that :func:`select_lambda` (one-standard-error rule on validation
#: accuracy) picks from the sweep (1, 2, 5, 10, 20) in the ``cpu`` profile (seed 0); chapter 6 re-derives it.
ALS_DEFAULT_LAMBDA = 5.0


# --------------------------------------------------------------------------------------------- OOD sets
#: The OOD sets of chapter 6: name -> (kind, description). "far" sets share nothing with the ID data but the
#: image format; "near" sets are ID test images with their global structure destroyed or turned around.
OOD_SETS: dict[str, tuple[str, str]] = {
    "digits": ("far", "scikit-learn's 8×8 handwritten digits, upsampled to the ID image size"),
    "noise": ("far", "Gaussian pixel noise with the ID data's mean and std per channel, clipped to [0, 1]"),
    "upside-down": ("near", "ID test images flipped vertically"),
    "rotated": ("near", "ID test images rotated by 90°"),
    "patch-shuffled": ("near", "ID test images cut into a 4×4 grid of patches, shuffled"),
    "svhn": ("far", "SVHN test digits (downloaded; CIFAR-10 only)"),
    "cifar100": ("near", "CIFAR-100 test images (downloaded; CIFAR-10 only)"),
}
_TRANSFORMS = ("upside-down", "rotated", "patch-shuffled")
_NOISE_KINDS = ("gaussian", "uniform")


def _check_stats(name: str, values: Any, channels: int) -> tuple[float, ...]:
    vals = (values,) if isinstance(values, (int, float)) and not isinstance(values, bool) else values
    try:
        vals = tuple(float(v) for v in vals)
    except TypeError:
        raise TypeError(f"{name} must be a number or a sequence of {channels} numbers, got {values!r}") from None
    if len(vals) != channels:
        raise ValueError(f"{name} must have one value per channel ({channels}), got {len(vals)}: {values!r}")
    return vals


def _normalise(u: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=u.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=u.dtype).view(1, -1, 1, 1)
    return ((u - m) / s).contiguous()


def noise_images(n: int, shape: Sequence[int], mean: Sequence[float] | float, std: Sequence[float] | float,
                 kind: str = "gaussian", seed: int = 0) -> torch.Tensor:
    """``n`` noise images of ``shape = (C, H, W)``, normalised like the ID data: ``(n, C, H, W)`` float32.

    Pixels are drawn in [0, 1] units: ``kind="gaussian"`` from ``N(mean_c, std_c²)`` per channel (the ID pixels'
    first two moments), clipped to [0, 1]; ``kind="uniform"`` from ``U[0, 1]``. Then ``(u - mean) / std``, exactly
    the normalisation the ID images get. Seeded: the same ``seed`` gives the same images.

    >>> noise_images(3, (1, 28, 28), mean=0.286, std=0.353).shape
    torch.Size([3, 1, 28, 28])
    """
    n = check_int("n", n, minimum=1)
    if isinstance(shape, (str, bytes)) or len(tuple(shape)) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape!r}")
    c, h, w = (check_int(f"shape[{i}]", int(v) if not isinstance(v, bool) else v, minimum=1)
               for i, v in enumerate(shape))
    mean_t, std_t = _check_stats("mean", mean, c), _check_stats("std", std, c)
    if min(std_t) <= 0:
        raise ValueError(f"std must be > 0 per channel, got {std!r}")
    check_choice("kind", kind, _NOISE_KINDS)
    seed = check_int("seed", seed, minimum=0)
    g = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        u = torch.rand(n, c, h, w, generator=g)
    else:
        m = torch.tensor(mean_t).view(1, c, 1, 1)
        s = torch.tensor(std_t).view(1, c, 1, 1)
        u = (torch.randn(n, c, h, w, generator=g) * s + m).clamp_(0.0, 1.0)
    return _normalise(u, mean_t, std_t)


def transformed_images(x: torch.Tensor, kind: str, seed: int = 0, grid: int = 4) -> torch.Tensor:
    """Near-OOD images made from ID images ``x`` ``(N, C, H, W)``; returns a new tensor of the same shape.

    ``kind``: ``"upside-down"`` (vertical flip), ``"rotated"`` (90° counter-clockwise; needs ``H == W``) or
    ``"patch-shuffled"`` (a ``grid × grid`` grid of patches, each image's patches in its own seeded random order;
    needs ``H`` and ``W`` divisible by ``grid``). The pixels' values are untouched, only their places change, so
    every per-image pixel statistic stays in-distribution; only the arrangement does not.

    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> transformed_images(x, "upside-down")[0, 0, 0].tolist()
    [12.0, 13.0, 14.0, 15.0]
    """
    check_tensor("x", x, floating=True)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    check_choice("kind", kind, _TRANSFORMS)
    seed = check_int("seed", seed, minimum=0)
    grid = check_int("grid", grid, minimum=2)
    n, c, h, w = x.shape
    if kind == "upside-down":
        return x.flip(2).contiguous()
    if kind == "rotated":
        if h != w:
            raise ValueError(f"kind='rotated' needs square images, got H={h}, W={w}")
        return x.rot90(1, dims=(2, 3)).contiguous()
    if h % grid or w % grid:
        raise ValueError(f"kind='patch-shuffled' needs H and W divisible by grid={grid}, got H={h}, W={w}")
    ph, pw = h // grid, w // grid
    patches = x.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, ph, pw)
    g = torch.Generator().manual_seed(seed)
    order = torch.argsort(torch.rand(n, grid * grid, generator=g), dim=1)          # one permutation per image
    shuffled = patches.gather(1, order.view(n, -1, 1, 1, 1).expand_as(patches))
    return shuffled.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w).contiguous()


def digits_ood_like(shape: Sequence[int], mean: Sequence[float] | float, std: Sequence[float] | float) -> torch.Tensor:
    """scikit-learn's 1,797 digits as images of ``shape = (C, H, W)`` (``H == W``), normalised like the ID data.

    :func:`lsutils.load_digits_ood` in [0, 1] units at size ``H`` (bilinear), the grey channel repeated ``C`` times
    (so a CIFAR-10 model sees grey digits), then ``(u - mean_c) / std_c``. Returns ``(1797, C, H, W)`` float32.

    >>> digits_ood_like((3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).shape
    torch.Size([1797, 3, 32, 32])
    """
    from lsutils.data import load_digits_ood

    if isinstance(shape, (str, bytes)) or len(tuple(shape)) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape!r}")
    c, h, w = (check_int(f"shape[{i}]", v, minimum=1) for i, v in enumerate(shape))
    if h != w:
        raise ValueError(f"digits are square: shape must have H == W, got {tuple(shape)}")
    mean_t, std_t = _check_stats("mean", mean, c), _check_stats("std", std, c)
    if min(std_t) <= 0:
        raise ValueError(f"std must be > 0 per channel, got {std!r}")
    u = load_digits_ood(size=h, mean=0.0, std=1.0)                     # (1797, 1, H, W) in [0, 1]
    return _normalise(u.expand(-1, c, -1, -1), mean_t, std_t)


def _download_ood(name: str, root: Any, n: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """SVHN or CIFAR-100 test images via torchvision (downloads on first use), the first ``n``, normalised."""
    import numpy as np
    import torchvision

    if name == "svhn":
        arr = torchvision.datasets.SVHN(str(root), split="test", download=True).data            # (N, 3, 32, 32) uint8
    else:
        arr = torchvision.datasets.CIFAR100(str(root), train=False, download=True).data         # (N, 32, 32, 3) uint8
        arr = np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
    u = torch.from_numpy(np.asarray(arr[:n])).float() / 255.0
    return _normalise(u, mean, std)


def build_ood_sets(data: Any, n: int = 2000, seed: int = 0, download: bool | None = None) -> dict[str, torch.Tensor]:
    """The OOD sets of chapter 6 for an :class:`~lsutils.ImageDataset` ``data``: ``{name: (N_name, C, H, W)}``.

    Far: ``"digits"`` (all 1,797, :func:`digits_ood_like`) and ``"noise"`` (``n`` Gaussian images,
    :func:`noise_images`). Near: ``"upside-down"``, ``"rotated"`` and ``"patch-shuffled"``
    (:func:`transformed_images`) of ``n`` ID *test* images drawn at random (``seed``). With ``download=True``
    (default: only for CIFAR-10) also ``"svhn"`` and ``"cifar100"`` (first ``n`` test images, torchvision
    downloads them into :func:`lsutils.data_root`); a set that cannot be downloaded is left out with a warning.
    Every set is normalised with ``data.mean``/``data.std``. :data:`OOD_SETS` says which sets are far or near.

    >>> sets = build_ood_sets(ls.load_profile_data(ls.get_profile("smoke")))   # doctest: +SKIP
    >>> list(sets)  # doctest: +SKIP
    ['digits', 'noise', 'upside-down', 'rotated', 'patch-shuffled']
    """
    import warnings

    for attr in ("test", "mean", "std", "input_shape"):
        if not hasattr(data, attr):
            raise TypeError(f"data must be an lsutils ImageDataset (from load_dataset), got {type(data).__name__}")
    n = check_int("n", n, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    if download is not None and not isinstance(download, bool):
        raise TypeError(f"download must be True, False or None, got {download!r}")
    shape = tuple(data.input_shape)
    test_x = data.test.x
    if len(test_x) == 0:
        raise ValueError("data.test is empty: the near-OOD sets are made from ID test images")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(test_x), generator=g)[:n]
    base = test_x[pick]
    sets = {"digits": digits_ood_like(shape, data.mean, data.std),
            "noise": noise_images(n, shape, data.mean, data.std, kind="gaussian", seed=seed)}
    for i, kind in enumerate(_TRANSFORMS):
        sets[kind] = transformed_images(base, kind, seed=seed + i)
    if download is None:
        download = getattr(data, "name", None) == "cifar10"
    if download:
        if shape != (3, 32, 32):
            raise ValueError(f"download=True adds SVHN and CIFAR-100 (3×32×32 images); the ID data are {shape}")
        from lsutils.data import data_root

        for name in ("svhn", "cifar100"):
            try:
                sets[name] = _download_ood(name, data_root() / "ood", n, data.mean, data.std)
            except Exception as exc:  # no network, a mirror down, ...: the chapter runs on without the set
                warnings.warn(f"lsutils: OOD set {name!r} left out (cannot download it: {type(exc).__name__}: {exc})",
                              RuntimeWarning, stacklevel=2)
    return sets


# --------------------------------------------------------------------------------------------- evaluation
def _score_functions() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    from lsutils.metrics import energy_score, max_logit_score, msp_score

    return {"MSP": msp_score, "MaxLogit": max_logit_score, "Energy": energy_score}


#: The OOD scores chapter 6 compares (higher = more in-distribution): max softmax probability, max logit, energy.
OOD_SCORES = ("MSP", "MaxLogit", "Energy")
_OOD_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def ood_rows(logits_id: torch.Tensor, logits_ood: Mapping[str, torch.Tensor], **labels: Any) -> list[dict[str, Any]]:
    """One row per (OOD set, score) with AUROC, AUPR-In, AUPR-Out and FPR@95 %TPR (ID = positive class).

    ``logits_id``: ``(N, K)`` logits of the ID test set; ``logits_ood``: ``{set name: (M, K) logits}``;
    ``labels``: columns copied into every row (e.g. ``model="ALS", seed=0``). Each row holds those labels,
    ``ood`` (set name), ``kind`` (``"far"``/``"near"`` from :data:`OOD_SETS`, else ``"?"``), ``score``
    (one of :data:`OOD_SCORES`) and the four metrics of :func:`lsutils.ood_metrics`, so that
    ``lsutils.summarize(rows, by=[...], metrics=[...])`` averages them over seeds.

    >>> z = torch.randn(50, 3); rows = ood_rows(z, {"noise": torch.randn(40, 3)}, model="CE")
    >>> len(rows), sorted(rows[0])[:4]
    (3, ['aupr_in', 'aupr_out', 'auroc', 'fpr95'])
    """
    from lsutils.metrics import ood_metrics

    check_logits_2d("logits_id", logits_id, finite=True)
    if not isinstance(logits_ood, Mapping) or not logits_ood:
        raise TypeError(f"logits_ood must be a non-empty mapping {{set name: (M, K) logits}}, got {type(logits_ood).__name__}")
    fns = _score_functions()
    id_scores = {s: fns[s](logits_id) for s in OOD_SCORES}
    rows = []
    for name, z in logits_ood.items():
        check_logits_2d(f"logits_ood[{name!r}]", z, finite=True)
        if z.shape[1] != logits_id.shape[1]:
            raise ValueError(f"logits_ood[{name!r}] has {z.shape[1]} classes, logits_id {logits_id.shape[1]}")
        for s in OOD_SCORES:
            row = dict(labels)
            row.update(ood=name, kind=OOD_SETS.get(name, ("?",))[0], score=s)
            row.update(ood_metrics(id_scores[s], fns[s](z)))
            rows.append(row)
    return rows


def ood_table(rows: Sequence[Mapping[str, Any]], metric: str = "auroc", column: str = "model",
              digits: int = 1, scale: float = 100.0):
    """A ``pandas.DataFrame`` of ``metric`` as ``"mean ± std"`` over seeds: rows (OOD set, score), one column per ``column``.

    ``rows``: from :func:`ood_rows` (several models and seeds). The row and column orders are those of first
    appearance in ``rows``. ``scale=100`` prints percentages.

    >>> rows = [dict(r, seed=s) for s in (0, 1) for r in ood_rows(torch.randn(50, 3), {"noise": torch.randn(40, 3)}, model="CE")]
    >>> ood_table(rows).shape
    (3, 1)
    """
    from lsutils.stats import summarize

    check_choice("metric", metric, _OOD_METRICS)
    if not rows:
        raise ValueError("rows is empty; pass the output of ood_rows for at least one model")
    missing = [k for k in (column, "ood", "score", metric) if k not in rows[0]]
    if missing:
        raise ValueError(f"rows lack the keys {missing}; build them with ood_rows(..., {column}=...)")
    table = summarize(rows, by=["ood", "score", column], metrics=[metric], digits=digits, scale={metric: scale})
    wide = table[metric].unstack(column)
    order_rows = list(dict.fromkeys((r["ood"], r["score"]) for r in rows))
    order_cols = list(dict.fromkeys(r[column] for r in rows))
    wide = wide.loc[order_rows, order_cols]
    wide.index.names = ["OOD set", "score"]
    wide.columns.name = None
    return wide


def model_outputs(model: Any, x_id: torch.Tensor, sets: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits of ``model`` on the ID images ``x_id`` ``(N, C, H, W)`` and on every OOD set: ``((N, K), {name: (M, K)})``.

    Uses :func:`lsutils.predict_logits` (eval mode, no gradients, CPU float32 results).
    """
    from lsutils.models import predict_logits

    if not isinstance(sets, Mapping):
        raise TypeError(f"sets must be a mapping {{name: images}}, got {type(sets).__name__}")
    return predict_logits(model, x_id), {name: predict_logits(model, x) for name, x in sets.items()}


def evaluate_ood_run(run: Any, data: Any, sets: Mapping[str, torch.Tensor], **labels: Any):
    """Everything chapter 6 measures on one trained model: ``(rows, summary, (logits_id, logits_ood))``.

    ``run``: a :class:`~lsutils.TrainedRun` (or a bare model); ``data``: the ID :class:`~lsutils.ImageDataset`
    (its test split is the ID set); ``sets``: ``{name: OOD images}``; ``labels``: columns for every row (e.g.
    ``model="LS", seed=0``). ``rows`` are :func:`ood_rows`; ``summary`` is ``labels`` + ``val_acc`` (the last
    validation accuracy of the run's history, if any) + :func:`logit_summary` of the ID test logits.
    """
    model = getattr(run, "model", run)
    if not hasattr(data, "test"):
        raise TypeError(f"data must be an lsutils ImageDataset (from load_dataset), got {type(data).__name__}")
    z_id, z_ood = model_outputs(model, data.test.x, sets)
    summary: dict[str, Any] = dict(labels)
    history = getattr(run, "history", None) or {}
    if history.get("val_acc"):
        summary["val_acc"] = float(history["val_acc"][-1])
    summary.update(logit_summary(z_id, data.test.y))
    return ood_rows(z_id, z_ood, **labels), summary, (z_id, z_ood)


def mean_metric(rows: Sequence[Mapping[str, Any]], metric: str = "auroc", **where: Any) -> float:
    """The mean of ``metric`` over the rows of :func:`ood_rows` that match ``where`` (e.g. ``model="LS", score="MSP"``).

    >>> rows = [{"model": "CE", "score": "MSP", "auroc": 0.8}, {"model": "CE", "score": "MSP", "auroc": 0.9}]
    >>> round(mean_metric(rows, model="CE", score="MSP"), 3)
    0.85
    """
    check_choice("metric", metric, _OOD_METRICS)
    picked = [float(r[metric]) for r in rows if all(r.get(k) == v for k, v in where.items())]
    if not picked:
        raise ValueError(f"no row matches {where}; e.g. the first row is {dict(rows[0]) if rows else None}")
    return sum(picked) / len(picked)


def sorted_mean_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The mean over examples of each example's probability vector sorted in decreasing order, shape ``(K,)``.

    Entry 0 is the mean maximum probability, entry ``K-1`` the mean smallest one. Under label smoothing the tail is
    pinned near ``ε/K``; under ALS the non-maximal entries are pushed to be equal (a flat tail) at a level the model
    chooses; under cross-entropy nothing constrains them.

    >>> sorted_mean_probabilities(torch.tensor([[0.0, 2.0], [1.0, 1.0]])).round(decimals=3)
    tensor([0.6900, 0.3100])
    """
    check_logits_2d("logits", logits, finite=True)
    return logits.double().softmax(dim=1).sort(dim=1, descending=True).values.mean(dim=0).float()


def logit_summary(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Plain floats describing a model's outputs on ``(N, K)`` logits with ``(N,)`` labels.

    ``acc`` (accuracy), ``p_max`` (mean maximum probability), ``max_logit`` (mean maximum logit), ``logit_norm``
    (mean ‖z‖₂), ``non_max_std`` (mean of :func:`non_max_std`, the ALS regulariser) and ``tail_decades`` (mean of
    ``log10(p_(2) / p_(K))``, how many orders of magnitude separate the largest and the smallest non-maximal
    probability: 0 for a perfectly flat tail).

    >>> s = logit_summary(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))
    >>> s["acc"], round(s["p_max"], 3), s["tail_decades"]
    (1.0, 0.787, 0.0)
    """
    check_logits_2d("logits", logits, finite=True)
    check_tensor("labels", labels, floating=False)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    z = logits.double()
    p = z.softmax(dim=1).sort(dim=1, descending=True).values
    return {"acc": float((logits.argmax(dim=1) == labels).double().mean()),
            "p_max": float(p[:, 0].mean()),
            "max_logit": float(z.max(dim=1).values.mean()),
            "logit_norm": float(z.norm(dim=1).mean()),
            "non_max_std": float(_non_max_std(z.softmax(dim=1)).mean()),
            "tail_decades": float((p[:, 1].log10() - p[:, -1].clamp_min(1e-300).log10()).mean())}


# --------------------------------------------------------------------------------------------- figures
#: Colours of the chapter's three models in every figure.
MODEL_COLORS = {"CE": "tab:blue", "LS": "tab:orange", "ALS": "tab:green"}
_OTHER_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def _check_models(name: str, value: Any) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping) or not value:
        raise TypeError(f"{name} must be a non-empty mapping {{model name: (N, K) logits}}, got {type(value).__name__}")
    return {str(k): check_logits_2d(f"{name}[{k!r}]", v, finite=True) for k, v in value.items()}


def _color(model: str, i: int) -> str:
    return MODEL_COLORS.get(model, _OTHER_COLORS[i % len(_OTHER_COLORS)])


def _new_ax(ax: Any, figsize: tuple[float, float] = (5.0, 3.5)) -> Any:
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_score_histograms(logits_id: Mapping[str, torch.Tensor], logits_ood: Mapping[str, Mapping[str, torch.Tensor]],
                          ood_names: Sequence[str], scores: Sequence[str] = ("MSP", "MaxLogit"), bins: int = 40):
    """Histograms of OOD scores, ID test set (filled) vs OOD sets (lines): one row per score, one column per model.

    ``logits_id``: ``{model: (N, K)}``; ``logits_ood``: ``{model: {set name: (M, K)}}``; ``ood_names``: the sets to
    draw; ``scores``: names from :data:`OOD_SCORES`. Panels of one row share their x axis, so a model whose logits
    are smaller sits further left. Densities, so sets of different sizes compare. Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    ids = _check_models("logits_id", logits_id)
    if isinstance(ood_names, str) or not ood_names:
        raise TypeError(f"ood_names must be a non-empty sequence of set names, got {ood_names!r}")
    for m in ids:
        if m not in logits_ood:
            raise ValueError(f"logits_ood has no entry for model {m!r}; it has {list(logits_ood)}")
        for name in ood_names:
            if name not in logits_ood[m]:
                raise ValueError(f"logits_ood[{m!r}] has no OOD set {name!r}; it has {list(logits_ood[m])}")
    for s in scores:
        check_choice("scores", s, OOD_SCORES)
    bins = check_int("bins", bins, minimum=2)
    fns = _score_functions()
    fig, axes = plt.subplots(len(scores), len(ids), figsize=(3.6 * len(ids), 2.9 * len(scores)),
                             sharex="row", squeeze=False)
    for r, s in enumerate(scores):
        values = {m: (fns[s](z).numpy(), {o: fns[s](logits_ood[m][o]).numpy() for o in ood_names})
                  for m, z in ids.items()}
        lo = min(min(v[0].min(), *(a.min() for a in v[1].values())) for v in values.values())
        hi = max(max(v[0].max(), *(a.max() for a in v[1].values())) for v in values.values())
        edges = np.linspace(lo, hi, bins + 1)
        for c, (m, (vid, vood)) in enumerate(values.items()):
            ax = axes[r, c]
            ax.hist(vid, bins=edges, density=True, color="0.75", label="ID test")
            for j, (o, v) in enumerate(vood.items()):
                ax.hist(v, bins=edges, density=True, histtype="step", linewidth=1.6,
                        color=_OTHER_COLORS[j % len(_OTHER_COLORS)], label=f"OOD: {o}")
            ax.set_title(f"{m}: {s}")
            ax.set_xlabel({"MSP": "max softmax probability", "MaxLogit": "max logit",
                           "Energy": "logsumexp of logits"}[s])
            ax.set_ylabel("density")
            ax.set_yscale("log")
        axes[r, 0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_ood_examples(sets: Mapping[str, torch.Tensor], mean: Sequence[float] | float, std: Sequence[float] | float,
                      id_images: torch.Tensor | None = None, n: int = 6):
    """A grid of example images: one row per set (the ID images first, if given), ``n`` images per row.

    ``sets``: ``{name: (M, C, H, W)}`` normalised images; ``mean``/``std``: the normalisation to undo (per channel).
    Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt

    if not isinstance(sets, Mapping) or not sets:
        raise TypeError(f"sets must be a non-empty mapping {{name: (M, C, H, W) images}}, got {type(sets).__name__}")
    n = check_int("n", n, minimum=1)
    rows = ({"ID test": id_images} if id_images is not None else {}) | dict(sets)
    c = next(iter(rows.values())).shape[1]
    m = torch.tensor(_check_stats("mean", mean, c)).view(1, c, 1, 1)
    s = torch.tensor(_check_stats("std", std, c)).view(1, c, 1, 1)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 1.2, 1.15 * len(rows)), squeeze=False)
    for r, (name, x) in enumerate(rows.items()):
        check_tensor(f"sets[{name!r}]", x, floating=True)
        if x.dim() != 4 or x.shape[1] != c:
            raise ValueError(f"sets[{name!r}] must have shape (M, {c}, H, W), got {tuple(x.shape)}")
        shown = (x[:n] * s + m).clamp(0, 1)
        for j in range(n):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(shown):
                img = shown[j].permute(1, 2, 0).squeeze(-1).numpy()
                ax.imshow(img, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
            else:
                ax.axis("off")
        kind = OOD_SETS.get(name, ("",))[0]
        axes[r, 0].set_ylabel(f"{name}\n({kind})" if kind else name, rotation=0, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def plot_logit_norms(logits_by_model: Mapping[str, torch.Tensor], ax: Any = None, bins: int = 50):
    """Histograms of the logit norm ‖z‖₂ per model (ID test set): label smoothing's shrunken scale. Returns the Axes."""
    import numpy as np

    models = _check_models("logits_by_model", logits_by_model)
    bins = check_int("bins", bins, minimum=2)
    ax = _new_ax(ax)
    norms = {m: z.double().norm(dim=1).numpy() for m, z in models.items()}
    edges = np.linspace(0.0, max(v.max() for v in norms.values()), bins + 1)
    for i, (m, v) in enumerate(norms.items()):
        ax.hist(v, bins=edges, density=True, histtype="step", linewidth=1.8, color=_color(m, i),
                label=f"{m} (median {np.median(v):.1f})")
    ax.set_xlabel("logit norm ‖z‖₂")
    ax.set_ylabel("density")
    ax.set_title("Logit scale, ID test images")
    ax.legend(fontsize=8)
    return ax


def plot_sorted_probabilities(logits_by_model: Mapping[str, torch.Tensor], ax: Any = None):
    """The mean sorted probability vector per model (:func:`sorted_mean_probabilities`), log scale. Returns the Axes.

    Rank 1 is the mean maximum probability; ranks 2..K the tail that LS pins near ε/K and ALS makes flat.
    """
    models = _check_models("logits_by_model", logits_by_model)
    ax = _new_ax(ax)
    for i, (m, z) in enumerate(models.items()):
        pbar = sorted_mean_probabilities(z).numpy()
        ax.plot(range(1, len(pbar) + 1), pbar, marker="o", color=_color(m, i), label=m)
    ax.set_yscale("log")
    ax.set_xlabel("rank of the probability within its example")
    ax.set_ylabel("mean probability")
    ax.set_title("Sorted mean probability vector, ID test images")
    ax.legend(fontsize=8)
    return ax


def plot_pull(logits: torch.Tensor, target: torch.Tensor, lam: float, ax: Any = None, bins: int = 12):
    """How hard each part of the ALS loss pulls, against how confident the example is. Returns the Axes.

    For ``(N, K)`` logits and ``(N,)`` labels (e.g. an ALS model's training set), :func:`als_term_gradient_norm`
    per example, averaged in bins of ``1 - p_max`` (log-spaced, so the one-hot end is visible): the gradient norm
    of the cross-entropy, that of ``λ ×`` the regulariser, and the regulariser's value ``λ · std``.
    """
    import numpy as np

    lam = _check_lam(lam)
    bins = check_int("bins", bins, minimum=2)
    g = als_term_gradient_norm(logits, target)
    gap = (1.0 - g["p_max"].double()).clamp_min(1e-12).numpy()
    lo = max(np.quantile(gap, 0.001), 1e-12)
    edges = np.logspace(np.log10(lo), np.log10(max(gap.max(), lo * 10)), bins + 1)
    which = np.clip(np.digitize(gap, edges) - 1, 0, bins - 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    ax = _new_ax(ax)
    for key, scale, label, style in (("ce", 1.0, "‖∇ cross-entropy‖", "-"),
                                     ("std", lam, f"‖∇ λ·std‖ (λ = {lam:g})", "-"),
                                     ("std_value", lam, "λ·std (the term's value)", "--")):
        v = g[key].double().numpy() * scale
        means = np.array([v[which == b].mean() if (which == b).any() else np.nan for b in range(bins)])
        ax.plot(centres, means, style, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("1 − max probability (binned)")
    ax.set_ylabel("mean over the bin")
    ax.set_title("The pull of each term vs confidence")
    ax.legend(fontsize=8)
    return ax


def plot_lambda_sweep(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, str], x: str = "lam",
                      reference: Mapping[str, Mapping[str, float]] | None = None):
    """One panel per metric (three per row): ``rows`` (one dict per trained λ) against ``rows[i][x]`` on a log axis.

    ``metrics``: ``{key in rows: panel title}``. ``reference``: optional ``{label: {metric: value}}`` drawn as
    horizontal lines (e.g. the CE and LS models). Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("rows is empty; need one row per λ")
    if not isinstance(metrics, Mapping) or not metrics:
        raise TypeError("metrics must be a non-empty mapping {row key: panel title}")
    for k in list(metrics) + [x]:
        if k not in rows[0]:
            raise ValueError(f"rows lack the key {k!r}; keys present: {sorted(rows[0])}")
    order = sorted(rows, key=lambda r: r[x])
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, (k, title) in zip(axes.flat, metrics.items()):
        ax.plot([r[x] for r in order], [r[k] for r in order], marker="o", color=MODEL_COLORS["ALS"], label="ALS")
        for i, (label, values) in enumerate((reference or {}).items()):
            if k in values:
                ax.axhline(values[k], linestyle="--", color=_color(label, i), label=label)
        ax.set_xscale("log")
        ax.set_xlabel("λ" if x == "lam" else x)
        ax.set_title(title, fontsize=10)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------- chapter settings
def als_settings(profile: Any) -> dict[str, Any]:
    """Chapter 6's sizes for a :class:`~lsutils.Profile`: the λ grid, the LS ε, the OOD set size and the seeds.

    ``lam_grid``: λ values swept with the first seed (1, 2, 5, 10, 20 in every profile: from "as weak as a
    rounding error" to "accuracy collapses"); ``epsilon``: the LS model compared (0.1, the models chapters 3 and 4
    cache); ``n_ood``: images per generated OOD set (500 in ``smoke``, whose test set has 1,000, else 2,000);
    ``seeds``: the profile's seeds. In the ``cpu`` profile this is 5 + 2 = 7 ALS models (≈ 8 s each) on top of the
    6 cached CE/LS models.

    >>> from lsutils.config import get_profile
    >>> als_settings(get_profile("smoke"))["lam_grid"]
    (1.0, 2.0, 5.0, 10.0, 20.0)
    """
    for attr in ("name", "seeds"):
        if not hasattr(profile, attr):
            raise TypeError(f"profile must be an lsutils Profile (from get_profile()), got {type(profile).__name__}")
    return {"lam_grid": (1.0, 2.0, 5.0, 10.0, 20.0), "epsilon": 0.1,
            "n_ood": 500 if profile.name == "smoke" else 2000, "seeds": tuple(profile.seeds)}


def select_lambda(rows: Sequence[Mapping[str, Any]], n_val: int, key: str = "val_acc") -> float:
    """The one-standard-error rule on validation accuracy: the largest λ whose ``key`` is within one SE of the best.

    ``rows``: one dict per λ with keys ``"lam"`` and ``key`` (an accuracy in [0, 1] measured on ``n_val`` validation
    images). The standard error of the best accuracy ``a`` is the binomial ``sqrt(a (1 - a) / n_val)``; every λ whose
    accuracy is at least ``a - SE`` is statistically as accurate, and among those the rule takes the most regularised
    one (Breiman et al.'s 1-SE rule): a λ so small that it changes nothing is no test of ALS. No OOD data is used:
    at training time a detector has none.

    >>> rows = [{"lam": 1.0, "val_acc": 0.885}, {"lam": 5.0, "val_acc": 0.884}, {"lam": 10.0, "val_acc": 0.870}]
    >>> select_lambda(rows, n_val=5000)       # SE = 0.0045: 0.884 is within it, 0.870 is not
    5.0
    """
    if not rows:
        raise ValueError("rows is empty; need one row per λ")
    n_val = check_int("n_val", n_val, minimum=1)
    for i, r in enumerate(rows):
        if "lam" not in r or key not in r:
            raise ValueError(f"rows[{i}] must have the keys 'lam' and {key!r}, has {sorted(r)}")
        if not 0.0 <= float(r[key]) <= 1.0:
            raise ValueError(f"rows[{i}][{key!r}] must be an accuracy in [0, 1], got {r[key]}")
    best = max(float(r[key]) for r in rows)
    se = (best * (1.0 - best) / n_val) ** 0.5
    return max(float(r["lam"]) for r in rows if float(r[key]) >= best - se - 1e-12)
