"""Label-smoothed cross-entropy, written by hand from the formula, and the trainer's ``ce``/``ls`` losses.

For logits ``z`` with ``p = softmax(z)``, class weights ``w`` (all ones by default) and smoothing ``ε``,
the loss of one example of class ``y`` is

    (1 - ε) · w_y · (-log p_y)  +  (ε / K) · Σ_k w_k · (-log p_k),

which, without weights, is the cross-entropy ``H(q', p)`` against the smoothed target
``q' = (1 - ε)·onehot(y) + ε/K``. :func:`smoothed_cross_entropy` computes exactly what
``torch.nn.functional.cross_entropy(..., label_smoothing=ε)`` computes (the tests compare them on
hundreds of random cases), but from this formula, so a reader can see every term.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ._validate import (check_choice, check_class_indices, check_finite, check_probability, check_tensor)
from .registry import register_loss

__all__ = ["smoothed_cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_logits_target(logits: torch.Tensor, target: torch.Tensor) -> bool:
    """Validate shapes; return True for probability (soft) targets, False for class indices."""
    check_tensor("logits", logits, floating=True, min_dim=2)
    check_tensor("target", target)
    if target.is_floating_point():
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


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                           weight: torch.Tensor | None = None, ignore_index: int = -100,
                           reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy with label smoothing ``ε``, written from the formula; equals ``F.cross_entropy(..., label_smoothing=ε)``.

    Args:
        logits: ``(N, K)`` or ``(N, K, d1, ..., dm)`` (e.g. token sequences), floating point.
        target: class indices ``(N,)`` / ``(N, d1, ..., dm)`` (integer), or class probabilities of the same
            shape as ``logits`` (float; then ``ignore_index`` cannot be used, as in PyTorch).
        epsilon: smoothing ``ε`` in ``[0, 1]``.
        weight: optional ``(K,)`` class weights. As in PyTorch, the smoothing term uses every class's weight
            and ``reduction="mean"`` divides by the summed weight of the targets (class indices) or by the
            number of positions (probabilities).
        ignore_index: target value whose positions contribute nothing (class indices only).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (then the shape is that of ``target`` without ``K``).

    >>> logits = torch.tensor([[0.1, 0.1, 0.8, 0.1, 0.1]])
    >>> smoothed_cross_entropy(logits, torch.tensor([2]), epsilon=0.1)
    tensor(1.1500)
    """
    soft = _check_logits_target(logits, target)
    epsilon = check_probability("epsilon", epsilon)
    check_choice("reduction", reduction, _REDUCTIONS)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    num_classes = logits.shape[1]
    if weight is not None:
        check_tensor("weight", weight, floating=True)
        if weight.shape != (num_classes,):
            raise ValueError(f"weight must have shape ({num_classes},) (one weight per class), "
                             f"got {tuple(weight.shape)}")
        check_finite("weight", weight)
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
        q = target.to(logits.dtype) * (1.0 - epsilon) + epsilon / num_classes
        per = -(logp * q * (w if w is not None else 1.0)).sum(dim=1)
        if reduction == "none":
            return per
        return per.sum() if reduction == "sum" else per.sum() / per.numel()

    check_class_indices("target", target, num_classes, ignore_index=ignore_index)
    keep = target != ignore_index
    safe = target.masked_fill(~keep, 0).long()
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)          # -log p_y, shape of target
    smooth = -(logp * w).sum(dim=1) if w is not None else -logp.sum(dim=1)   # Σ_k w_k (-log p_k)
    w_y = weight.to(logits.dtype)[safe] if weight is not None else torch.ones_like(nll)
    w_y = w_y * keep
    per = (1.0 - epsilon) * w_y * nll + (epsilon / num_classes) * smooth * keep
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.sum() / w_y.sum()


# --------------------------------------------------------------------------------------------- trainer losses
@register_loss("ce")
def _ce_loss() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Plain cross-entropy (``{"name": "ce"}``)."""
    return lambda logits, target: F.cross_entropy(logits, target)


@register_loss("ls")
def _ls_loss(epsilon: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Label-smoothed cross-entropy (``{"name": "ls", "epsilon": ε}``).

    Training uses PyTorch's fused built-in, which :func:`smoothed_cross_entropy` is proven equal to
    (``tests/test_losses.py``); the hand-written version is for reading.
    """
    epsilon = check_probability("epsilon", epsilon)
    return lambda logits, target: F.cross_entropy(logits, target, label_smoothing=epsilon)
