"""Smoothed target distributions, and the conventions different libraries use for them.

The book's convention is PyTorch's (also timm, Keras, Hugging Face, fastai): for ``K`` classes and
smoothing ``ε``, the target of an example of class ``y`` is

    q'_k = (1 - ε) · 1[k = y] + ε / K,

so the true class gets ``1 - ε + ε/K`` and every other class ``ε/K``.

>>> smooth_targets(torch.tensor([2]), num_classes=5, epsilon=0.1)
tensor([[0.0200, 0.0200, 0.9200, 0.0200, 0.0200]])

Other conventions, each a small function here:

==========================  ==================  ======================  =====================================
convention                  true class          every other class       function
==========================  ==================  ======================  =====================================
PyTorch / timm / Keras / HF ``1 - ε + ε/K``     ``ε/K``                 :func:`smooth_targets`
fairseq                     ``1 - ε``           ``ε/(K-1)``             :func:`fairseq_targets`
Annotated Transformer       ``1 - ε``           ``ε/(K-2)``, pad ``0``  :func:`annotated_transformer_targets`
binary (YOLOv5 smooth_BCE)  ``1 - ε/2``         ``ε/2`` (per output)    :func:`smooth_bce`, :func:`smooth_binary_targets`
==========================  ==================  ======================  =====================================

PyTorch and fairseq describe the same family of targets with different ``ε``;
:func:`convert_epsilon` translates one into the other (``ε_torch = ε_fairseq · K/(K-1)``).
"""
from __future__ import annotations

import torch

from ._validate import check_class_indices, check_finite, check_num_classes, check_probability, check_tensor

__all__ = ["smooth_targets", "smooth_probabilities", "fairseq_targets", "annotated_transformer_targets",
           "smooth_bce", "smooth_binary_targets", "convert_epsilon", "smoothed_target_entropy", "CONVENTIONS"]

#: Names accepted by :func:`convert_epsilon`, mapped to the canonical convention they follow.
CONVENTIONS: dict[str, str] = {
    "torch": "torch", "pytorch": "torch", "timm": "torch", "keras": "torch", "huggingface": "torch",
    "hf": "torch", "fastai": "torch",
    "fairseq": "fairseq",
}


def _float_dtype(dtype: torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}")
    return dtype


