"""Label-smoothed losses written by hand from their formulas, the other libraries' conventions, and checks.

For logits ``z`` with ``p = softmax(z)``, class weights ``w`` (all ones by default) and smoothing ``ε``,
the loss of one example of class ``y`` is

    (1 - ε) · w_y · (-log p_y)  +  (ε / K) · Σ_k w_k · (-log p_k),

which, without weights, is the cross-entropy ``H(q', p)`` against the smoothed target
``q' = (1 - ε)·onehot(y) + ε/K``. :func:`smoothed_cross_entropy` computes exactly what
``torch.nn.functional.cross_entropy(..., label_smoothing=ε)`` computes (the tests compare them on
hundreds of random cases), but from this formula, so a reader can see every term.

Also here:

* the other conventions' losses: :func:`fairseq_smoothed_nll_loss` (true class ``1 - ε``, others ``ε/(K-1)``),
  :func:`annotated_transformer_loss` (``KLDivLoss`` against ``ε/(K-2)`` targets with a padding token) and
  :func:`smoothed_bce_with_logits` (YOLOv5's binary smoothing);
* the optimal logit gap under label smoothing, in closed form (:func:`optimal_logit_gap`) and found by
  minimising the loss over a free logit vector (:func:`numeric_logit_gap`);
* a test helper that catches a ``label_smoothing`` knob that does nothing
  (:func:`smoothing_changes_loss`, :func:`assert_smoothing_has_effect`);
* the losses that later chapters train with: knowledge distillation (:func:`distillation_loss`,
  Hinton et al. 2015), adaptive label smoothing (:func:`als_loss`, Xu et al. 2024), an ε that follows a
  schedule over training (:class:`ScheduledSmoothingLoss`) and online label smoothing
  (:class:`OnlineLabelSmoothingLoss`, Zhang et al. 2021);
* the **loss registry** of the trainer: a model's loss is plain data, e.g. ``{"name": "ls", "epsilon": 0.1}``
  (so that it can be hashed into the cache key), turned into a callable by :func:`build_loss`. Registered:
  ``ce``, ``ls``, ``distill``, ``distill_ls``, ``als``, ``ls_schedule``, ``online_ls``.

**NaN and infinity.** No loss here checks its logits for NaN or infinity (that would force a device
synchronisation at every step): like PyTorch's losses, they propagate them, and a NaN logit gives a NaN loss.
The trainer stops with a ``FloatingPointError`` when an epoch's loss is not finite.
Class indices may have any integer dtype (``int32`` is converted to ``int64``); logits and targets on
different devices raise a ``ValueError`` that names both devices.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._validate import (as_real, check_choice, check_class_indices, check_finite, check_int, check_labels_1d,
                        check_logits_2d, check_num_classes, check_positive, check_probability, check_same_device,
                        check_tensor)
from .models import forward_logits
from .targets import annotated_transformer_targets, smooth_binary_targets

__all__ = ["smoothed_cross_entropy", "fairseq_smoothed_nll_loss", "annotated_transformer_loss",
           "smoothed_bce_with_logits", "optimal_logit_gap", "numeric_logit_gap", "smoothing_changes_loss",
           "assert_smoothing_has_effect",
           "distillation_loss", "DistillationLoss", "SmoothedDistillationLoss",
           "als_loss", "non_max_std", "als_term_gradient_norm",
           "epsilon_at", "SCHEDULES", "ScheduledSmoothingLoss", "class_soft_targets", "OnlineLabelSmoothingLoss",
           "register_loss", "build_loss", "validate_loss_spec", "available_losses", "LossContext", "smoothing_spec",
           "loss_factory"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_logits_target(logits: torch.Tensor, target: torch.Tensor) -> bool:
    """Validate shapes; return True for probability (soft) targets, False for class indices."""
    check_tensor("logits", logits, floating=True, min_dim=2)
    check_num_classes(logits.shape[1], name="logits.shape[1] (the number of classes)")
    check_tensor("target", target)
    check_same_device(logits=logits, target=target)
    if target.is_floating_point():
        if target.dim() == logits.dim() and target.shape != logits.shape:
            raise ValueError(f"target of class probabilities must have the shape of logits {tuple(logits.shape)}, "
                             f"got {tuple(target.shape)}")
        if target.shape != logits.shape:
            raise TypeError(
                f"target is a float tensor of shape {tuple(target.shape)}: a float target must be class probabilities "
                f"of the same shape as logits {tuple(logits.shape)}; pass class indices as an integer (torch.long) "
                f"tensor of shape {(logits.shape[0],) + tuple(logits.shape[2:])} instead")
        return True
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must hold integer class indices (torch.long) or float probabilities, got {target.dtype}")
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target of class indices must have shape {expected} for logits of shape "
                         f"{tuple(logits.shape)} (classes on dim 1), got {tuple(target.shape)}")
    return False


def _check_weight(weight: torch.Tensor | None, num_classes: int) -> None:
    if weight is None:
        return
    check_tensor("weight", weight, floating=True)
    if weight.shape != (num_classes,):
        raise ValueError(f"weight must have shape ({num_classes},) (one weight per class), "
                         f"got {tuple(weight.shape)}")
    check_finite("weight", weight)


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                           weight: torch.Tensor | None = None, ignore_index: int = -100,
                           reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy with label smoothing ``ε``, written from the formula; equals ``F.cross_entropy(..., label_smoothing=ε)``.

    Args:
        logits: ``(N, K)`` or ``(N, K, d1, ..., dm)`` (e.g. ``(batch, vocabulary, tokens)``), floating point, ``K >= 2``.
        target: class indices ``(N,)`` / ``(N, d1, ..., dm)`` (integer), or class probabilities of the same
            shape as ``logits`` (float; then ``ignore_index`` cannot be ``>= 0``, as in PyTorch — and note
            that PyTorch then ignores nothing: every position counts).
        epsilon: smoothing ``ε`` in ``[0, 1]``.
        weight: optional ``(K,)`` class weights. As in PyTorch, the smoothing term uses every class's weight
            and ``reduction="mean"`` divides by the summed weight of the targets (class indices) or by the
            number of positions (probabilities).
        ignore_index: target value whose positions contribute nothing (class indices only). If every
            position is ignored, ``"mean"`` is ``nan`` (0/0) and ``"sum"`` is 0, as in PyTorch.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (then the shape is that of ``target`` without ``K``).

    Returns:
        a scalar tensor, or ``(N,)`` / ``(N, d1, ..., dm)`` for ``reduction="none"``.

    Raises:
        TypeError: non-tensor inputs, integer logits, float class labels of the wrong shape, integer weights.
        ValueError: ``ε`` outside ``[0, 1]``, ``K < 2``, a class index outside ``[0, K)``, mismatched shapes,
            ``weight`` not of shape ``(K,)``, negative probabilities, ``ignore_index >= 0`` with probabilities,
            an unknown ``reduction``.

    >>> logits = torch.tensor([[0.1, 0.1, 0.8, 0.1, 0.1]])
    >>> smoothed_cross_entropy(logits, torch.tensor([2]), epsilon=0.1)
    tensor(1.1500)
    """
    soft = _check_logits_target(logits, target)
    epsilon = check_probability("epsilon", epsilon)
    check_choice("reduction", reduction, _REDUCTIONS)
    check_int("ignore_index", ignore_index)
    num_classes = logits.shape[1]
    _check_weight(weight, num_classes)
    # broadcast a (K,) vector along dim 1 of (N, K, d1, ...)
    w = None if weight is None else weight.to(logits.dtype).view((1, num_classes) + (1,) * (logits.dim() - 2))
    logp = logits.log_softmax(dim=1)

    if soft:
        if ignore_index >= 0:
            raise ValueError(f"ignore_index={ignore_index} cannot be combined with probability targets "
                             "(PyTorch does not support it either); drop those positions or use class indices")
        check_finite("target", target)
        if (target < 0).any():
            raise ValueError("probability targets must be >= 0")
        q = target.to(logits.dtype) * (1.0 - epsilon) + epsilon / num_classes          # smoothed soft target
        per = -(logp * q * (w if w is not None else 1.0)).sum(dim=1)                   # -Σ_k w_k q'_k log p_k
        if reduction == "none":
            return per
        return per.sum() if reduction == "sum" else per.sum() / per.numel()

    check_class_indices("target", target, num_classes, ignore_index=ignore_index)
    keep = target != ignore_index
    safe = target.masked_fill(~keep, 0).long()
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)                     # -log p_y, shape of target
    smooth = -(logp * w).sum(dim=1) if w is not None else -logp.sum(dim=1)  # Σ_k w_k (-log p_k)
    w_y = weight.to(logits.dtype)[safe] if weight is not None else torch.ones_like(nll)
    w_y = w_y * keep
    per = (1.0 - epsilon) * w_y * nll + (epsilon / num_classes) * smooth * keep
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.sum() / w_y.sum()


