"""Calibration and out-of-distribution (OOD) metrics.

**Calibration** (Guo et al. 2017). A classifier's *confidence* on an example is its largest
softmax probability; it is *calibrated* when, among the examples it answers with confidence
``c``, a fraction ``c`` is right. Sort the ``N`` examples into ``M`` equal-width confidence bins
``I_m = ((m-1)/M, m/M]`` (default ``M = 15``); with ``B_m`` the examples in bin ``m``::

    ECE = Σ_m |B_m|/N · |acc(B_m) − conf(B_m)|        MCE = max_m |acc(B_m) − conf(B_m)|

(MCE over the non-empty bins). *Temperature scaling* divides every logit by one ``T > 0``
fitted to minimise the negative log-likelihood (NLL) on held-out (validation) data; it never
changes the predicted class, hence never the accuracy.

Bins are closed on the right, as in Guo et al.'s definition and their reference code, so a
confidence of exactly 1.0 lands in the last bin. ``torchmetrics.MulticlassCalibrationError``
bins ``[lo, hi)`` and puts a confidence of exactly 1.0 (which a float32 softmax of a
confident model produces often) into a 16th bin of its own; the two agree whenever no
confidence lies exactly on a bin edge (the tests check both facts). We compute in float64.

**OOD detection.** A score maps logits ``(N, K)`` to ``(N,)``, *higher = more
in-distribution*: MSP (max softmax probability; Hendrycks & Gimpel 2017), MaxLogit
(Hendrycks et al. 2022), energy ``T·logsumexp(z/T)`` (Liu et al. 2020; the negative of their
free energy). :func:`ood_metrics` treats the **in-distribution (ID) examples as the positive
class** (OpenOOD reports with OOD positive; AUROC is the same either way, AUPR-In and
AUPR-Out swap, FPR95 differs): AUROC, AUPR-In (ID positive, score as given), AUPR-Out (OOD
positive, score negated) and FPR95 (the fraction of OOD examples accepted at the threshold
where 95 % of ID examples are accepted). ROC and PR curves come from scikit-learn.

**Selective classification** (Geifman & El-Yaniv 2017): a classifier may abstain. It answers the fraction
``c`` (the *coverage*) of inputs it is most confident about; the *selective risk* is its error rate on those.
Sorting the ``N`` examples by confidence, highest first, the risk–coverage curve has one point per prefix
``i = 1..N`` (``coverage_i = i/N``, ``risk_i`` = errors among the ``i`` most confident / ``i``), and its area
``AURC = (1/N) Σ_i risk_i`` scores the confidence *ranking* (lower is better). The best ranking puts every correct
prediction first; ``E-AURC = AURC − AURC*`` is the part a better ranking could remove. Ties in confidence are
broken *in expectation*. :func:`pnorm_logit_score` reads the confidence from logits divided by their ``p``-norm
(MaxLogit-pNorm, Cattelan & Silva 2024), which removes the overall scale of the logits.

**Inputs.** Every function here takes tensors on any device, with or without ``requires_grad`` (they are
detached and copied to the CPU), or numpy arrays; labels may have any integer dtype.

>>> logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]]); labels = torch.tensor([0, 1, 1])
>>> round(accuracy(logits, labels), 4)
0.6667
>>> sorted(calibration_report(logits, labels))
['acc', 'conf', 'ece', 'mce', 'nll']
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ._validate import as_int, as_real, check_finite, check_positive, check_probability, check_tensor

__all__ = [
    "accuracy", "nll", "expected_calibration_error", "max_calibration_error", "calibration_bins",
    "calibration_report", "fit_temperature", "temperature_scaled_report", "plot_reliability",
    "msp_score", "max_logit_score", "energy_score", "ood_metrics",
    "risk_coverage_curve", "aurc", "optimal_aurc", "excess_aurc", "selective_risk", "pnorm_logit_score",
    "select_pnorm", "selective_report",
]

# How far rows of ``probs`` may be from summing to 1 (a float32 softmax is within ~1e-6).
_SUM_TOL = 1e-3
# Temperatures searched by fit_temperature: log T in [log T_MIN, log T_MAX].
_T_MIN, _T_MAX = 1e-2, 1e2


# --------------------------------------------------------------------------------------------- checks
def _as_tensor(name: str, value: Any) -> torch.Tensor:
    """Accept a tensor (any device, with or without gradients) or a numpy array; return a CPU tensor without grad."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    check_tensor(name, value)
    return value.detach().cpu()


