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

>>> logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]]); labels = torch.tensor([0, 1, 1])
>>> round(accuracy(logits, labels), 4)
0.6667
>>> sorted(calibration_report(logits, labels))
['acc', 'ece', 'mce', 'nll']
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from ._validate import check_finite, check_positive, check_tensor

__all__ = [
    "accuracy", "nll", "expected_calibration_error", "max_calibration_error", "calibration_bins",
    "calibration_report", "fit_temperature", "temperature_scaled_report", "plot_reliability",
    "msp_score", "max_logit_score", "energy_score", "ood_metrics",
]

# How far rows of ``probs`` may be from summing to 1 (a float32 softmax is within ~1e-6).
_SUM_TOL = 1e-3
# Temperatures searched by fit_temperature: log T in [log T_MIN, log T_MAX].
_T_MIN, _T_MAX = 1e-2, 1e2


# --------------------------------------------------------------------------------------------- checks
def _as_tensor(name: str, value: Any) -> torch.Tensor:
    """Accept a tensor or a numpy array (converted without copying where possible)."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    return check_tensor(name, value)


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
    y = torch.from_numpy(np.ascontiguousarray(labels)) if isinstance(labels, np.ndarray) else labels
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
    if isinstance(temperature, torch.Tensor) and temperature.numel() == 1:
        temperature = temperature.item()
    t = check_positive("temperature", temperature)
    if not math.isfinite(t):
        raise ValueError(f"temperature must be finite, got {temperature}")
    return float(t)


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


def max_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """MCE = max over non-empty bins of |acc(B_m) − conf(B_m)| (same bins as :func:`expected_calibration_error`).

    Equals ``torchmetrics``' ``MulticlassCalibrationError(..., norm="max")`` under the same proviso.

    >>> max_calibration_error(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]), n_bins=2)
    0.25
    """
    _, count, acc_sum, conf_sum = _binned(probs, labels, n_bins)
    full = count > 0
    return float(np.max(np.abs(acc_sum[full] - conf_sum[full]) / count[full]))


def calibration_report(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
                       temperature: float = 1.0) -> dict[str, float]:
    """Accuracy, NLL, ECE and MCE of ``softmax(logits / temperature)``, as plain floats.

    ``logits``: ``(N, K)``; ``labels``: ``(N,)`` int64. Returns ``{"acc", "nll", "ece", "mce"}``
    (``acc``, ``ece``, ``mce`` in [0, 1]; ``nll`` in nats). Computed in float64.

    >>> r = calibration_report(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), temperature=2.0)
    >>> r["acc"], round(r["nll"], 4)
    (0.5, 0.6437)
    """
    z, y = _check_logits_labels(logits, labels)
    z = z / _check_temperature(temperature)
    probs = z.softmax(1)
    return {"acc": accuracy(z, y), "nll": nll(z, y), "ece": expected_calibration_error(probs, y, n_bins),
            "mce": max_calibration_error(probs, y, n_bins)}


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
                              test_labels: torch.Tensor, n_bins: int = 15) -> dict[str, float]:
    """Temperature scaling end to end: fit ``T`` on validation logits, report test metrics before and after.

    ``val_logits`` ``(N_val, K)``, ``val_labels`` ``(N_val,)``; ``test_logits`` ``(N_test, K)``,
    ``test_labels`` ``(N_test,)``. Returns plain floats: ``temperature`` (:func:`fit_temperature`
    on the validation set), ``val_ece`` (validation ECE at ``T = 1``, for choosing hyper-parameters
    without touching the test set), the test ``acc``, ``nll``, ``ece``, ``mce`` at ``T = 1`` and
    ``nll_ts``, ``ece_ts``, ``mce_ts`` at the fitted ``T`` (the accuracy does not change).

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
    before = calibration_report(zt, yt, n_bins)
    after = calibration_report(zt, yt, n_bins, temperature=t)
    return {"temperature": t, "val_ece": calibration_report(zv, yv, n_bins)["ece"], **before,
            "nll_ts": after["nll"], "ece_ts": after["ece"], "mce_ts": after["mce"]}


def plot_reliability(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, ax: Any = None,
                     title: str | None = None, legend: bool = True) -> Any:
    """Reliability diagram: per-bin accuracy (bars) against confidence, the gap to the diagonal shaded.

    ``probs``: ``(N, K)`` probabilities; ``labels``: ``(N,)`` int64. Blue bars: accuracy of each
    non-empty bin; red hatched bars: the gap between the bin's mean confidence and its accuracy
    (above the bar: over-confident; inside it: under-confident); dashed diagonal: perfect
    calibration. The ECE (in %) is written in the corner. Draws on ``ax`` (``None`` = a new
    figure) and returns it; ``legend=False`` leaves the legend out (e.g. to draw one for a grid of
    diagrams with ``fig.legend(*ax.get_legend_handles_labels())``).

    >>> ax = plot_reliability(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]))  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    b = calibration_bins(probs, labels, n_bins)
    ece = expected_calibration_error(probs, labels, n_bins)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    if not isinstance(legend, bool):
        raise TypeError(f"legend must be True or False, got {legend!r}")
    full = b["count"] > 0
    left, width = b["lower"][full], (b["upper"] - b["lower"])[full]
    acc, conf = b["accuracy"][full], b["confidence"][full]
    ax.bar(left, acc, width=width, align="edge", color="tab:blue", edgecolor="black", linewidth=0.6,
           label="accuracy")
    ax.bar(left, conf - acc, bottom=acc, width=width, align="edge", color="tab:red", alpha=0.3,
           edgecolor="tab:red", hatch="//", linewidth=0.6, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence (max softmax probability)")
    ax.set_ylabel("accuracy")
    ax.text(0.04, 0.96, f"ECE = {100 * ece:.2f}%", transform=ax.transAxes, va="top", ha="left",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
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
