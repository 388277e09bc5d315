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
* the trainer's registered losses ``{"name": "ce"}`` and ``{"name": "ls", "epsilon": ε}``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ._validate import (check_choice, check_class_indices, check_finite, check_int, check_num_classes, check_positive,
                        check_probability, check_tensor)
from .registry import register_loss
from .targets import annotated_transformer_targets, smooth_binary_targets

__all__ = ["smoothed_cross_entropy", "fairseq_smoothed_nll_loss", "annotated_transformer_loss",
           "smoothed_bce_with_logits", "optimal_logit_gap", "numeric_logit_gap", "smoothing_changes_loss",
           "assert_smoothing_has_effect"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_logits_target(logits: torch.Tensor, target: torch.Tensor) -> bool:
    """Validate shapes; return True for probability (soft) targets, False for class indices."""
    check_tensor("logits", logits, floating=True, min_dim=2)
    check_num_classes(logits.shape[1], name="logits.shape[1] (the number of classes)")
    check_tensor("target", target)
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