# --------------------------------------------------------------------------------------- other conventions
def fairseq_smoothed_nll_loss(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                              ignore_index: int | None = None, reduction: str = "sum") -> torch.Tensor:
    """fairseq's label-smoothed NLL: targets ``1 - ε`` for the true class and ``ε/(K-1)`` for each other class.

    Per position: ``(1 - ε - ε/(K-1))·(-log p_y) + ε/(K-1)·Σ_k (-log p_k)``. It equals
    :func:`smoothed_cross_entropy` with ``ε_torch = ε·K/(K-1)`` (:func:`lsutils.convert_epsilon`).

    Args:
        logits: ``(N, K)`` or ``(N, K, d1, ..., dm)``, floating point.
        target: class indices ``(N,)`` / ``(N, d1, ..., dm)``.
        epsilon: ``ε`` in ``[0, 1]`` (fairseq's ``--label-smoothing``).
        ignore_index: padding index whose positions contribute nothing (``None``: none).
        reduction: ``"sum"`` (fairseq's default), ``"mean"`` (over non-ignored positions) or ``"none"``.

    Returns:
        a scalar tensor, or the shape of ``target`` for ``reduction="none"``.

    >>> z = torch.zeros(1, 4)
    >>> round(float(fairseq_smoothed_nll_loss(z, torch.tensor([1]), 0.1)), 4)   # log 4 for uniform p
    1.3863
    """
    if _check_logits_target(logits, target):
        raise TypeError(f"target must hold integer class indices (torch.long), got dtype {target.dtype}")
    epsilon = check_probability("epsilon", epsilon)
    check_choice("reduction", reduction, _REDUCTIONS)
    if ignore_index is not None:
        check_int("ignore_index", ignore_index)
    num_classes = logits.shape[1]
    check_class_indices("target", target, num_classes, ignore_index=ignore_index)
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    logp = logits.log_softmax(dim=1)
    nll = -logp.gather(1, target.masked_fill(~keep, 0).long().unsqueeze(1)).squeeze(1)
    smooth = -logp.sum(dim=1)
    eps_i = epsilon / (num_classes - 1)
    per = ((1.0 - epsilon - eps_i) * nll + eps_i * smooth) * keep
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.sum() / keep.sum()


