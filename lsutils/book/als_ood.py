"""Chapter 6: adaptive label smoothing (ALS) for out-of-distribution detection (Xu, Lee, Yoon & Park 2024).

The loss lives in the core (:func:`lsutils.als_loss`, the trainer loss ``{"name": "als", "lam": λ}``,
:func:`lsutils.losses.non_max_std`, :func:`lsutils.losses.als_term_gradient_norm`); the OOD scores and metrics too
(:func:`lsutils.msp_score`, :func:`lsutils.max_logit_score`, :func:`lsutils.energy_score`,
:func:`lsutils.ood_metrics`, ID = positive class). This module holds the chapter's recipe:

* settings: :data:`HELD_OUT` (the classes kept out of training: near-OOD data), :data:`LAMBDAS`,
  :data:`EPSILONS`, :func:`settings`;
* OOD data: :func:`noise_images`, :func:`digits_ood_like`, :func:`ood_sets`;
* measurements: :func:`tail_summary` (what the ALS term targets, measured scale-free), :func:`ood_rows`,
  :func:`score_run`, :func:`select_lambda`, :func:`misclassified_pull`, :func:`paired_effects`;
* figures: :func:`plot_ood_examples`, :func:`plot_sweep`, :func:`plot_paired_effects`,
  :func:`plot_score_histograms`, :func:`plot_pull`.

Why a *renormalised* tail. With ``k = argmax p`` and ``r_i = p_i / (1 - p_k)`` for ``i ≠ k`` (the non-maximal
probabilities rescaled to sum to one), the ALS term factors exactly as::

    std_{i≠k}(p_i) = (1 - p_k) · std_{i≠k}(r_i)

so the term can shrink in two ways: the tail's *mass* ``1 - p_k`` falls (what cross-entropy does anyway), or its
*shape* ``r`` becomes flat (what ALS is for). ``tail_std = std(r)`` measures the shape alone: 0 for a flat tail,
``sqrt(K-2)/(K-1)`` when one wrong class holds all the tail's mass.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch

from lsutils._validate import check_choice, check_int, check_labels_1d, check_logits_2d, check_tensor
from lsutils.book.common import md  # noqa: F401  (the chapter's generated prose: ch.md(...))
from lsutils.losses import _check_lam, _non_max_std, als_term_gradient_norm
from lsutils.metrics import energy_score, max_logit_score, msp_score, ood_metrics
from lsutils.stats import p_text

__all__ = ["md", "HELD_OUT", "EPSILONS", "LAMBDAS", "LS_EPSILON", "SCORES", "OOD_KINDS", "settings", "noise_images",
           "digits_ood_like", "ood_sets", "tail_summary", "ood_rows", "score_run", "select_lambda",
           "misclassified_pull", "paired_effects", "wide_metric", "fmt_p", "plot_ood_examples", "plot_sweep",
           "plot_paired_effects", "plot_score_histograms", "plot_pull"]

# --------------------------------------------------------------------------------------------- settings
#: Classes held out of training, per dataset: their test images are the near-OOD set. Each has a close relative
#: among the classes that are trained: Fashion-MNIST's Shirt (T-shirt/top, Pullover, Coat) and Ankle boot
#: (Sneaker, Sandal); CIFAR-10's cat (dog) and truck (automobile).
HELD_OUT: dict[str, tuple[int, ...]] = {"fashion_mnist": (6, 9), "cifar10": (3, 9)}
#: The ε grid of the calibration chapter: chapters 3–5 train (and cache) these CE/LS models.
EPSILONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
#: The LS model compared with ALS on the held-out-class task.
LS_EPSILON = 0.1
#: ALS weights swept with every seed. Below 10 the trained model is CE in all but name; much above 30 training
#: collapses (measured in the ``cpu`` profile; the chapter shows where).
LAMBDAS = (10.0, 15.0, 20.0, 25.0, 30.0)
#: The three scores (higher = more in-distribution).
SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "MSP": msp_score, "MaxLogit": max_logit_score, "Energy": energy_score}
#: What each OOD set of :func:`ood_sets` is. Noise is reported apart, never averaged with the others.
OOD_KINDS = {"held-out": "near", "digits": "far", "noise": "noise"}
_SCORE_COLORS = {"MSP": "tab:purple", "MaxLogit": "tab:red", "Energy": "tab:brown"}
_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")
_NOISE_KINDS = ("gaussian", "uniform")


def _check_profile(profile: Any) -> None:
    for attr in ("name", "dataset", "seeds", "n_train", "n_val", "n_test"):
        if not hasattr(profile, attr):
            raise TypeError(f"profile must be an lsutils Profile (from get_profile()), got {type(profile).__name__}")


def settings(profile: Any) -> dict[str, Any]:
    """The chapter's sizes for a :class:`~lsutils.config.Profile`.

    ``seeds``; ``epsilons`` (:data:`EPSILONS`, the cached ten-class CE/LS models); ``ls_epsilon``; ``lambdas``;
    ``held_out`` and ``id_classes`` (the original class indices kept out of / in training); ``num_classes`` of the
    full dataset; ``n_noise`` (noise images: 500 in ``smoke``, else 2,000).

    >>> from lsutils.config import get_profile
    >>> s = settings(get_profile("smoke"))
    >>> s["held_out"], s["id_classes"]
    ((6, 9), (0, 1, 2, 3, 4, 5, 7, 8))
    """
    _check_profile(profile)
    if profile.dataset not in HELD_OUT:
        raise ValueError(f"no held-out classes defined for dataset {profile.dataset!r}; known: {sorted(HELD_OUT)}")
    from lsutils.data import _SOURCES

    k = len(_SOURCES[profile.dataset][1])
    held = HELD_OUT[profile.dataset]
    return {"seeds": tuple(profile.seeds), "epsilons": EPSILONS, "ls_epsilon": LS_EPSILON, "lambdas": LAMBDAS,
            "held_out": held, "id_classes": tuple(c for c in range(k) if c not in held), "num_classes": k,
            "n_noise": 500 if profile.name == "smoke" else 2000}


# --------------------------------------------------------------------------------------------- OOD data
def _check_stats(name: str, values: Any, channels: int) -> tuple[float, ...]:
    vals = (values,) if isinstance(values, (int, float)) and not isinstance(values, bool) else values
    try:
        vals = tuple(float(v) for v in vals)
    except TypeError:
        raise TypeError(f"{name} must be a number or a sequence of {channels} numbers, got {values!r}") from None
    if len(vals) != channels:
        raise ValueError(f"{name} must have one value per channel ({channels}), got {len(vals)}: {values!r}")
    return vals


def _check_shape(shape: Any) -> tuple[int, int, int]:
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(tuple(shape)) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape!r}")
    return tuple(check_int(f"shape[{i}]", v, minimum=1) for i, v in enumerate(shape))  # type: ignore[return-value]


def _normalise(u: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=u.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=u.dtype).view(1, -1, 1, 1)
    return ((u - m) / s).contiguous()


def noise_images(n: int, shape: Sequence[int], mean: Sequence[float] | float, std: Sequence[float] | float,
                 kind: str = "gaussian", seed: int = 0) -> torch.Tensor:
    """``n`` noise images of ``shape = (C, H, W)``, normalised like the ID data: ``(n, C, H, W)`` float32.

    Pixels in [0, 1] units: ``kind="gaussian"`` from ``N(mean_c, std_c²)`` per channel (the ID pixels' first two
    moments), clipped to [0, 1]; ``kind="uniform"`` from ``U[0, 1]``. Then ``(u - mean) / std``, the ID images'
    normalisation. Seeded: the same ``seed`` gives the same images.

    >>> noise_images(3, (1, 28, 28), mean=0.286, std=0.353).shape
    torch.Size([3, 1, 28, 28])
    """
    n = check_int("n", n, minimum=1)
    c, h, w = _check_shape(shape)
    mean_t, std_t = _check_stats("mean", mean, c), _check_stats("std", std, c)
    if min(std_t) <= 0:
        raise ValueError(f"std must be > 0 per channel, got {std!r}")
    check_choice("kind", kind, _NOISE_KINDS)
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    if kind == "uniform":
        u = torch.rand(n, c, h, w, generator=g)
    else:
        m, s = torch.tensor(mean_t).view(1, c, 1, 1), torch.tensor(std_t).view(1, c, 1, 1)
        u = (torch.randn(n, c, h, w, generator=g) * s + m).clamp_(0.0, 1.0)
    return _normalise(u, mean_t, std_t)


def digits_ood_like(shape: Sequence[int], mean: Sequence[float] | float, std: Sequence[float] | float) -> torch.Tensor:
    """scikit-learn's 1,797 handwritten digits as images of ``shape = (C, H, W)``, normalised like the ID data.

    :func:`lsutils.data.load_digits_ood` in [0, 1] units at size ``H`` (needs ``H == W``), the grey channel repeated
    ``C`` times (a CIFAR-10 model sees grey digits), then ``(u - mean_c) / std_c``. ``(1797, C, H, W)`` float32.

    >>> digits_ood_like((3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).shape
    torch.Size([1797, 3, 32, 32])
    """
    from lsutils.data import load_digits_ood

    c, h, w = _check_shape(shape)
    if h != w:
        raise ValueError(f"digits are square: shape must have H == W, got {tuple(shape)}")
    mean_t, std_t = _check_stats("mean", mean, c), _check_stats("std", std, c)
    if min(std_t) <= 0:
        raise ValueError(f"std must be > 0 per channel, got {std!r}")
    u = load_digits_ood(size=h, mean=0.0, std=1.0)                     # (1797, 1, H, W) in [0, 1]
    return _normalise(u.expand(-1, c, -1, -1), mean_t, std_t)


def ood_sets(profile: Any, n_noise: int | None = None, seed: int = 0, root: Any = None) -> dict[str, torch.Tensor]:
    """The chapter's OOD sets for a profile: ``{"held-out": …, "digits": …, "noise": …}``, each ``(M, C, H, W)``.

    ``held-out``: the test images of the :data:`HELD_OUT` classes (the profile's test-set size, capped by what
    those classes have); ``digits``: :func:`digits_ood_like`; ``noise``: ``n_noise`` Gaussian images
    (:func:`noise_images`, default from :func:`settings`, seeded by ``seed``). All normalised with the dataset's
    mean and std. ``root``: the data folder (default :func:`lsutils.data.data_root`). :data:`OOD_KINDS` says
    which set is near, far or noise.
    """
    from lsutils.data import load_dataset

    s = settings(profile)
    n_noise = s["n_noise"] if n_noise is None else check_int("n_noise", n_noise, minimum=1)
    n_test = None if profile.n_test is None else min(profile.n_test, 1000 * len(s["held_out"]))
    held = load_dataset(profile.dataset, n_train=profile.n_train, n_val=profile.n_val, n_test=n_test,
                        classes=s["held_out"], root=root)
    shape = tuple(held.input_shape)
    return {"held-out": held.test.x,
            "digits": digits_ood_like(shape, held.mean, held.std),
            "noise": noise_images(n_noise, shape, held.mean, held.std, seed=seed)}


# --------------------------------------------------------------------------------------------- measurements
def tail_summary(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """What a model's outputs look like on ``(N, K)`` logits with ``(N,)`` labels: plain floats (means over N).

    ``acc``; ``p_max`` (mean max probability); ``max_logit``; ``logit_norm`` (mean ‖z‖₂); ``non_max_std`` (the ALS
    term, :func:`lsutils.losses.non_max_std`); ``tail_std`` (std of the renormalised non-maximal probabilities
    ``r = p_{i≠k} / (1 - p_k)``: the tail's shape, 0 when flat); on the misclassified examples only (``nan`` when
    there are none): ``err_true_share`` (the true class's share ``r_y`` of the tail; a flat tail gives
    ``1/(K-1)``) and ``err_runner_up`` (the fraction whose true class ranks second); ``n_err``.

    >>> s = tail_summary(torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 1.0]]), torch.tensor([0, 2]))
    >>> s["acc"], round(s["tail_std"], 3), round(s["err_true_share"], 3), s["err_runner_up"]
    (0.5, 0.116, 0.731, 1.0)
    """
    check_logits_2d("logits", logits, finite=True)
    labels = check_labels_1d("labels", labels, logits.shape[0], logits.shape[1])
    z = logits.detach().double().cpu()
    y = labels.cpu().long()
    p = z.softmax(dim=1)
    n, k = p.shape
    top = p.argmax(dim=1)
    rest = torch.ones_like(p, dtype=torch.bool).scatter_(1, top.view(-1, 1), False)
    tail = p[rest].view(n, k - 1)
    r = tail / tail.sum(dim=1, keepdim=True).clamp_min(1e-300)
    wrong = top != y
    out = {"acc": float((~wrong).double().mean()), "p_max": float(p.max(dim=1).values.mean()),
           "max_logit": float(z.max(dim=1).values.mean()), "logit_norm": float(z.norm(dim=1).mean()),
           "non_max_std": float(_non_max_std(p).mean()), "tail_std": float(r.std(dim=1, unbiased=False).mean()),
           "n_err": int(wrong.sum())}
    if wrong.any():
        pw, yw = p[wrong], y[wrong]
        p_true = pw.gather(1, yw.view(-1, 1)).squeeze(1)
        out["err_true_share"] = float((p_true / (1 - pw.max(dim=1).values).clamp_min(1e-300)).mean())
        out["err_runner_up"] = float((pw.topk(2, dim=1).indices[:, 1] == yw).double().mean())
    else:
        out["err_true_share"] = out["err_runner_up"] = math.nan
    return out


def ood_rows(logits_id: torch.Tensor, logits_ood: Mapping[str, torch.Tensor], **labels: Any) -> list[dict[str, Any]]:
    """One row per (OOD set, score): AUROC, AUPR-In, AUPR-Out, FPR@95 %TPR (ID = positive) and the AUPR chance levels.

    ``logits_id``: ``(N, K)`` of the ID test set; ``logits_ood``: ``{set name: (M, K)}``; ``labels``: columns
    copied into every row (e.g. ``model="ALS", seed=0``). Each row also has ``ood``, ``kind`` (from
    :data:`OOD_KINDS`, else ``"?"``), ``score`` (a key of :data:`SCORES`), ``n_id``, ``n_ood`` and
    ``aupr_in_chance = N / (N + M)`` / ``aupr_out_chance = M / (N + M)``: the AUPR of a score that ranks at random.

    >>> rows = ood_rows(torch.randn(60, 3), {"noise": torch.randn(20, 3)}, model="CE")
    >>> len(rows), rows[0]["score"], rows[0]["aupr_in_chance"]
    (3, 'MSP', 0.75)
    """
    check_logits_2d("logits_id", logits_id, finite=True)
    if not isinstance(logits_ood, Mapping) or not logits_ood:
        raise TypeError(f"logits_ood must be a non-empty mapping {{set name: (M, K) logits}}, "
                        f"got {type(logits_ood).__name__}")
    id_scores = {s: fn(logits_id) for s, fn in SCORES.items()}
    n_id = logits_id.shape[0]
    rows = []
    for name, z in logits_ood.items():
        check_logits_2d(f"logits_ood[{name!r}]", z, finite=True)
        if z.shape[1] != logits_id.shape[1]:
            raise ValueError(f"logits_ood[{name!r}] has {z.shape[1]} classes, logits_id {logits_id.shape[1]}")
        m = z.shape[0]
        for s, fn in SCORES.items():
            rows.append({**labels, "ood": name, "kind": OOD_KINDS.get(name, "?"), "score": s, "n_id": n_id,
                         "n_ood": m, "aupr_in_chance": n_id / (n_id + m), "aupr_out_chance": m / (n_id + m),
                         **ood_metrics(id_scores[s], fn(z))})
    return rows


def score_run(run: Any, data: Any, sets: Mapping[str, torch.Tensor], **labels: Any):
    """Everything the chapter measures on one trained model: ``(rows, summary, logits)``.

    ``run``: a :class:`~lsutils.train.TrainedRun`; ``data``: its :class:`~lsutils.data.ImageDataset` (test = ID
    test set, val = held-out data for the descriptive statistics and for choosing λ); ``sets``: ``{name: OOD
    images}``; ``labels``: columns for every row. ``rows``: :func:`ood_rows` on the test set; ``summary``:
    ``labels``, ``train_acc`` (last epoch, from the run's history), ``test_acc`` and :func:`tail_summary` of the
    *validation* logits (``acc`` renamed ``val_acc``); ``logits``: ``{"val", "test", <set names>}`` tensors.
    """
    from lsutils.models import predict_logits

    model = getattr(run, "model", None)
    if model is None or not hasattr(data, "test") or not hasattr(data, "val"):
        raise TypeError("score_run needs a TrainedRun (from train_model) and an ImageDataset (from load_dataset)")
    if not isinstance(sets, Mapping):
        raise TypeError(f"sets must be a mapping {{name: images}}, got {type(sets).__name__}")
    logits = {"val": predict_logits(model, data.val.x), "test": predict_logits(model, data.test.x)}
    logits.update({name: predict_logits(model, x) for name, x in sets.items()})
    summary: dict[str, Any] = dict(labels)
    history = getattr(run, "history", None) or {}
    summary["train_acc"] = float(history["train_acc"][-1]) if history.get("train_acc") else math.nan
    summary["test_acc"] = float((logits["test"].argmax(1) == data.test.y).double().mean())
    tail = tail_summary(logits["val"], data.val.y)
    summary["val_acc"] = tail.pop("acc")
    summary.update(tail)
    rows = ood_rows(logits["test"], {name: logits[name] for name in sets}, **labels)
    return rows, summary, logits


def select_lambda(rows: Sequence[Mapping[str, Any]], n_val: int, key: str = "val_acc") -> float:
    """The most regularising λ that costs no validation accuracy: the largest λ whose seed-mean ``key`` is within
    one binomial standard error of the best seed-mean.

    ``rows``: one dict per (λ, seed) with keys ``"lam"`` (0 for plain CE) and ``key`` (an accuracy in [0, 1] on
    ``n_val`` validation images). The standard error of the best mean accuracy ``a`` is taken as that of a single
    run, ``sqrt(a (1 - a) / n_val)``. No OOD data and no test data are used.

    >>> rows = [{"lam": 0.0, "val_acc": 0.885}, {"lam": 5.0, "val_acc": 0.884}, {"lam": 10.0, "val_acc": 0.870}]
    >>> select_lambda(rows, n_val=5000)       # SE = 0.0045: 0.884 is within it, 0.870 is not
    5.0
    """
    if isinstance(rows, Mapping) or not rows:
        raise ValueError("rows must be a non-empty sequence of dicts, one per (λ, seed)")
    n_val = check_int("n_val", n_val, minimum=1)
    by_lam: dict[float, list[float]] = {}
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping) or "lam" not in r or key not in r:
            raise ValueError(f"rows[{i}] must be a dict with the keys 'lam' and {key!r}")
        a = float(r[key])
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"rows[{i}][{key!r}] must be an accuracy in [0, 1], got {r[key]}")
        by_lam.setdefault(float(r["lam"]), []).append(a)
    means = {lam: sum(v) / len(v) for lam, v in by_lam.items()}
    best = max(means.values())
    se = math.sqrt(best * (1.0 - best) / n_val)
    return max(lam for lam, a in means.items() if a >= best - se - 1e-12)


def misclassified_pull(logits: torch.Tensor, labels: torch.Tensor, lam: float) -> dict[str, float]:
    """Which way the ALS loss pushes the margin ``z_y - z_k`` of each misclassified example (``k = argmax ≠ y``).

    A gradient step ``-η ∇L`` changes the margin by ``-η (∂L/∂z_y - ∂L/∂z_k)``. For cross-entropy this is always
    positive (it raises the true class). The ALS term ``λ·std = λ (1 - p_k) std(r)`` works against it twice: it
    falls when the winner's probability ``p_k`` grows, so it rewards the wrong winner; and it equalises the
    non-maximal probabilities, *the true class's included*, so when ``p_y`` is above their mean it lowers ``p_y``.
    Returns (computed in float64):
    ``n_err``; ``term_against`` (fraction of errors on which the ALS term alone shrinks the margin);
    ``net_against`` (fraction on which CE + λ·term together shrink it: a gradient step moves the example further
    from being corrected); ``true_above_mean`` (fraction with ``p_y`` above the mean non-maximal probability).
    All ``nan`` when no example is misclassified.

    >>> z = torch.tensor([[0.0, 3.0, 2.0, -1.0, -1.0]]); y = torch.tensor([2])
    >>> r = misclassified_pull(z, y, lam=20.0)
    >>> r["n_err"], r["term_against"], r["net_against"]
    (1, 1.0, 1.0)
    """
    check_logits_2d("logits", logits, finite=True)
    labels = check_labels_1d("labels", labels, logits.shape[0], logits.shape[1]).cpu().long()
    lam = _check_lam(lam)
    z = logits.detach().double().cpu()
    wrong = z.argmax(1) != labels
    out = {"n_err": int(wrong.sum())}
    if not wrong.any():
        return {**out, "term_against": math.nan, "net_against": math.nan, "true_above_mean": math.nan}
    zw = z[wrong].clone().requires_grad_(True)
    yw, kw = labels[wrong], z[wrong].argmax(1)
    p = zw.softmax(dim=1)
    (g_term,) = torch.autograd.grad(_non_max_std(p).sum(), zw, retain_graph=True)
    (g_ce,) = torch.autograd.grad(torch.nn.functional.cross_entropy(zw, yw, reduction="sum"), zw)

    def margin_push(g: torch.Tensor) -> torch.Tensor:       # margin change per unit step of gradient descent
        return -(g.gather(1, yw.view(-1, 1)) - g.gather(1, kw.view(-1, 1))).squeeze(1)

    term, ce = lam * margin_push(g_term), margin_push(g_ce)
    pd = p.detach()
    tail_mean = (1 - pd.max(dim=1).values) / (pd.shape[1] - 1)
    return {**out, "term_against": float((term < 0).double().mean()),
            "net_against": float((term + ce < 0).double().mean()),
            "true_above_mean": float((pd.gather(1, yw.view(-1, 1)).squeeze(1) > tail_mean).double().mean())}


def paired_effects(rows: Any, comparisons: Sequence[tuple[str, str]], *, sets: Sequence[str],
                   scores: Sequence[str] = tuple(SCORES), metric: str = "auroc", arm: str = "model",
                   scale: float = 100.0):
    """Paired comparisons over seeds (:func:`lsutils.stats.paired_comparison`) of ``metric``, one per comparison,
    OOD set and score: a ``pandas.DataFrame`` with columns ``comparison`` (``"A − B"``), ``a``, ``b``, ``ood``,
    ``score``, ``mean``, ``std``, ``ci_low``, ``ci_high``, ``p``, ``n``, ``verdict`` (``higher``/``lower``/``same``)
    and ``text`` (:meth:`lsutils.stats.PairedComparison.text` with one decimal).

    ``rows``: rows of :func:`ood_rows` (a DataFrame or list of dicts) with a ``seed`` column and an ``arm`` column
    whose values the pairs in ``comparisons`` name, e.g. ``[("LS", "CE"), ("ALS", "CE")]``; one row per seed and
    arm in each (set, score). Differences are ``(a − b) · scale``.
    """
    import pandas as pd

    from lsutils.stats import paired_comparison

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(list(rows))
    check_choice("metric", metric, _METRICS)
    for col in (arm, "seed", "ood", "score", metric):
        if col not in df.columns:
            raise ValueError(f"rows lack the column {col!r}; columns: {sorted(df.columns)}")
    if isinstance(comparisons, (str, bytes)) or not comparisons or not all(
            isinstance(c, (tuple, list)) and len(c) == 2 for c in comparisons):
        raise TypeError(f"comparisons must be a non-empty sequence of (a, b) pairs, got {comparisons!r}")
    out = []
    for a, b in comparisons:
        for ood in sets:
            for score in scores:
                sub = df[(df["ood"] == ood) & (df["score"] == score)]
                if sub.empty:
                    raise ValueError(f"no rows for ood={ood!r}, score={score!r}")
                r = paired_comparison(sub, metric, {arm: a}, {arm: b}, scale=scale)
                out.append({"comparison": f"{a} − {b}", "a": a, "b": b, "ood": ood, "score": score, "mean": r.mean,
                            "std": r.std, "ci_low": r.ci_low, "ci_high": r.ci_high, "p": r.p, "n": r.n,
                            "verdict": r.verdict, "text": r.text(1)})
    return pd.DataFrame.from_records(out)


fmt_p = p_text   # the p-value as the prose prints it (lsutils.stats.p_text)


def wide_metric(rows: Any, index: Sequence[str], metric: str = "auroc", scale: float = 100.0):
    """Rows of :func:`ood_rows` as one row per ``index`` values (e.g. ``["lam", "seed"]``) and one column per
    ``"<set>:<score>"`` holding ``metric`` times ``scale`` (default: percent): the form :func:`plot_sweep` draws.
    Returns a ``pandas.DataFrame``.

    >>> rows = ood_rows(torch.randn(30, 3), {"noise": torch.randn(10, 3)}, lam=0.0, seed=0)
    >>> list(wide_metric(rows, ["lam", "seed"]).columns)
    ['lam', 'seed', 'noise:Energy', 'noise:MSP', 'noise:MaxLogit']
    """
    df = _frame(rows)
    check_choice("metric", metric, _METRICS)
    if isinstance(index, str) or not index:
        raise TypeError(f"index must be a non-empty sequence of column names, got {index!r}")
    for c in (*index, "ood", "score", metric):
        if c not in df.columns:
            raise ValueError(f"rows lack the column {c!r}; columns: {sorted(df.columns)}")
    scale = float(scale)
    wide = (df.assign(key=df["ood"] + ":" + df["score"], value=df[metric] * scale)
            .pivot_table(index=list(index), columns="key", values="value"))
    wide.columns.name = None
    return wide.reset_index()


# --------------------------------------------------------------------------------------------- figures
def _frame(rows: Any):
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        return rows
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty")
    return pd.DataFrame.from_records(rows)


def plot_sweep(rows: Any, x: str, panels: Mapping[str, str], *, reference: Any = None,
               reference_label: str = "LS", mark: float | None = None,
               guides: Mapping[str, tuple[str, Mapping[float, float]]] | None = None,
               zero_label: str | None = None, xlabel: str | None = None, labels: Mapping[str, str] | None = None,
               ncols: int = 4):
    """Quantities against a swept hyper-parameter, mean ± sd over seeds, one panel per quantity.

    ``rows``: a DataFrame (or list of dicts), one row per (``x`` value, seed), with a column ``x`` (each distinct
    value gets an evenly spaced position) and the panels' columns. ``panels``: ``{column: panel title}``; a key
    ``"col1|col2|…"`` draws several columns in one panel (e.g. ``"train_acc|val_acc"``; a column named
    ``"<set>:<score>"`` is labelled and coloured by its score). ``reference``: rows with the same columns and no
    ``x`` (e.g. the LS models), drawn as a dashed line at their mean with a shaded ± sd band. ``mark``: an ``x``
    value marked by a dotted vertical line (the chosen λ). ``guides``: ``{column: (label, {x: y})}``, a dotted
    curve in that column's panel (e.g. LS's cap on the maximum probability). ``zero_label``: the tick label of
    ``x = 0`` (e.g. ``"CE"``); ``labels``: legend names of columns (default: the column, or its score). The
    reference's sd band is drawn only in single-line panels. Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt

    df = _frame(rows)
    labels = dict(labels or {})
    if not isinstance(panels, Mapping) or not panels:
        raise TypeError("panels must be a non-empty mapping {column: title}")
    for c in [x] + [c for key in panels for c in key.split("|")]:
        if c not in df.columns:
            raise ValueError(f"rows lack the column {c!r}; columns: {sorted(df.columns)}")
    ref = None if reference is None else _frame(reference)
    xs = sorted(df[x].unique())
    pos = list(range(len(xs)))
    ncols = min(check_int("ncols", ncols, minimum=1), len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.7 * ncols, 3.1 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (key, title) in zip(axes.flat, panels.items()):
        parts = key.split("|")
        for i, c in enumerate(parts):
            name = c.rsplit(":", 1)[-1]
            color = _SCORE_COLORS.get(name, f"C{i}")
            label = labels.get(c, name) if len(parts) > 1 else None
            stats = df.groupby(x)[c].agg(["mean", "std"]).reindex(xs)
            ax.errorbar(pos, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", capsize=3, color=color,
                        label=label)
            if ref is not None and c in ref.columns:
                m = float(ref[c].mean())
                sd = float(ref[c].std()) if len(ref) > 1 else 0.0
                ax.axhline(m, linestyle="--", color=color, linewidth=1.2,
                           label=reference_label + (f" ({label})" if label else ""))
                if len(parts) == 1:
                    ax.axhspan(m - sd, m + sd, color=color, alpha=0.12, linewidth=0)
            if guides and c in guides:
                glabel, values = guides[c]
                ax.plot([i for i, v in enumerate(xs) if v in values], [values[v] for v in xs if v in values], ":",
                        color="0.3", label=glabel)
        if mark is not None and mark in xs:
            ax.axvline(xs.index(mark), color="0.5", linewidth=1, linestyle=":")
        ax.set_xticks(pos)
        ax.set_xticklabels([zero_label if (v == 0 and zero_label) else f"{v:g}" for v in xs])
        ax.set_xlabel(xlabel or x)
        ax.set_title(title, fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_paired_effects(effects: Any, *, metric_label: str = "AUROC difference (points)"):
    """Forest plot of :func:`paired_effects`: one panel per comparison, one line per (OOD set, score).

    Each line is the mean paired difference with its 95 % confidence interval; filled markers where ``p < 0.05``.
    Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt

    df = _frame(effects)
    for c in ("comparison", "ood", "score", "mean", "ci_low", "ci_high", "p"):
        if c not in df.columns:
            raise ValueError(f"effects lack the column {c!r}: pass the output of paired_effects")
    comps = list(dict.fromkeys(df["comparison"]))
    keys = list(dict.fromkeys(zip(df["ood"], df["score"])))
    fig, axes = plt.subplots(1, len(comps), figsize=(3.4 * len(comps) + 1.2, 0.34 * len(keys) + 1.3),
                             sharey=True, squeeze=False)
    for ax, comp in zip(axes[0], comps):
        sub = df[df["comparison"] == comp].set_index(["ood", "score"])
        for i, key in enumerate(keys):
            r = sub.loc[key]
            color = _SCORE_COLORS.get(key[1], "0.3")
            ax.plot([r["ci_low"], r["ci_high"]], [i, i], color=color, linewidth=2)
            ax.plot([r["mean"]], [i], "o", color=color, markerfacecolor=color if r["p"] < 0.05 else "white")
        ax.axvline(0.0, color="0.4", linewidth=1)
        ax.set_title(comp, fontsize=10)
        ax.set_xlabel(metric_label)
    axes[0, 0].set_yticks(range(len(keys)))
    axes[0, 0].set_yticklabels([f"{o}: {s}" for o, s in keys])
    axes[0, 0].invert_yaxis()
    fig.tight_layout()
    return fig


def plot_score_histograms(logits: Mapping[str, Mapping[str, torch.Tensor]], sets: Sequence[str],
                          scores: Sequence[str] = ("MSP", "MaxLogit"), bins: int = 40):
    """Histograms of OOD scores, ID test set (filled) vs OOD sets (lines): one row per score, one column per model.

    ``logits``: ``{model: {"test": (N, K), <set name>: (M, K), ...}}`` (the third output of :func:`score_run`);
    ``sets``: the OOD sets to draw. Panels of one row share their x axis; densities, so sets of different sizes
    compare. Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if not isinstance(logits, Mapping) or not logits:
        raise TypeError("logits must be a non-empty mapping {model: {'test': logits, set: logits}}")
    if isinstance(sets, str) or not sets:
        raise TypeError(f"sets must be a non-empty sequence of set names, got {sets!r}")
    for m, d in logits.items():
        for name in ("test", *sets):
            if name not in d:
                raise ValueError(f"logits[{m!r}] has no entry {name!r}; it has {list(d)}")
    for s in scores:
        check_choice("scores", s, tuple(SCORES))
    bins = check_int("bins", bins, minimum=2)
    fig, axes = plt.subplots(len(scores), len(logits), figsize=(3.5 * len(logits), 2.8 * len(scores)),
                             sharex="row", squeeze=False)
    for r, s in enumerate(scores):
        vals = {m: {name: SCORES[s](d[name]).numpy() for name in ("test", *sets)} for m, d in logits.items()}
        lo = min(v.min() for d in vals.values() for v in d.values())
        hi = max(v.max() for d in vals.values() for v in d.values())
        edges = np.linspace(lo, hi, bins + 1)
        for c, (m, d) in enumerate(vals.items()):
            ax = axes[r, c]
            ax.hist(d["test"], bins=edges, density=True, color="0.75", label="ID test")
            for j, name in enumerate(sets):
                ax.hist(d[name], bins=edges, density=True, histtype="step", linewidth=1.6, color=f"C{j + 3}",
                        label=f"{name} ({OOD_KINDS.get(name, '?')})")
            ax.set_title(f"{m}: {s}", fontsize=10)
            ax.set_yscale("log")
            ax.set_xlabel({"MSP": "max softmax probability", "MaxLogit": "max logit",
                           "Energy": "logsumexp of logits"}[s])
        axes[r, 0].set_ylabel("density")
        axes[r, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_ood_examples(sets: Mapping[str, torch.Tensor], mean: Sequence[float] | float, std: Sequence[float] | float,
                      n: int = 8):
    """A grid of example images: one row per set (e.g. ``{"ID test": …, **ood_sets(p)}``), ``n`` per row.

    ``sets``: ``{name: (M, C, H, W)}`` normalised images; ``mean``/``std``: the normalisation to undo. Returns the
    ``Figure``.
    """
    import matplotlib.pyplot as plt

    if not isinstance(sets, Mapping) or not sets:
        raise TypeError(f"sets must be a non-empty mapping {{name: (M, C, H, W) images}}, got {type(sets).__name__}")
    n = check_int("n", n, minimum=1)
    c = next(iter(sets.values())).shape[1]
    m = torch.tensor(_check_stats("mean", mean, c)).view(1, c, 1, 1)
    s = torch.tensor(_check_stats("std", std, c)).view(1, c, 1, 1)
    fig, axes = plt.subplots(len(sets), n, figsize=(1.0 * n + 1.4, 1.05 * len(sets)), squeeze=False)
    for r, (name, x) in enumerate(sets.items()):
        check_tensor(f"sets[{name!r}]", x, floating=True)
        if x.dim() != 4 or x.shape[1] != c:
            raise ValueError(f"sets[{name!r}] must have shape (M, {c}, H, W), got {tuple(x.shape)}")
        pick = torch.linspace(0, len(x) - 1, min(n, len(x))).long()      # spread over the set (classes are sorted)
        shown = (x[pick] * s + m).clamp(0, 1)
        for j in range(n):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(shown):
                ax.imshow(shown[j].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if c == 1 else None,
                          vmin=0, vmax=1)
            else:
                ax.axis("off")
        kind = OOD_KINDS.get(name)
        axes[r, 0].set_ylabel(f"{name}\n({kind})" if kind and kind != name else name, rotation=0, ha="right",
                              va="center", fontsize=9)
    fig.tight_layout()
    return fig


def plot_pull(logits: torch.Tensor, target: torch.Tensor, lam: float, ax: Any = None, bins: int = 12):
    """How hard each part of the ALS loss pulls, against how confident the example is. Returns the Axes.

    For ``(N, K)`` logits and ``(N,)`` labels (e.g. an ALS model's training set), the per-example gradient norms of
    :func:`lsutils.losses.als_term_gradient_norm`, averaged in log-spaced bins of ``1 - p_max``: cross-entropy's,
    ``λ ×`` the term's, and the term's value ``λ·std``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    lam = _check_lam(lam)
    bins = check_int("bins", bins, minimum=2)
    g = als_term_gradient_norm(logits, target)
    gap = (1.0 - g["p_max"].double()).clamp_min(1e-12).numpy()
    lo = max(float(np.quantile(gap, 0.001)), 1e-12)
    edges = np.logspace(np.log10(lo), np.log10(max(float(gap.max()), lo * 10)), bins + 1)
    which = np.clip(np.digitize(gap, edges) - 1, 0, bins - 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.5))
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
    ax.set_title("The pull of each term vs confidence", fontsize=10)
    ax.legend(fontsize=8)
    return ax