def _check_matrix(name: str, value: Any) -> torch.Tensor:
    """A finite floating ``(N, K)`` tensor with ``N >= 1`` and ``K >= 2``."""
    t = _as_tensor(name, value)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape (N, K), got dtype {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (N, K) (one row per example, one column per class), "
                         f"got shape {tuple(t.shape)}")
    if t.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 columns (classes), got shape {tuple(t.shape)}")
    check_finite(name, t)
    return t


def _check_labels(labels: Any, n: int, k: int, name: str = "labels") -> torch.Tensor:
    """Integer class indices ``(n,)`` in ``[0, k)``."""
    y = _as_tensor(name, labels)
    check_tensor(name, y, floating=False)
    if y.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of class indices (N,), got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but the predictions have {n} rows; they must match")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= k:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} holds class index {bad}, but with {k} classes indices must be in [0, {k - 1}]")
    return y.long()


def _check_probs(probs: Any) -> torch.Tensor:
    """Probabilities ``(N, K)``: finite, in [0, 1], rows summing to 1 (within 1e-3); returned as float64."""
    p = _check_matrix("probs", probs).double()
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"probs must lie in [0, 1], got values in [{p.min().item():.4g}, {p.max().item():.4g}]; "
                         "pass softmax probabilities (e.g. logits.softmax(-1)), not logits")
    dev = (p.sum(1) - 1).abs()
    if dev.max() > _SUM_TOL:
        i = int(dev.argmax())
        raise ValueError(f"each row of probs must sum to 1 (within {_SUM_TOL:g}); row {i} sums to "
                         f"{p[i].sum().item():.6g}; pass softmax probabilities (e.g. logits.softmax(-1))")
    return p


def _check_n_bins(n_bins: Any) -> int:
    return int(check_positive("n_bins", n_bins, integer=True, minimum=1))


def _check_temperature(temperature: Any) -> float:
    return float(check_positive("temperature", temperature))


def _check_logits_labels(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    z = _check_matrix("logits", logits).double()
    return z, _check_labels(labels, z.shape[0], z.shape[1])


# --------------------------------------------------------------------------------------------- accuracy, NLL
def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1] of ``logits`` (or probabilities) ``(N, K)`` against ``labels`` ``(N,)`` int64.

    >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    0.5
    """
    z, y = _check_logits_labels(logits, labels)
    return float((z.argmax(1) == y).double().mean())


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood (cross-entropy with one-hot targets, nats) of ``logits`` ``(N, K)``.

    Computed in float64 (``logsumexp`` is stable for any finite logits).

    >>> round(nll(torch.zeros(3, 4), torch.tensor([0, 1, 2])), 4)  # uniform prediction: log 4
    1.3863
    """
    z, y = _check_logits_labels(logits, labels)
    return float(torch.nn.functional.cross_entropy(z, y))


# --------------------------------------------------------------------------------------------- calibration
def _binned(probs: Any, labels: Any, n_bins: Any) -> tuple[np.ndarray, ...]:
    """``(edges (M+1,), count (M,), sum of correctness (M,), sum of confidence (M,))`` in float64."""
    n_bins = _check_n_bins(n_bins)
    p = _check_probs(probs)
    y = _check_labels(labels, p.shape[0], p.shape[1])
    conf, pred = p.max(1)
    correct = (pred == y).double()
    # bin m (0-based) holds conf in (m/M, (m+1)/M]: index ceil(conf * M) - 1, clamped to [0, M-1]
    idx = (torch.ceil(conf * n_bins).long() - 1).clamp_(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).double()
    acc_sum = torch.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return edges, count.numpy(), acc_sum.numpy(), conf_sum.numpy()