def annotated_transformer_loss(logits: torch.Tensor, target: torch.Tensor, epsilon: float, padding_idx: int,
                               reduction: str = "sum") -> torch.Tensor:
    """The Annotated Transformer's loss: ``KLDivLoss(reduction="sum")(log_softmax(logits), q')``.

    ``q'`` is :func:`lsutils.annotated_transformer_targets` (true ``1 - ε``, other real tokens ``ε/(K-2)``,
    padding column and padded rows 0). Because it is a KL divergence, it differs from the cross-entropy against
    the same ``q'`` by the entropy ``H(q')`` of every non-padded row, a constant: the gradients are equal.

    Args:
        logits: ``(N, K)``, floating point (``K`` = vocabulary size, padding included).
        target: token indices ``(N,)``.
        epsilon: ``ε`` in ``[0, 1]``.
        padding_idx: the padding token's index.
        reduction: ``"sum"`` (as in the Annotated Transformer, which divides by the token count afterwards),
            ``"mean"`` (sum over the non-padded rows divided by their number) or ``"none"`` (one value per row).

    Returns:
        a scalar tensor, or ``(N,)`` for ``reduction="none"``.
    """
    check_tensor("logits", logits, floating=True, min_dim=2)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, K) (flatten token sequences first), got {tuple(logits.shape)}")
    check_tensor("target", target, floating=False)
    if tuple(target.shape) != (logits.shape[0],):
        raise ValueError(f"target must have shape ({logits.shape[0]},) for logits of shape {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    check_choice("reduction", reduction, _REDUCTIONS)
    q = annotated_transformer_targets(target, logits.shape[1], epsilon, padding_idx, dtype=logits.dtype)
    per = F.kl_div(logits.log_softmax(dim=1), q, reduction="none").sum(dim=1)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / (target != padding_idx).sum()


def smoothed_bce_with_logits(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                             pos_weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy with logits against YOLOv5-smoothed targets (``1 → 1 - ε/2``, ``0 → ε/2``).

    Args:
        logits: float tensor of any shape (one sigmoid output per entry).
        target: 0/1 labels of the same shape (multi-label or one-hot).
        epsilon: ``ε`` in ``[0, 1]``.
        pos_weight: optional, passed to ``F.binary_cross_entropy_with_logits``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        a scalar tensor, or the shape of ``logits`` for ``reduction="none"``.
    """
    check_tensor("logits", logits, floating=True)
    check_tensor("target", target)
    if target.shape != logits.shape:
        raise ValueError(f"target must have the shape of logits {tuple(logits.shape)}, got {tuple(target.shape)}")
    check_choice("reduction", reduction, _REDUCTIONS)
    t = smooth_binary_targets(target, epsilon).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, t, pos_weight=pos_weight, reduction=reduction)


# ------------------------------------------------------------------------------------------- the logit gap
def optimal_logit_gap(num_classes: int, alpha: float) -> float:
    """The logit gap (true class minus any other) that minimises the label-smoothed loss: ``log(1 + K(1-α)/α)``.

    The smoothed cross-entropy ``H(q', softmax(z))`` is minimised at ``softmax(z) = q'``, so
    ``z_y - z_k = log(q'_y / q'_k) = log((1 - α + α/K) / (α/K))``. Plain cross-entropy (``α = 0``) has no
    minimiser: the gap is unbounded (returned as ``inf``).

    Args:
        num_classes: ``K >= 2``.
        alpha: smoothing ``α`` (= ``ε``) in ``[0, 1]`` (PyTorch convention).

    >>> round(optimal_logit_gap(10, 0.1), 2)
    4.51
    """
    num_classes = check_num_classes(num_classes)
    alpha = check_probability("alpha", alpha)
    if alpha == 0.0:
        return math.inf
    return math.log1p(num_classes * (1.0 - alpha) / alpha)


def numeric_logit_gap(num_classes: int, alpha: float, steps: int = 200, seed: int = 0) -> float:
    """The optimal logit gap found numerically: minimise ``H(q', softmax(z))`` over a free logit vector ``z``.

    ``z ∈ R^K`` starts at a seeded random point; L-BFGS (strong Wolfe line search, float64) runs at most
    ``steps`` iterations on the loss of one example of class 0. Returns ``z_0 - mean(z_1, ..., z_{K-1})``
    (at the optimum all the other logits are equal). Compare with :func:`optimal_logit_gap`.

    Args:
        num_classes: ``K >= 2``.
        alpha: smoothing ``α`` in ``(0, 1]`` (``α = 0`` has no finite optimum).
        steps: maximum L-BFGS iterations (``>= 1``).
        seed: seed of the starting point.

    >>> round(numeric_logit_gap(10, 0.1), 2)
    4.51
    """
    num_classes = check_num_classes(num_classes)
    alpha = check_probability("alpha", alpha)
    if alpha == 0.0:
        raise ValueError("alpha must be > 0: with alpha=0 (plain cross-entropy) the loss has no finite minimiser, "
                         "the logit gap grows without bound")
    steps = int(check_positive("steps", steps, integer=True, minimum=1))
    gen = torch.Generator().manual_seed(check_int("seed", seed))
    z = torch.randn(1, num_classes, generator=gen, dtype=torch.float64).requires_grad_(True)
    y = torch.zeros(1, dtype=torch.long)
    opt = torch.optim.LBFGS([z], lr=1.0, max_iter=steps, tolerance_grad=1e-12, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = smoothed_cross_entropy(z, y, alpha)
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # a K-vector: extra intra-op threads only add overhead
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    z = z.detach()[0]
    return float(z[0] - z[1:].mean())


# ---------------------------------------------------------------------------- does the knob do anything?
def smoothing_changes_loss(make_loss: Callable[[float], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
                           epsilon: float = 0.1, logits: torch.Tensor | None = None,
                           target: torch.Tensor | None = None, num_classes: int = 10, batch_size: int = 32,
                           seed: int = 0, tol: float = 1e-6) -> dict[str, float | bool]:
    """Measure whether a loss's smoothing argument changes its value and its gradient.

    ``make_loss(ε)`` must return a loss ``loss(logits, target) -> scalar``, e.g.
    ``lambda eps: torch.nn.CrossEntropyLoss(label_smoothing=eps)``. The loss is evaluated with ``ε = 0`` and with
    ``epsilon`` on the same inputs (seeded random logits ``(batch_size, num_classes)`` and labels if none are
    given). A knob that is accepted but never used (YOLOv8's ``label_smoothing``) changes neither.

    Args:
        make_loss: factory from ``ε`` to a loss callable.
        epsilon: the smoothing to compare with ``0`` (``(0, 1]``).
        logits, target: optional inputs ``(N, K)`` float and ``(N,)`` long (both or neither).
        num_classes, batch_size, seed: sizes and seed of the random inputs.
        tol: the smallest change that counts (absolute, on the loss and on the largest gradient entry).

    Returns:
        dict with ``loss_0``, ``loss_eps``, ``loss_change`` (absolute), ``grad_change`` (max absolute difference
        of the gradients w.r.t. the logits), ``loss_changed``, ``grad_changed`` and ``changed`` (the gradient,
        which is what training sees, changed).
    """
    if not callable(make_loss):
        raise TypeError(f"make_loss must be callable (epsilon -> loss function), got {type(make_loss).__name__}")
    epsilon = check_probability("epsilon", epsilon, low_open=True)
    if (logits is None) != (target is None):
        raise ValueError("pass both logits and target, or neither (then seeded random ones are used)")
    if logits is None:
        num_classes = check_num_classes(num_classes)
        batch_size = int(check_positive("batch_size", batch_size, integer=True, minimum=1))
        gen = torch.Generator().manual_seed(check_int("seed", seed))
        logits = 2.0 * torch.randn(batch_size, num_classes, generator=gen)
        target = torch.randint(0, num_classes, (batch_size,), generator=gen)
    else:
        _check_logits_target(logits, target)
    results = {}
    for name, eps in (("0", 0.0), ("eps", epsilon)):
        z = logits.detach().clone().requires_grad_(True)
        loss = make_loss(eps)(z, target)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError(f"make_loss({eps})(logits, target) must return a scalar tensor, got "
                            f"{type(loss).__name__}{'' if not isinstance(loss, torch.Tensor) else tuple(loss.shape)}")
        (grad,) = torch.autograd.grad(loss, z)
        results[name] = (float(loss.detach()), grad)
    loss_change = abs(results["eps"][0] - results["0"][0])
    grad_change = float((results["eps"][1] - results["0"][1]).abs().max())
    return {"loss_0": results["0"][0], "loss_eps": results["eps"][0], "loss_change": loss_change,
            "grad_change": grad_change, "loss_changed": loss_change > tol, "grad_changed": grad_change > tol,
            "changed": grad_change > tol}


def assert_smoothing_has_effect(make_loss: Callable[[float], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
                                epsilon: float = 0.1, **kwargs: Any) -> dict[str, float | bool]:
    """Raise ``AssertionError`` unless smoothing ``epsilon`` changes the loss's gradient (see :func:`smoothing_changes_loss`).

    Put it in a test suite next to any loss or trainer that takes a ``label_smoothing`` argument::

        def test_label_smoothing_is_used():
            assert_smoothing_has_effect(lambda eps: MyLoss(label_smoothing=eps))

    Returns the measurements when the check passes.
    """
    r = smoothing_changes_loss(make_loss, epsilon, **kwargs)
    if not r["changed"]:
        raise AssertionError(
            f"label smoothing has no effect: with epsilon=0 and epsilon={epsilon} the gradient w.r.t. the logits "
            f"differs by at most {r['grad_change']:.3g} and the loss by {r['loss_change']:.3g} "
            f"({r['loss_0']:.6g} vs {r['loss_eps']:.6g}); is the argument passed on to the loss?")
    return r


# --------------------------------------------------------------------------------------------- distillation
def _check_temperature(temperature: Any, name: str = "temperature") -> float:
    t = as_real(name, temperature)
    if t <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (e.g. 1, 2, 4), got {t}")
    return t


def _check_beta(beta: Any) -> float:
    try:
        return check_probability("beta", beta)
    except ValueError as exc:
        raise ValueError(f"{exc} (1 = teacher targets only, 0 = hard labels only)") from None


def _check_pair(student: Any, teacher: Any) -> None:
    check_logits_2d("student_logits", student)
    check_logits_2d("teacher_logits", teacher)
    if teacher.shape != student.shape:
        raise ValueError(f"teacher_logits must have the shape of student_logits {tuple(student.shape)}, "
                         f"got {tuple(teacher.shape)}")
    check_same_device(student_logits=student, teacher_logits=teacher)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None,
                      temperature: float, beta: float = 1.0, epsilon: float = 0.0) -> torch.Tensor:
    """Knowledge distillation: ``β · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − β) · CE_ε(s, y)``, batch mean.

    Args:
        student_logits: ``(B, K)`` float, the student's logits ``s`` (gradients flow through these).
        teacher_logits: ``(B, K)`` float, the teacher's logits ``t`` (treated as constants: detached).
        target: ``(B,)`` integer hard labels ``y``; may be ``None`` when ``beta == 1`` (teacher targets only).
        temperature: ``T > 0``; both distributions are softened by ``T`` and the KL term is scaled by ``T²``
            (which keeps the soft-target gradients' size roughly independent of ``T``; Hinton et al. 2015).
        beta: weight of the teacher's soft targets in ``[0, 1]``: 1 = teacher only, 0 = hard labels only.
        epsilon: label smoothing of the hard-label term (PyTorch's convention); 0 = plain cross-entropy.

    Returns a scalar tensor. The KL term is summed over classes and averaged over the batch.

    >>> s = torch.tensor([[2.0, 0.0, -1.0]]); t = torch.tensor([[3.0, 1.0, -2.0]])
    >>> distillation_loss(s, s, None, temperature=2.0, beta=1.0)
    tensor(0.)
    >>> round(float(distillation_loss(s, t, torch.tensor([0]), temperature=1.0, beta=0.0)), 4)  # = CE(s, 0)
    0.1698
    """
    _check_pair(student_logits, teacher_logits)
    temperature = _check_temperature(temperature)
    beta = _check_beta(beta)
    epsilon = check_probability("epsilon", epsilon)
    if target is None:
        if beta < 1.0:
            raise ValueError(f"target (hard labels) is needed when beta < 1 (the hard-label term has weight "
                             f"1 - beta = {1 - beta:g}); pass target=None only with beta=1")
    else:
        check_labels_1d("target", target, student_logits.shape[0], student_logits.shape[1])
        check_same_device(student_logits=student_logits, target=target)
    return _distill(student_logits, teacher_logits, target, temperature, beta, epsilon)


def _distill(s: torch.Tensor, t: torch.Tensor, target: torch.Tensor | None, temperature: float, beta: float,
             epsilon: float) -> torch.Tensor:
    loss = s.new_zeros(())
    if beta > 0:
        log_p_s = F.log_softmax(s / temperature, dim=1)
        log_p_t = F.log_softmax(t.detach().to(s.dtype) / temperature, dim=1)
        loss = loss + beta * temperature ** 2 * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    if beta < 1:
        loss = loss + (1.0 - beta) * F.cross_entropy(s, target.long(), label_smoothing=epsilon)
    return loss


class DistillationLoss:
    """The trainer loss behind ``{"name": "distill", ...}``: :func:`distillation_loss` against a fixed teacher.

    ``teacher``: the trained teacher (put in eval mode and frozen); ``train_x``: ``(N, C, H, W)`` the training
    inputs the trainer indexes (``batch.index`` refers to its rows); ``teacher_logits``: ``(N, K)`` the teacher's
    logits on ``train_x`` (computed here when not given). A ``wants_batch`` loss: for a batch whose inputs are
    ``train_x[batch.index]`` it looks the teacher's logits up; for an augmented batch (``batch.x`` differs) it runs
    the teacher on ``batch.x`` (the same augmented view the student sees, as Beyer et al. 2022 recommend).
    Whether the trainer augments is checked batch by batch during the first epoch; after an epoch without a
    difference the lookup is used without further checks. ``epsilon`` smooths the hard-label term (``beta < 1``).

    >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    >>> x = torch.randn(8, 1, 2, 2)
    >>> loss = DistillationLoss(teacher, x, temperature=2.0, beta=1.0)
    >>> from lsutils.train import Batch
    >>> student_logits = teacher(x[:4]).detach()      # a student that already agrees with its teacher
    >>> round(float(loss(student_logits, torch.zeros(4, dtype=torch.long), Batch(x[:4], torch.arange(4)))), 6)
    0.0
    """

    wants_batch = True

    def __init__(self, teacher: nn.Module, train_x: torch.Tensor, temperature: float, beta: float = 1.0,
                 teacher_logits: torch.Tensor | None = None, epsilon: float = 0.0) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        check_tensor("train_x", train_x, floating=True, min_dim=2)
        self.temperature = _check_temperature(temperature)
        self.beta = _check_beta(beta)
        self.epsilon = check_probability("epsilon", epsilon)
        self.teacher = teacher.eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.train_x = train_x
        if teacher_logits is None:
            teacher_logits = self._teacher_on(train_x)
        check_tensor("teacher_logits", teacher_logits, floating=True)
        if teacher_logits.dim() != 2 or teacher_logits.shape[0] != train_x.shape[0]:
            raise ValueError(f"teacher_logits must have shape ({train_x.shape[0]}, K) (one row per training "
                             f"example), got {tuple(teacher_logits.shape)}")
        self.teacher_logits = teacher_logits.to(train_x.device)
        self.augmented = False      # set True at the first batch whose inputs are not train_x[index]
        self._checking = True       # compare inputs during the first epoch only

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Trainer hook: stop checking for augmentation after one epoch without a difference."""
        if epoch >= 1:
            self._checking = False

    def _teacher_on(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits on inputs ``x``, in the trainer's arithmetic (bf16 where it trains in bf16)."""
        with torch.no_grad():
            return torch.cat([forward_logits(self.teacher, x[i:i + 2048], x.device) for i in range(0, x.shape[0], 2048)])

    def teacher_batch(self, batch: Any) -> torch.Tensor:
        """The teacher's logits ``(B, K)`` for a trainer batch: looked up for plain inputs, computed on augmented ones.

        ``batch`` has ``.x`` (the inputs the student sees) and ``.index`` (their rows in ``train_x``). Losses built on
        this one (e.g. a student trained on the teacher's argmax labels) use it to get the teacher's view of a batch.
        """
        if not (hasattr(batch, "x") and hasattr(batch, "index")):
            raise TypeError(f"the distillation loss needs the batch (with .x and .index) as its third argument, "
                            f"got {type(batch).__name__}")
        index = batch.index.to(self.teacher_logits.device)
        if not self.augmented and self._checking:
            plain = self.train_x.index_select(0, index.to(self.train_x.device))
            if plain.shape != batch.x.shape or not torch.equal(plain.to(batch.x.device), batch.x):
                self.augmented = True
        return self._teacher_on(batch.x) if self.augmented else self.teacher_logits.index_select(0, index)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, batch: Any) -> torch.Tensor:
        teacher = self.teacher_batch(batch)
        return _distill(logits, teacher.to(logits.device), target, self.temperature, self.beta, self.epsilon)


# The book's distillation-with-LS trainer loss is the same class with ``epsilon`` > 0 on the hard-label term.
SmoothedDistillationLoss = DistillationLoss


# --------------------------------------------------------------------------------------------- adaptive LS
def _check_lam(lam: Any) -> float:
    lam = as_real("lam (λ)", lam)
    if lam < 0:
        raise ValueError(f"lam (λ) must be a finite number >= 0, got {lam}")
    return lam


def _non_max_std(probs: torch.Tensor) -> torch.Tensor:
    """Per-row population std of the K-1 non-maximal entries of ``probs`` (N, K), differentiable, (N,).

    The square root is not differentiable at 0: below the dtype's smallest normal number the term is set to 0
    with a zero gradient (always the case for K = 2); above it the gradient is bounded by 1/sqrt(K-1)."""
    k = probs.shape[1]
    keep = torch.ones_like(probs).scatter_(1, probs.argmax(dim=1, keepdim=True), 0.0)   # 0 at k = argmax, else 1
    mean = (probs * keep).sum(dim=1, keepdim=True) / (k - 1)           # p̄ over the K-1 non-maximal entries
    var = ((probs - mean) * keep).pow(2).sum(dim=1) / (k - 1)           # 1/(K-1) Σ_{i≠k} (p_i - p̄)²
    floor = torch.finfo(var.dtype).tiny
    return var.clamp_min(floor).sqrt() * (var > floor)


def non_max_std(logits: torch.Tensor) -> torch.Tensor:
    """The ALS regulariser per example: std of the ``K-1`` non-maximal softmax probabilities, shape ``(N,)``.

    ``logits``: ``(N, K)`` floating point. Differentiable (it is the term :func:`als_loss` adds); 0 for rows
    whose non-maximal probabilities are exactly equal, and always for ``K = 2``.

    >>> non_max_std(torch.tensor([[2.0, 0.0, 0.0], [2.0, 1.0, 0.0]])).round(decimals=4)
    tensor([0.0000, 0.0773])
    """
    check_logits_2d("logits", logits)
    return _non_max_std(logits.softmax(dim=1))


def als_loss(logits: torch.Tensor, target: torch.Tensor, lam: float, reduction: str = "mean") -> torch.Tensor:
    """Adaptive label smoothing (Xu et al. 2024): cross-entropy plus ``λ`` × the std of the non-maximal probabilities.

    ``L = -log p_y + λ · sqrt(1/(K-1) · Σ_{i≠k} (p_i - p̄)²)`` with ``p = softmax(logits)``, ``k = argmax p``
    (the *predicted* class: the true class once an example is learned, the wrong one on a misclassified
    example) and ``p̄`` the mean of the ``K-1`` non-maximal probabilities (the paper's ``N`` read as ``K``).

    Args:
        logits: ``(N, K)`` floating point, ``K >= 2`` (for ``K = 2`` the regulariser is identically 0).
        target: ``(N,)`` integer class indices in ``[0, K)``.
        lam: ``λ >= 0``, the weight of the regulariser (``0`` = plain cross-entropy). The paper gives none.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per example, shape ``(N,)``).

    >>> logits = torch.tensor([[3.0, 1.0, 0.0, 0.0]]); y = torch.tensor([0])
    >>> round(float(als_loss(logits, y, lam=0.0)), 4) == round(float(F.cross_entropy(logits, y)), 4)
    True
    >>> round(float(als_loss(logits, y, lam=1.0) - als_loss(logits, y, lam=0.0)), 4)   # std of (0.110, 0.040, 0.040)
    0.0327
    """
    check_logits_2d("logits", logits)
    check_labels_1d("target", target, logits.shape[0], logits.shape[1])
    check_same_device(logits=logits, target=target)
    lam = _check_lam(lam)
    check_choice("reduction", reduction, _REDUCTIONS)
    ce = F.cross_entropy(logits, target.long(), reduction="none")
    per = ce + lam * _non_max_std(logits.softmax(dim=1)) if lam > 0 else ce
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.mean()


def als_term_gradient_norm(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """How hard each part of the ALS loss pulls on each example: gradient norms with respect to its logits.

    Returns ``(N,)`` float64 tensors (computed in float64): ``"ce"`` = ‖∂(-log p_y)/∂z‖, ``"std"`` =
    ‖∂ std_nonmax/∂z‖ (before multiplying by λ), ``"std_value"`` (the regulariser) and ``"p_max"``.

    >>> g = als_term_gradient_norm(torch.tensor([[1.0, 0.5, 0.0], [9.0, 0.5, 0.0]]), torch.tensor([0, 0]))
    >>> bool(g["std"][1] < g["std"][0])
    True
    """
    check_logits_2d("logits", logits)
    check_labels_1d("target", target, logits.shape[0], logits.shape[1])
    z = logits.detach().double().requires_grad_(True)
    p = z.softmax(dim=1)
    ce = F.cross_entropy(z, target.long().to(z.device), reduction="none")
    std = _non_max_std(p)
    (g_ce,) = torch.autograd.grad(ce.sum(), z, retain_graph=True)     # rows are independent: sum = per-row grads
    (g_std,) = torch.autograd.grad(std.sum(), z)
    return {"ce": g_ce.norm(dim=1), "std": g_std.norm(dim=1), "std_value": std.detach(),
            "p_max": p.detach().max(dim=1).values}


# --------------------------------------------------------------------------------------------- ε schedules
SCHEDULES = ("constant", "linear", "cosine")
_GRANULARITIES = ("step", "epoch")
_OLS_INITS = ("zeros", "uniform", "ls")


def epsilon_at(progress: float, epsilon: float, schedule: str = "linear", final_epsilon: float = 0.0) -> float:
    """The smoothing strength after a fraction ``progress`` ∈ [0, 1] of training.

    ``schedule``: ``"constant"`` (always ``epsilon``), ``"linear"`` (``ε_f + (ε₀ − ε_f)(1 − t)``) or
    ``"cosine"`` (``ε_f + (ε₀ − ε_f)(1 + cos πt)/2``), from ``epsilon`` at 0 to ``final_epsilon`` at 1.

    >>> epsilon_at(0.0, 0.1, "linear"), epsilon_at(0.5, 0.1, "linear"), epsilon_at(0.5, 0.1, "cosine")
    (0.1, 0.05, 0.05)
    >>> round(epsilon_at(0.25, 0.1, "cosine"), 4), epsilon_at(0.9, 0.1, "constant")
    (0.0854, 0.1)
    """
    progress = check_probability("progress", progress)
    epsilon = check_probability("epsilon", epsilon)
    final_epsilon = check_probability("final_epsilon", final_epsilon)
    _check_str_choice("schedule", schedule, SCHEDULES)
    if schedule == "constant":
        return epsilon
    factor = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return final_epsilon + (epsilon - final_epsilon) * factor


def _check_str_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {list(allowed)}; got {type(value).__name__}")
    return check_choice(name, value, allowed)


def _check_epoch(epoch: int, epochs: int) -> None:
    """The trainer's ``start_epoch(epoch, epochs)`` arguments: ints with ``0 <= epoch < epochs``."""
    epoch, epochs = check_int("epoch", epoch), check_int("epochs", epochs)
    if epochs < 1 or not 0 <= epoch < epochs:
        raise ValueError(f"need 0 <= epoch < epochs and epochs >= 1, got epoch={epoch}, epochs={epochs}")


class ScheduledSmoothingLoss:
    """Label-smoothed cross-entropy whose ``ε`` follows :func:`epsilon_at` over training.

    Call ``start_epoch(epoch, epochs)`` before every epoch (the trainer does), then ``loss(logits (B, K),
    target (B,))`` for every batch. ``n_train`` (the number of training examples, one pass per epoch) makes the
    schedule advance per step; without it, or with ``granularity="epoch"``, ``ε`` changes only at epoch
    boundaries. ``last_epsilon`` holds the ``ε`` of the latest call and ``trace`` every ``ε`` used.

    >>> loss = ScheduledSmoothingLoss(0.1, "linear", n_train=4)
    >>> loss.start_epoch(0, 2)
    >>> logits, y = torch.zeros(2, 3), torch.tensor([0, 1])
    >>> _ = loss(logits, y); _ = loss(logits, y)      # 0 and 2 of 4 examples seen
    >>> [round(e, 4) for e in loss.trace]
    [0.1, 0.075]
    """

    def __init__(self, epsilon: float, schedule: str = "linear", final_epsilon: float = 0.0,
                 n_train: int | None = None, granularity: str = "step") -> None:
        self.epsilon = check_probability("epsilon", epsilon)
        self.final_epsilon = check_probability("final_epsilon", final_epsilon)
        self.schedule = _check_str_choice("schedule", schedule, SCHEDULES)
        self.granularity = _check_str_choice("granularity", granularity, _GRANULARITIES)
        self.n_train = None if n_train is None else check_int("n_train", n_train, minimum=1)
        self.epoch: int | None = None
        self.epochs: int | None = None
        self.seen = 0
        self.last_epsilon: float | None = None
        self.trace: list[float] = []

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Tell the loss that epoch ``epoch`` (0-based) of ``epochs`` begins."""
        _check_epoch(epoch, epochs)
        self.epoch, self.epochs, self.seen = int(epoch), int(epochs), 0

    def progress(self) -> float:
        """The fraction of training done before the current batch, in [0, 1)."""
        if self.epoch is None or self.epochs is None:
            raise RuntimeError("call loss.start_epoch(epoch, epochs) before each epoch (the lsutils trainer does); "
                               "a schedule needs to know where in training it is")
        within = min(self.seen / self.n_train, 1.0) if self.granularity == "step" and self.n_train else 0.0
        return min((self.epoch + within) / self.epochs, 1.0)

    def current_epsilon(self) -> float:
        """``ε`` for the next batch."""
        return epsilon_at(self.progress(), self.epsilon, self.schedule, self.final_epsilon)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        eps = self.current_epsilon()
        self.seen += int(target.shape[0]) if isinstance(target, torch.Tensor) and target.dim() > 0 else 1
        self.last_epsilon = eps
        self.trace.append(eps)
        return F.cross_entropy(logits, target.long(), label_smoothing=eps)


def class_soft_targets(probs: torch.Tensor, target: torch.Tensor, num_classes: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The online-LS update: per class, the mean predicted distribution of its *correctly classified* examples.

    ``probs``: ``(N, K)`` softmax outputs; ``target``: ``(N,)`` integer labels. Returns ``(S, counts)``: ``S``
    ``(K, K)`` whose row ``k`` is the mean of ``probs[i]`` over the examples with ``target[i] == k == argmax
    probs[i]`` (uniform ``1/K`` where class ``k`` has none), and ``counts`` ``(K,)``.

    >>> p = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    >>> S, n = class_soft_targets(p, torch.tensor([0, 0, 1, 1]))
    >>> S, n
    (tensor([[0.7000, 0.3000],
            [0.3000, 0.7000]]), tensor([2., 1.]))
    """
    check_tensor("probs", probs, floating=True)
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (N, K), got {tuple(probs.shape)}")
    check_tensor("target", target, floating=False)
    if target.shape != probs.shape[:1]:
        raise ValueError(f"target must have shape ({probs.shape[0]},) to match probs {tuple(probs.shape)}, "
                         f"got {tuple(target.shape)}")
    check_same_device(probs=probs, target=target)
    k = probs.shape[1] if num_classes is None else check_num_classes(num_classes)
    if probs.shape[1] != k:
        raise ValueError(f"probs has {probs.shape[1]} columns but num_classes={k}")
    check_class_indices("target", target, k)
    sums = torch.zeros(k, k, dtype=probs.dtype, device=probs.device)
    counts = torch.zeros(k, dtype=probs.dtype, device=probs.device)
    _accumulate_correct(sums, counts, probs, target.long())
    return _normalise_rows(sums, counts), counts


def _accumulate_correct(sums: torch.Tensor, counts: torch.Tensor, probs: torch.Tensor, target: torch.Tensor) -> None:
    correct = probs.argmax(1) == target
    y = target[correct]
    sums.index_add_(0, y, probs[correct].to(sums.dtype))
    counts.index_add_(0, y, torch.ones_like(y, dtype=counts.dtype))


def _normalise_rows(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    uniform = torch.full_like(sums, 1.0 / sums.shape[0])
    return torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], uniform)


class OnlineLabelSmoothingLoss:
    """Online label smoothing (Zhang et al. 2021): ``α·CE(y) + (1-α)·H(S[y], p)`` with ``S`` learned per epoch.

    ``S`` (``K × K``, row ``k`` = the soft target of class ``k``) is the mean softmax of the examples the model
    classified correctly during the previous epoch (:func:`class_soft_targets`). ``S`` of the first epoch:
    ``init="zeros"`` (the paper's code: the first epoch trains on ``α``·CE alone), ``"uniform"`` or ``"ls"``
    (label-smoothed one-hot rows with ``init_epsilon``). ``matrix`` is the ``S`` in use; ``history`` holds a
    CPU copy of every ``S`` that was used for an epoch.

    >>> loss = OnlineLabelSmoothingLoss(alpha=0.5, init="ls", init_epsilon=0.1)
    >>> loss.start_epoch(0, 2)
    >>> logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    >>> round(float(loss(logits, y)), 4)
    0.7326
    >>> loss.start_epoch(1, 2)
    >>> loss.matrix        # class 0: mean softmax of its one correct example; class 1: none, uniform
    tensor([[0.8808, 0.1192],
            [0.5000, 0.5000]])
    """

    def __init__(self, alpha: float = 0.5, init: str = "zeros", init_epsilon: float = 0.1) -> None:
        self.alpha = check_probability("alpha", alpha)
        self.init = _check_str_choice("init", init, _OLS_INITS)
        self.init_epsilon = check_probability("init_epsilon", init_epsilon)
        self.matrix: torch.Tensor | None = None
        self.history: list[torch.Tensor] = []
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self._epoch: int | None = None

    def _initial(self, k: int, device: torch.device) -> torch.Tensor:
        if self.init == "zeros":
            return torch.zeros(k, k, device=device)
        if self.init == "uniform":
            return torch.full((k, k), 1.0 / k, device=device)
        return (1.0 - self.init_epsilon) * torch.eye(k, device=device) + self.init_epsilon / k

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Begin epoch ``epoch``: the statistics gathered since the last call become ``S`` (if any were gathered)."""
        _check_epoch(epoch, epochs)
        if self._sums is not None and self._epoch is not None and epoch > 0:
            self.matrix = _normalise_rows(self._sums, self._counts)
            self.history.append(self.matrix.detach().cpu().clone())
        if self._sums is not None:
            self._sums.zero_()
            self._counts.zero_()
        self._epoch = int(epoch)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_logits_2d("logits", logits)
        check_tensor("target", target, floating=False)
        if target.shape != logits.shape[:1]:
            raise ValueError(f"target must have shape ({logits.shape[0]},), got {tuple(target.shape)}")
        check_same_device(logits=logits, target=target)
        k = logits.shape[1]
        if self.matrix is None:
            self.matrix = self._initial(k, logits.device)
            self.history.append(self.matrix.detach().cpu().clone())
            self._sums = torch.zeros(k, k, device=logits.device)
            self._counts = torch.zeros(k, device=logits.device)
        elif self.matrix.shape[0] != k:
            raise ValueError(f"logits have {k} classes but this loss has learned soft targets for {self.matrix.shape[0]}")
        target = target.long()
        logp = logits.float().log_softmax(1)
        hard = F.nll_loss(logp, target)
        soft = -(self.matrix[target] * logp).sum(1).mean()
        with torch.no_grad():
            _accumulate_correct(self._sums, self._counts, logp.detach().exp(), target)
        return self.alpha * hard + (1.0 - self.alpha) * soft


# --------------------------------------------------------------------------------------------- the registry
_LOSSES: dict[str, Callable[..., Any]] = {}


@dataclass
class LossContext:
    """What a loss factory may need beyond its own hyper-parameters, given by the trainer.

    ``train_x``/``train_y``: the training tensors (as the trainer will index them); ``device``: where training
    runs; ``load_model``: a callable taking a run spec (a :class:`~lsutils.train.RunSpec` or its dict) and
    returning the trained (cached) ``nn.Module`` — distillation uses it to get its teacher.
    """
    train_x: Any = None
    train_y: Any = None
    device: Any = None
    load_model: Callable[[Any], Any] | None = None


def register_loss(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``factory(**hyper_parameters, [context])`` under ``name`` for the trainer.

    The factory validates its hyper-parameters and returns a callable ``loss(logits (B, K), y (B,)) -> scalar``
    (optionally with ``start_epoch(epoch, epochs)`` and ``wants_batch = True``, see :func:`lsutils.fit`). Called
    with ``context=None`` it must only validate (it may then return ``None``): that is how a
    :class:`~lsutils.train.RunSpec` checks its loss when it is built. The source file of a factory registered
    outside ``lsutils`` is part of the cache key of the models trained with it.

    >>> @register_loss("my_ce")
    ... def _my_ce(context=None):
    ...     return lambda logits, y: F.cross_entropy(logits, y)
    >>> "my_ce" in available_losses()
    True
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"loss name must be a non-empty str, got {name!r}")

    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        old = _LOSSES.get(name)
        # re-registering "the same" function (same module and name: a re-run notebook cell, a reloaded module) is fine
        if old is not None and (old.__module__, old.__qualname__) != (factory.__module__, factory.__qualname__):
            raise ValueError(f"a loss named {name!r} is already registered ({old.__module__}.{old.__qualname__})")
        _LOSSES[name] = factory
        return factory

    return decorate


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss`, sorted.

    >>> [n for n in available_losses() if n in ("ce", "ls", "als")]
    ['als', 'ce', 'ls']
    """
    return sorted(_LOSSES)


def loss_factory(name: str) -> Callable[..., Any]:
    """The factory registered under ``name`` (``ValueError`` listing the registered names if unknown)."""
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered losses are {available_losses()}")
    return _LOSSES[name]


def build_loss(spec: Mapping[str, Any], context: LossContext | None = None) -> Any:
    """Build a loss callable from ``{"name": ..., **hyper_parameters}``; ``context=None`` only validates.

    >>> build_loss({"name": "ls", "epsilon": 0.1})(torch.zeros(2, 3), torch.tensor([0, 1]))
    tensor(1.0986)
    >>> build_loss({"name": "ls", "epsilon": 2.0})
    Traceback (most recent call last):
    ...
    ValueError: loss 'ls': epsilon must be in [0.0, 1.0], got 2.0
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"loss spec must be a mapping like {{'name': 'ls', 'epsilon': 0.1}}, got {type(spec).__name__}")
    if not isinstance(spec.get("name"), str):
        raise ValueError(f"loss spec needs a str 'name' (e.g. 'ce', 'ls'); got keys {sorted(spec)}")
    params = dict(spec)
    name = params.pop("name")
    factory = loss_factory(name)
    signature = inspect.signature(factory)
    if "context" in signature.parameters:
        params["context"] = context
    try:
        signature.bind(**params)
    except TypeError as exc:  # unknown or missing hyper-parameter names
        allowed = [p for p in signature.parameters if p != "context"]
        raise TypeError(f"bad hyper-parameters for loss {name!r}: {exc}; it takes {allowed}") from None
    try:
        return factory(**params)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"loss {name!r}: {exc}") from None


def validate_loss_spec(spec: Mapping[str, Any]) -> None:
    """Check a loss spec's name and hyper-parameters now (what :class:`~lsutils.train.RunSpec` does when built)."""
    build_loss(spec, None)


def smoothing_spec(epsilon: float) -> dict[str, Any]:
    """The loss spec for smoothing ``epsilon``: ``{"name": "ce"}`` for 0, else ``{"name": "ls", "epsilon": ε}``.

    Build every CE/LS spec through this function, so that "ε = 0" and "plain CE" are one cached model, not two.

    >>> smoothing_spec(0.0), smoothing_spec(0.1)
    ({'name': 'ce'}, {'name': 'ls', 'epsilon': 0.1})
    """
    epsilon = check_probability("epsilon", epsilon)
    return {"name": "ce"} if epsilon == 0.0 else {"name": "ls", "epsilon": epsilon}


@register_loss("ce")
def _ce_loss(context: LossContext | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Plain cross-entropy (``{"name": "ce"}``)."""
    return lambda logits, target: F.cross_entropy(logits, target.long())


@register_loss("ls")
def _ls_loss(epsilon: float, context: LossContext | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Label-smoothed cross-entropy (``{"name": "ls", "epsilon": ε}``), PyTorch's fused built-in.

    :func:`smoothed_cross_entropy` is proven equal to it (``tests/test_losses.py``); that one is for reading.
    """
    epsilon = check_probability("epsilon", epsilon)
    return lambda logits, target: F.cross_entropy(logits, target.long(), label_smoothing=epsilon)


@register_loss("als")
def _als_loss(lam: float, context: LossContext | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Trainer loss ``{"name": "als", "lam": λ}``: :func:`als_loss` with reduction ``"mean"``."""
    lam = _check_lam(lam)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target.long())     # the trainer's inputs are checked once, in fit()
        return ce + lam * _non_max_std(logits.softmax(dim=1)).mean() if lam > 0 else ce

    return loss


@register_loss("ls_schedule")
def _ls_schedule_loss(epsilon: float, schedule: str = "linear", final_epsilon: float = 0.0,
                      granularity: str = "step", context: LossContext | None = None) -> ScheduledSmoothingLoss:
    """``{"name": "ls_schedule", "epsilon": ε₀, "schedule": ..., ["final_epsilon": ε_f], ["granularity": "epoch"]}``."""
    n_train = int(len(context.train_y)) if context is not None and context.train_y is not None else None
    return ScheduledSmoothingLoss(epsilon, schedule, final_epsilon=final_epsilon, n_train=n_train,
                                  granularity=granularity)


@register_loss("online_ls")
def _online_ls_loss(alpha: float = 0.5, init: str = "zeros", init_epsilon: float = 0.1,
                    context: LossContext | None = None) -> OnlineLabelSmoothingLoss:
    """``{"name": "online_ls", "alpha": α, ["init": "zeros" | "uniform" | "ls", "init_epsilon": ε]}``."""
    return OnlineLabelSmoothingLoss(alpha=alpha, init=init, init_epsilon=init_epsilon)


@register_loss("distill")
def _distill_loss(teacher: Mapping[str, Any], temperature: float, beta: float = 1.0, epsilon: float = 0.0,
                  context: LossContext | None = None) -> DistillationLoss | None:
    """``{"name": "distill", "teacher": RunSpec.to_dict(), "temperature": T, "beta": β, ["epsilon": ε]}``.

    The teacher is trained (or loaded from the cache) through ``context.load_model``; its logits on the
    training inputs are computed once. ``epsilon`` smooths the hard-label term (only used when ``beta < 1``).
    """
    temperature = _check_temperature(temperature)
    beta = _check_beta(beta)
    epsilon = check_probability("epsilon", epsilon)
    if not isinstance(teacher, Mapping) or "loss" not in teacher:
        raise TypeError(f"teacher must be the teacher's RunSpec as a dict (RunSpec.to_dict()), got {teacher!r}")
    if context is None:
        return None
    return DistillationLoss(_teacher_from_context(teacher, context, "distill"), context.train_x, temperature,
                            beta, epsilon=epsilon)


def _teacher_from_context(teacher: Mapping, context: LossContext, loss_name: str) -> nn.Module:
    """The teacher model of a distillation-style loss, trained or loaded through ``context.load_model``."""
    if context.load_model is None or context.train_x is None:
        raise ValueError(f"the {loss_name!r} loss needs a LossContext with train_x and load_model (the trainer "
                         "provides one: train it through lsutils.train_model)")
    model = context.load_model(teacher)
    if not isinstance(model, nn.Module):
        raise TypeError(f"context.load_model must return a torch.nn.Module, got {type(model).__name__}")
    return model