def smooth_targets(target: torch.Tensor, num_classes: int, epsilon: float,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """Label-smoothed targets ``(1 - ε)·onehot(target) + ε/K`` (PyTorch's convention).

    Args:
        target: integer class indices, shape ``(N,)`` (or any shape ``S``, a 0-d tensor included),
            values in ``[0, K)``.
        num_classes: ``K >= 2``.
        epsilon: smoothing strength ``ε`` in ``[0, 1]``.
        dtype: floating dtype of the result (default: ``torch.get_default_dtype()``, i.e. float32).

    Returns:
        tensor of shape ``(N, K)`` (``(*S, K)``) whose rows sum to 1, on ``target``'s device.

    Raises:
        TypeError: ``target`` is not an integer tensor, ``num_classes`` not an int, ``epsilon`` not a number.
        ValueError: ``ε`` outside ``[0, 1]``, ``K < 2``, a class index outside ``[0, K)``, or an empty ``target``.

    >>> smooth_targets(torch.tensor([0, 1]), num_classes=2, epsilon=0.2)
    tensor([[0.9000, 0.1000],
            [0.1000, 0.9000]])
    """
    check_tensor("target", target, floating=False)
    num_classes = check_num_classes(num_classes)
    epsilon = check_probability("epsilon", epsilon)
    check_class_indices("target", target, num_classes)
    onehot = torch.nn.functional.one_hot(target.long(), num_classes).to(_float_dtype(dtype))
    return onehot * (1.0 - epsilon) + epsilon / num_classes


def smooth_probabilities(probs: torch.Tensor, epsilon: float, dim: int = -1) -> torch.Tensor:
    """Smooth a probability (soft) target: ``(1 - ε)·probs + ε/K`` along ``dim`` (what PyTorch does to soft targets).

    Args:
        probs: float tensor of class probabilities, ``K = probs.shape[dim] >= 2`` (rows need not sum to 1,
            as in PyTorch; a row of zeros becomes the uniform ``ε/K``).
        epsilon: smoothing ``ε`` in ``[0, 1]``.
        dim: the class dimension (``-1`` for ``(N, K)``; ``1`` for ``(N, K, d1, ...)`` as ``F.cross_entropy`` takes it).

    Returns:
        tensor of the shape and dtype of ``probs``.

    >>> smooth_probabilities(torch.tensor([[0.5, 0.5, 0.0, 0.0]]), epsilon=0.2)
    tensor([[0.4500, 0.4500, 0.0500, 0.0500]])
    """
    check_tensor("probs", probs, floating=True, min_dim=1)
    check_finite("probs", probs)
    if not -probs.dim() <= dim < probs.dim():
        raise ValueError(f"dim must be in [{-probs.dim()}, {probs.dim() - 1}] for probs of shape "
                         f"{tuple(probs.shape)}, got {dim}")
    num_classes = check_num_classes(probs.shape[dim], name=f"probs.shape[{dim}] (the number of classes)")
    epsilon = check_probability("epsilon", epsilon)
    if (probs < 0).any():
        raise ValueError("probs must be >= 0 (class probabilities)")
    return probs * (1.0 - epsilon) + epsilon / num_classes


def fairseq_targets(target: torch.Tensor, num_classes: int, epsilon: float,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """fairseq's smoothed targets: the true class gets ``1 - ε``, each of the other ``K - 1`` classes ``ε/(K-1)``.

    This is the target behind fairseq's ``label_smoothed_nll_loss`` (see :func:`lsutils.fairseq_smoothed_nll_loss`)
    and several papers. It equals :func:`smooth_targets` with ``ε_torch = ε·K/(K-1)``
    (:func:`convert_epsilon`).

    Args:
        target: integer class indices of any shape ``S``, values in ``[0, K)``.
        num_classes: ``K >= 2``.
        epsilon: ``ε`` in ``[0, 1]``.
        dtype: floating dtype of the result (default float32).

    Returns:
        tensor of shape ``(*S, K)``, rows summing to 1.

    >>> fairseq_targets(torch.tensor([0]), num_classes=5, epsilon=0.1)
    tensor([[0.9000, 0.0250, 0.0250, 0.0250, 0.0250]])
    """
    check_tensor("target", target, floating=False)
    num_classes = check_num_classes(num_classes)
    epsilon = check_probability("epsilon", epsilon)
    check_class_indices("target", target, num_classes)
    onehot = torch.nn.functional.one_hot(target.long(), num_classes).to(_float_dtype(dtype))
    off = epsilon / (num_classes - 1)
    return onehot * (1.0 - epsilon - off) + off


def annotated_transformer_targets(target: torch.Tensor, num_classes: int, epsilon: float, padding_idx: int,
                                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """The Annotated Transformer's targets: true class ``1 - ε``, the other real classes ``ε/(K-2)``, padding ``0``.

    ``K`` counts the whole vocabulary, the padding token included. The padding column is zero in every row
    and a row whose target *is* the padding token is all zeros, so padded positions contribute nothing to the
    ``KLDivLoss(reduction="sum")`` of :func:`lsutils.annotated_transformer_loss`. Over the ``K - 1`` real
    classes this is the fairseq convention (:func:`fairseq_targets` with ``K - 1`` classes).

    Args:
        target: integer token indices ``(N,)``, values in ``[0, K)`` (``padding_idx`` marks padding).
        num_classes: vocabulary size ``K >= 3`` (padding + at least two real classes).
        epsilon: ``ε`` in ``[0, 1]``.
        padding_idx: index of the padding token, in ``[0, K)``.
        dtype: floating dtype of the result (default float32).

    Returns:
        tensor of shape ``(N, K)``; rows of real tokens sum to 1, padded rows are 0.

    >>> annotated_transformer_targets(torch.tensor([2, 0]), num_classes=5, epsilon=0.3, padding_idx=0)
    tensor([[0.0000, 0.1000, 0.7000, 0.1000, 0.1000],
            [0.0000, 0.0000, 0.0000, 0.0000, 0.0000]])
    """
    check_tensor("target", target, floating=False)
    num_classes = check_num_classes(num_classes)
    if num_classes < 3:
        raise ValueError(f"num_classes must be >= 3 for the Annotated Transformer's convention (padding + "
                         f"two real classes), got {num_classes}")
    epsilon = check_probability("epsilon", epsilon)
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
        raise TypeError(f"padding_idx must be an int, got {type(padding_idx).__name__}")
    if not 0 <= padding_idx < num_classes:
        raise ValueError(f"padding_idx must be in [0, {num_classes - 1}], got {padding_idx}")
    check_class_indices("target", target, num_classes)
    onehot = torch.nn.functional.one_hot(target.long(), num_classes).to(_float_dtype(dtype))
    off = epsilon / (num_classes - 2)
    dist = onehot * (1.0 - epsilon - off) + off
    dist[..., padding_idx] = 0.0
    return dist.masked_fill((target == padding_idx).unsqueeze(-1), 0.0)


def smooth_bce(epsilon: float = 0.1) -> tuple[float, float]:
    """YOLOv5's ``smooth_BCE``: the (positive, negative) targets ``(1 - ε/2, ε/2)`` for binary cross-entropy.

    Each sigmoid output is its own two-class problem, so this is the PyTorch convention with ``K = 2``.

    >>> smooth_bce(0.1)
    (0.95, 0.05)
    """
    epsilon = check_probability("epsilon", epsilon)
    return 1.0 - 0.5 * epsilon, 0.5 * epsilon


def smooth_binary_targets(target: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Smooth 0/1 (multi-label or one-hot) targets for BCE: ``1 → 1 - ε/2``, ``0 → ε/2`` (as YOLOv5 does).

    Args:
        target: tensor of any shape holding 0s and 1s (bool, integer or float).
        epsilon: ``ε`` in ``[0, 1]``.

    Returns:
        float tensor of the same shape (float32 unless ``target`` is already floating).

    >>> smooth_binary_targets(torch.tensor([[0, 1, 1]]), epsilon=0.1)
    tensor([[0.0500, 0.9500, 0.9500]])
    """
    check_tensor("target", target)
    if target.is_complex():
        raise TypeError(f"target must hold 0/1 labels (bool, integer or float), got dtype {target.dtype}")
    positive, negative = smooth_bce(epsilon)
    t = target.to(target.dtype if target.is_floating_point() else torch.get_default_dtype())
    if not ((t == 0) | (t == 1)).all():
        bad = t[(t != 0) & (t != 1)][0].item()
        raise ValueError(f"target must hold only 0 and 1 (binary labels), got {bad}")
    return t * (positive - negative) + negative


def convert_epsilon(epsilon: float, num_classes: int, from_convention: str = "fairseq",
                    to_convention: str = "torch") -> float:
    """The ``ε`` of one convention that gives exactly the same targets in another.

    The PyTorch convention gives the other classes ``ε_t/K``, fairseq ``ε_f/(K-1)``; equal targets need
    ``ε_t = ε_f · K/(K-1)``. Accepted names: ``"torch"`` (aliases ``"pytorch"``, ``"timm"``, ``"keras"``,
    ``"huggingface"``/``"hf"``, ``"fastai"``) and ``"fairseq"``. The Annotated Transformer's convention is
    fairseq's over the ``K - 1`` non-padding classes: convert it with ``num_classes = K - 1``.

    Args:
        epsilon: ``ε`` in the source convention, in ``[0, 1]``.
        num_classes: ``K >= 2``.
        from_convention, to_convention: convention names (see above).

    Returns:
        ``ε`` in the target convention.

    Raises:
        ValueError: an unknown convention, or a result outside ``[0, 1]`` (e.g. fairseq ``ε > (K-1)/K`` gives the
            true class less than the others, which PyTorch cannot express).

    >>> round(convert_epsilon(0.1, num_classes=5, from_convention="fairseq", to_convention="torch"), 6)
    0.125
    """
    epsilon = check_probability("epsilon", epsilon)
    num_classes = check_num_classes(num_classes)
    canon = []
    for name, value in (("from_convention", from_convention), ("to_convention", to_convention)):
        key = value.lower() if isinstance(value, str) else value
        if key not in CONVENTIONS:
            raise ValueError(f"{name} must be one of {sorted(CONVENTIONS)}, got {value!r}")
        canon.append(CONVENTIONS[key])
    # both conventions are fully described by the mass of each non-true class
    off = {"torch": epsilon / num_classes, "fairseq": epsilon / (num_classes - 1)}[canon[0]]
    out = {"torch": off * num_classes, "fairseq": off * (num_classes - 1)}[canon[1]]
    if out > 1.0 + 1e-12:
        raise ValueError(f"epsilon={epsilon} in the {from_convention!r} convention gives every other class "
                         f"{off:.6g}, which needs epsilon={out:.6g} > 1 in the {to_convention!r} convention "
                         f"(allowed: [0, 1])")
    return min(out, 1.0)


def smoothed_target_entropy(num_classes: int, epsilon: float) -> float:
    """Entropy ``H(q')`` (nats) of a PyTorch-convention smoothed target — the same for every class.

    ``H(q') = -(1 - ε + ε/K)·log(1 - ε + ε/K) - (K - 1)·(ε/K)·log(ε/K)``. It is the smallest value the
    label-smoothed loss can take (reached at ``p = q'``), and the constant by which ``KLDivLoss(q'‖p)``
    and the smoothed cross-entropy ``H(q', p)`` differ.

    >>> round(smoothed_target_entropy(10, 0.1), 4)
    0.5003
    """
    num_classes = check_num_classes(num_classes)
    epsilon = check_probability("epsilon", epsilon)
    q = smooth_targets(torch.tensor(0), num_classes, epsilon, dtype=torch.float64)
    return float(-torch.special.xlogy(q, q).sum())