def calibration_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin data of a reliability diagram: ``n_bins`` equal-width confidence bins ``(lower, upper]``.

    ``probs``: ``(N, K)`` probabilities (rows sum to 1); ``labels``: ``(N,)`` int64 in ``[0, K)``.
    Returns numpy arrays of shape ``(n_bins,)``: ``lower``, ``upper`` (bin edges), ``count``
    (examples in the bin, int64), ``accuracy`` and ``confidence`` (mean correctness and mean
    top-1 probability of the bin's examples; NaN for an empty bin).

    >>> b = calibration_bins(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]), n_bins=2)
    >>> b["count"].tolist(), b["accuracy"].tolist(), b["confidence"].round(2).tolist()
    ([0, 2], [nan, 0.5], [nan, 0.75])
    """
    edges, count, acc_sum, conf_sum = _binned(probs, labels, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
        conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
    return {"lower": edges[:-1], "upper": edges[1:], "count": count.astype(np.int64),
            "accuracy": acc, "confidence": conf}


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE = Σ_m |B_m|/N · |acc(B_m) − conf(B_m)| over ``n_bins`` equal-width bins (Guo et al. 2017).

    ``probs``: ``(N, K)`` probabilities; ``labels``: ``(N,)`` int64. Returns a float in [0, 1].
    Equals ``torchmetrics.classification.MulticlassCalibrationError(K, n_bins, norm="l1")``
    unless a confidence lies exactly on a bin edge (see the module docstring).

    >>> expected_calibration_error(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]), n_bins=2)
    0.25
    """
    _, count, acc_sum, conf_sum = _binned(probs, labels, n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / count.sum())


def max_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, min_count: int = 1) -> float:
    """MCE = max over bins holding at least ``min_count`` examples of |acc(B_m) − conf(B_m)|.

    Same bins as :func:`expected_calibration_error`. With ``min_count=1`` (every non-empty bin) it equals
    ``torchmetrics``' ``MulticlassCalibrationError(..., norm="max")`` under the same proviso; but a bin of a
    handful of examples then decides the MCE, so report it with a ``min_count`` (e.g. 1 % of the examples).
    Returns NaN when no bin holds ``min_count`` examples.

    >>> max_calibration_error(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]), n_bins=2)
    0.25
    """
    min_count = as_int("min_count", min_count, minimum=1)
    _, count, acc_sum, conf_sum = _binned(probs, labels, n_bins)
    full = count >= min_count
    if not full.any():
        return float("nan")
    return float(np.max(np.abs(acc_sum[full] - conf_sum[full]) / count[full]))


def calibration_report(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
                       temperature: float = 1.0, mce_min_count: int = 1) -> dict[str, float]:
    """Accuracy, NLL, ECE, MCE and mean confidence of ``softmax(logits / temperature)``, as plain floats.

    ``logits``: ``(N, K)``; ``labels``: ``(N,)`` integers. Returns ``{"acc", "nll", "ece", "mce", "conf"}``
    (``acc``, ``ece``, ``mce``, ``conf`` in [0, 1]; ``nll`` in nats; ``mce`` over bins of at least
    ``mce_min_count`` examples). Computed in float64.

    >>> r = calibration_report(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), temperature=2.0)
    >>> r["acc"], round(r["nll"], 4)
    (0.5, 0.6437)
    """
    z, y = _check_logits_labels(logits, labels)
    z = z / _check_temperature(temperature)
    probs = z.softmax(1)
    return {"acc": accuracy(z, y), "nll": nll(z, y), "ece": expected_calibration_error(probs, y, n_bins),
            "mce": max_calibration_error(probs, y, n_bins, mce_min_count), "conf": float(probs.max(1).values.mean())}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature ``T > 0`` that minimises the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    Fit it on *validation* logits ``(N, K)`` and labels ``(N,)``, then apply it to test logits.
    The NLL is a convex function of ``1/T``, so it has one minimum; it is found by a bounded
    Brent search over ``log T`` in ``[log 0.01, log 100]`` (deterministic, float64, to a
    relative precision of about 1e-6). ``T > 1`` softens over-confident predictions, ``T < 1``
    sharpens under-confident ones. A ``RuntimeWarning`` says when the optimum lies at the edge
    of the range (e.g. a perfectly separated validation set, where the NLL keeps falling as
    ``T → 0``).

    >>> g = torch.Generator().manual_seed(0)
    >>> z = 3 * torch.randn(4000, 5, generator=g)                    # a calibrated model's logits
    >>> y = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)
    >>> round(fit_temperature(2.0 * z, y), 1)                        # made over-confident by 2
    2.0
    """
    from scipy.optimize import minimize_scalar

    z, y = _check_logits_labels(logits, labels)
    z_true = z.gather(1, y[:, None]).squeeze(1)

    def objective(log_t: float) -> float:
        s = z * math.exp(-log_t)
        return float((torch.logsumexp(s, 1) - z_true * math.exp(-log_t)).mean())

    lo, hi = math.log(_T_MIN), math.log(_T_MAX)
    res = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7, "maxiter": 500})
    log_t, best = float(res.x), float(res.fun)
    # the NLL can be flat near an edge (e.g. exactly 0 in float64 for a separated set as T -> 0): compare with the edges
    for edge in (lo, hi):
        if objective(edge) <= best:
            log_t, best = edge, objective(edge)
    if log_t - lo < 1e-3 or hi - log_t < 1e-3:
        warnings.warn(f"fit_temperature: the NLL is minimised at the edge of the searched range "
                      f"[{_T_MIN:g}, {_T_MAX:g}] (T = {math.exp(log_t):.4g}); the validation set may be perfectly "
                      "separated or the logits constant", RuntimeWarning, stacklevel=2)
    return math.exp(log_t)


def temperature_scaled_report(val_logits: torch.Tensor, val_labels: torch.Tensor, test_logits: torch.Tensor,
                              test_labels: torch.Tensor, n_bins: int = 15, mce_min_count: int = 1) -> dict[str, float]:
    """Temperature scaling end to end: fit ``T`` on validation logits, report test metrics before and after.

    ``val_logits`` ``(N_val, K)``, ``val_labels`` ``(N_val,)``; ``test_logits`` ``(N_test, K)``,
    ``test_labels`` ``(N_test,)``. Returns plain floats: ``temperature`` (:func:`fit_temperature` on the
    validation set), ``val_ece`` and ``val_nll`` (validation, at ``T = 1``: for choosing hyper-parameters without
    touching the test set), the test ``acc``, ``nll``, ``ece``, ``mce``, ``conf`` at ``T = 1`` and ``nll_ts``,
    ``ece_ts``, ``mce_ts``, ``conf_ts`` at the fitted ``T`` (the accuracy does not change).

    >>> g = torch.Generator().manual_seed(0)
    >>> z = 3 * torch.randn(4000, 5, generator=g); y = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)
    >>> r = temperature_scaled_report(2 * z[:2000], y[:2000], 2 * z[2000:], y[2000:])
    >>> round(r["temperature"], 1), r["ece_ts"] < r["ece"], r["nll_ts"] < r["nll"]
    (2.0, True, True)
    """
    zv, yv = _check_logits_labels(val_logits, val_labels)
    zt, yt = _check_logits_labels(test_logits, test_labels)
    if zv.shape[1] != zt.shape[1]:
        raise ValueError(f"val_logits and test_logits must have the same number of classes, got "
                         f"{zv.shape[1]} and {zt.shape[1]}")
    t = fit_temperature(zv, yv)
    before = calibration_report(zt, yt, n_bins, mce_min_count=mce_min_count)
    after = calibration_report(zt, yt, n_bins, temperature=t, mce_min_count=mce_min_count)
    val = calibration_report(zv, yv, n_bins)
    return {"temperature": t, "val_ece": val["ece"], "val_nll": val["nll"], **before,
            **{f"{k}_ts": after[k] for k in ("nll", "ece", "mce", "conf")}}


def _compact_count(n: int) -> str:
    """``"987"``, ``"1.2k"``, ``"12k"``: short enough to stand above a narrow bar."""
    return str(n) if n < 1000 else f"{n / 1000:.1f}k" if n < 10_000 else f"{n // 1000}k"


def plot_reliability(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, ax: Any = None,
                     title: str | None = None, legend: bool = True, counts: bool = True) -> Any:
    """Reliability diagram: per-bin accuracy (bars) against confidence, the gap to the diagonal shaded.

    ``probs``: ``(N, K)`` probabilities; ``labels``: ``(N,)`` integers. Blue bars: accuracy of each
    non-empty bin; red hatched bars: the gap between the bin's mean confidence and its accuracy
    (above the bar: over-confident; inside it: under-confident); dashed diagonal: perfect
    calibration. ``counts=True`` writes the number of examples of each bin above it (as Guo et al. show the
    share of examples per bin: a bin of a handful of examples says little). The ECE (in %) is written in the
    corner. Draws on ``ax`` (``None`` = a new figure) and returns it; ``legend=False`` leaves the legend out.

    >>> ax = plot_reliability(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]))  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    for name, flag in (("legend", legend), ("counts", counts)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    b = calibration_bins(probs, labels, n_bins)
    ece = expected_calibration_error(probs, labels, n_bins)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    full = b["count"] > 0
    left, width = b["lower"][full], (b["upper"] - b["lower"])[full]
    acc, conf = b["accuracy"][full], b["confidence"][full]
    ax.bar(left, acc, width=width, align="edge", color="tab:blue", edgecolor="black", linewidth=0.6,
           label="accuracy")
    ax.bar(left, conf - acc, bottom=acc, width=width, align="edge", color="tab:red", alpha=0.3,
           edgecolor="tab:red", hatch="//", linewidth=0.6, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    if counts:
        for x0, w, top, n in zip(left, width, np.maximum(acc, conf), b["count"][full]):
            ax.text(x0 + w / 2, min(top + 0.02, 0.98), _compact_count(int(n)), rotation=90, ha="center",
                    va="bottom", fontsize=7, color="0.25", clip_on=True)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.12 if counts else 1)
    ax.set_xlabel("confidence (max softmax probability)")
    ax.set_ylabel("accuracy")
    ax.text(0.04, 0.96 if not counts else 1.08, f"ECE = {100 * ece:.2f}%", transform=ax.transData, va="top",
            ha="left", bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    if legend:
        ax.legend(loc="lower right", fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------------------------- OOD
def msp_score(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability ``max_k softmax(z)_k`` ``(N,)`` of logits ``(N, K)``, float64.

    Computed in float64: in float32 a confident model's MSP saturates at exactly 1.0, and the
    ties would blur the ranking that AUROC measures.

    >>> msp_score(torch.tensor([[0.0, 0.0], [0.0, 100.0]])).tolist()
    [0.5, 1.0]
    """
    return _check_matrix("logits", logits).double().softmax(1).max(1).values


def max_logit_score(logits: torch.Tensor) -> torch.Tensor:
    """Maximum logit ``max_k z_k`` ``(N,)`` of logits ``(N, K)``, float64.

    >>> max_logit_score(torch.tensor([[1.0, 3.0], [-2.0, -1.0]])).tolist()
    [3.0, -1.0]
    """
    return _check_matrix("logits", logits).double().max(1).values


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Negative free energy ``T · logsumexp(z / T)`` ``(N,)`` of logits ``(N, K)``, float64 (Liu et al. 2020).

    >>> round(energy_score(torch.zeros(1, 4)).item(), 4)   # log 4
    1.3863
    """
    t = _check_temperature(temperature)
    return t * torch.logsumexp(_check_matrix("logits", logits).double() / t, 1)


def _check_scores(name: str, value: Any) -> np.ndarray:
    s = _as_tensor(name, value)
    if s.dtype == torch.bool or s.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {s.dtype}")
    if s.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of scores (N,), got shape {tuple(s.shape)}")
    s = s.double()
    check_finite(name, s)
    return s.cpu().numpy()


def ood_metrics(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FPR95 of an OOD score (higher = more in-distribution).

    ``id_scores``: ``(N_id,)`` scores of in-distribution examples; ``ood_scores``: ``(N_ood,)``
    of out-of-distribution ones (tensors or numpy arrays). **ID is the positive class.**
    Returns floats in [0, 1]:

    * ``auroc``: probability that a random ID example outscores a random OOD one (ties count ½);
      ``sklearn.metrics.roc_auc_score``.
    * ``aupr_in``: average precision with ID positive and the score as given;
      ``aupr_out``: with OOD positive and the score negated (``average_precision_score``).
    * ``fpr95``: the smallest fraction of OOD examples scoring at or above a threshold that keeps
      at least 95 % of the ID examples (true-positive rate ≥ 0.95), from ``roc_curve``.

    >>> m = ood_metrics(torch.tensor([3.0, 4.0, 5.0]), torch.tensor([1.0, 2.0, 3.5]))
    >>> round(m["auroc"], 4), m["fpr95"]
    (0.8889, 0.3333333333333333)
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s_id = _check_scores("id_scores", id_scores)
    s_ood = _check_scores("ood_scores", ood_scores)
    scores = np.concatenate([s_id, s_ood])
    is_id = np.concatenate([np.ones(len(s_id), dtype=np.int64), np.zeros(len(s_ood), dtype=np.int64)])
    fpr, tpr, _ = roc_curve(is_id, scores, drop_intermediate=False)
    fpr95 = float(fpr[np.searchsorted(tpr, 0.95, side="left")])
    return {"auroc": float(roc_auc_score(is_id, scores)),
            "aupr_in": float(average_precision_score(is_id, scores)),
            "aupr_out": float(average_precision_score(1 - is_id, -scores)),
            "fpr95": fpr95}


# --------------------------------------------------------------------------------------------- selective classification
def _as_1d_float(name: str, value: Any) -> torch.Tensor:
    value = _as_tensor(name, value)
    if value.dim() != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(value.shape)}")
    if value.dtype == torch.bool:
        value = value.to(torch.float64)
    value = value.detach().to("cpu", torch.float64)
    check_finite(name, value)
    return value


def _as_correct(value: Any, n: int) -> torch.Tensor:
    value = _as_tensor("correct", value)
    if value.dim() != 1 or value.shape[0] != n:
        raise ValueError(f"correct must be 1-D with one entry per confidence ({n},), got shape {tuple(value.shape)}")
    value = value.detach().cpu()
    if value.dtype != torch.bool:
        if not ((value == 0) | (value == 1)).all():
            raise ValueError("correct must hold booleans or 0/1 values (1 = the prediction is right)")
        value = value.bool()
    return value


def risk_coverage_curve(confidence: Any, correct: Any) -> dict[str, np.ndarray]:
    """The risk–coverage curve of a confidence score: answer the most confident examples first.

    Args:
        confidence: ``(N,)`` scores, higher = more confident (e.g. the max softmax probability).
        correct: ``(N,)`` booleans (or 0/1): whether the model's prediction on each example is right.

    Returns:
        dict of numpy arrays of length ``N``: ``coverage`` (``i/N`` for ``i = 1..N``), ``risk`` (the
        expected error rate among the ``i`` most confident examples, ties broken uniformly at random)
        and ``threshold`` (the confidence of the ``i``-th example).

    >>> c = risk_coverage_curve(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([True, True, False, True]))
    >>> c["coverage"].tolist(), c["risk"].round(3).tolist()
    ([0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.333, 0.25])
    """
    conf = _as_1d_float("confidence", confidence)
    ok = _as_correct(correct, conf.shape[0])
    n = conf.shape[0]
    order = torch.argsort(conf, descending=True, stable=True)
    conf_s = conf[order]
    err_s = (~ok[order]).to(torch.float64)
    # Tie groups: within a group of equal confidence, every order is equally likely, so the expected number of
    # errors among the first j members is j * (errors in group) / (group size).
    new_group = torch.ones(n, dtype=torch.bool)
    new_group[1:] = conf_s[1:] != conf_s[:-1]
    group_id = torch.cumsum(new_group.long(), 0) - 1
    n_groups = int(group_id[-1]) + 1
    size = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group_id, torch.ones(n, dtype=torch.float64))
    errs = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group_id, err_s)
    errs_before = torch.cumsum(errs, 0) - errs                      # errors in all earlier groups
    start = (torch.cumsum(size, 0) - size)                          # positions before the group
    pos = torch.arange(1, n + 1, dtype=torch.float64)               # 1-based position
    within = pos - start[group_id]                                  # 1..size within the group
    expected_errors = errs_before[group_id] + within * errs[group_id] / size[group_id]
    return {"coverage": (pos / n).numpy(), "risk": (expected_errors / pos).numpy(), "threshold": conf_s.numpy()}


def aurc(confidence: Any, correct: Any) -> float:
    """Area under the risk–coverage curve, ``(1/N) Σ_i risk_i`` (lower = better ranking); see :func:`risk_coverage_curve`.

    >>> round(aurc(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([True, True, False, True])), 4)
    0.1458
    """
    return float(risk_coverage_curve(confidence, correct)["risk"].mean())


def optimal_aurc(error_rate: float, n: int) -> float:
    """AURC of the best ranking (every correct prediction first) for ``n`` examples with ``round(error_rate·n)`` errors.

    With ``r`` errors the ``i``-th prefix holds ``max(0, i − (n − r))`` errors, so
    ``AURC* = (1/n) Σ_i max(0, i − n + r) / i`` (≈ ``e + (1 − e)·ln(1 − e)`` for error rate ``e``).

    >>> optimal_aurc(0.0, 10), round(optimal_aurc(0.5, 4), 4)
    (0.0, 0.2083)
    """
    error_rate = check_probability("error_rate", error_rate)
    n = as_int("n", n, minimum=1)
    r = int(round(error_rate * n))
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((i - (n - r)).clamp_min(0) / i).mean())


def excess_aurc(confidence: Any, correct: Any) -> float:
    """E-AURC: :func:`aurc` minus :func:`optimal_aurc` at the same error rate (0 = a perfect ranking).

    >>> excess_aurc(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([True, True, False]))
    0.0
    """
    conf = _as_1d_float("confidence", confidence)
    ok = _as_correct(correct, conf.shape[0])
    n = conf.shape[0]
    n_err = int((~ok).sum())
    return aurc(conf, ok) - optimal_aurc(n_err / n, n)


def selective_risk(confidence: Any, correct: Any, coverage: float) -> float:
    """The error rate on the ``⌈coverage·N⌉`` most confident examples (ties broken in expectation).

    >>> selective_risk(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([True, True, False, True]), 0.5)
    0.0
    """
    coverage = check_probability("coverage", coverage, low_open=True)
    curve = risk_coverage_curve(confidence, correct)
    n = curve["risk"].shape[0]
    k = max(1, math.ceil(coverage * n - 1e-9))
    return float(curve["risk"][k - 1])


def pnorm_logit_score(logits: torch.Tensor, p: float = 2.0, *, center: bool = True,
                      temperature: float | None = None) -> torch.Tensor:
    """Confidence from ``p``-norm-normalised logits: MaxLogit-pNorm, or MSP-pNorm when ``temperature`` is given.

    ``ẑ = z_c / ‖z_c‖_p`` with ``z_c = z − mean_k(z)`` (``center=True``) or ``z_c = z``; returns
    ``max_k ẑ_k`` (``temperature=None``) or ``max_k softmax(ẑ / τ)_k``. Shapes: logits ``(N, K)`` → ``(N,)`` float64
    (in float32 confident rows would tie).
    ``p`` is a positive real or ``math.inf``; rows whose (centred) logits are all zero get score
    ``0`` (MaxLogit) / ``1/K`` (MSP) instead of dividing by zero. The score is unchanged by scaling
    the logits by any positive factor (and, with ``center=True``, by adding a constant to them).

    >>> z = torch.tensor([[3.0, 1.0, 1.0], [30.0, 10.0, 10.0]])
    >>> [round(v, 4) for v in pnorm_logit_score(z, p=2).tolist()]
    [0.8165, 0.8165]
    """
    logits = _check_matrix("logits", logits)
    p = as_real("p", p, finite=False)
    if math.isnan(p) or p <= 0:
        raise ValueError(f"p must be a positive real number or math.inf, got {p!r}")
    if not isinstance(center, bool):
        raise TypeError(f"center must be True or False, got {center!r}")
    z = logits.double()
    if center:
        z = z - z.mean(dim=1, keepdim=True)
    norm = torch.linalg.vector_norm(z, ord=float(p), dim=1, keepdim=True)
    zhat = torch.where(norm > 0, z / norm.clamp_min(1e-300), torch.zeros_like(z))
    if temperature is None:
        return zhat.amax(dim=1)
    temperature = check_probability("temperature", temperature, high=math.inf, low_open=True)
    return (zhat / temperature).softmax(dim=1).amax(dim=1)


def select_pnorm(logits: torch.Tensor, labels: torch.Tensor, ps: Iterable[float] = tuple(range(1, 10)), *,
                 center: bool = True) -> dict[str, Any]:
    """Choose ``p`` for MaxLogit-pNorm by the AURC it gives on held-out ``logits (N, K)``, ``labels (N,)``.

    Returns ``{"p": best p, "aurc": {p: AURC for each p}, "msp_aurc": AURC of the plain MSP}``. Ties go
    to the first ``p`` of ``ps``. Fit it on validation data, then score test data with the chosen ``p``.

    >>> z = torch.tensor([[3.0, 0.0, 0.0], [0.2, 0.1, 0.0], [2.0, 1.9, 0.0]]); y = torch.tensor([0, 1, 0])
    >>> r = select_pnorm(z, y, ps=(1, 2, 8))
    >>> sorted(r["aurc"]), r["p"] in (1, 2, 8)
    ([1, 2, 8], True)
    """
    logits = _check_matrix("logits", logits)
    labels = _check_labels(labels, logits.shape[0], logits.shape[1])
    ps = list(ps)
    if not ps:
        raise ValueError("ps is empty; give at least one p, e.g. ps=(1, 2, 4)")
    correct = logits.argmax(1) == labels
    table = {p: aurc(pnorm_logit_score(logits, p, center=center), correct) for p in ps}
    best = min(ps, key=lambda p: (table[p], ps.index(p)))
    return {"p": best, "aurc": table, "msp_aurc": aurc(msp_score(logits), correct)}


def selective_report(logits: torch.Tensor, labels: torch.Tensor, confidence: torch.Tensor | None = None,
                     coverages: Sequence[float] = (0.8,)) -> dict[str, float]:
    """Accuracy, AURC, E-AURC and the selective risk at the given coverages of one confidence score.

    ``confidence`` ``(N,)`` defaults to the MSP (:func:`msp_score`) of ``logits (N, K)``; ``labels``
    ``(N,)``. Keys: ``acc``, ``aurc``, ``e_aurc`` and ``risk@80`` (for coverage 0.8, and so on).

    >>> z = torch.tensor([[3.0, 0.0], [0.1, 0.0], [2.0, 0.0]]); y = torch.tensor([0, 1, 0])
    >>> selective_report(z, y)["acc"]
    0.6666666666666666
    """
    logits = _check_matrix("logits", logits)
    labels = _check_labels(labels, logits.shape[0], logits.shape[1])
    conf = msp_score(logits) if confidence is None else confidence
    correct = logits.argmax(1) == labels
    out = {"acc": float(correct.double().mean()), "aurc": aurc(conf, correct), "e_aurc": excess_aurc(conf, correct)}
    for c in coverages:
        out[f"risk@{round(100 * c)}"] = selective_risk(conf, correct, c)
    return out
