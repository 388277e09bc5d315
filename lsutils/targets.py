"""Smoothed target distributions, and the conventions different libraries use for them.

The book's convention is PyTorch's (also timm, Keras, Hugging Face, fastai): for ``K`` classes and
smoothing ``ε``, the target of an example of class ``y`` is

    q'_k = (1 - ε) · 1[k = y] + ε / K,

so the true class gets ``1 - ε + ε/K`` and every other class ``ε/K``.

>>> smooth_targets(torch.tensor([2]), num_classes=5, epsilon=0.1)
tensor([[0.0200, 0.0200, 0.9200, 0.0200, 0.0200]])
"""
from __future__ import annotations

import torch

from ._validate import check_class_indices, check_num_classes, check_probability, check_tensor

__all__ = ["smooth_targets"]


def smooth_targets(target: torch.Tensor, num_classes: int, epsilon: float) -> torch.Tensor:
    """Label-smoothed targets ``(1 - ε)·onehot(target) + ε/K`` (PyTorch's convention).

    Args:
        target: integer class indices, shape ``(N,)`` (or any shape ``S``), values in ``[0, K)``.
        num_classes: ``K >= 2``.
        epsilon: smoothing strength ``ε`` in ``[0, 1]``.

    Returns:
        float32 tensor of shape ``(N, K)`` (``(*S, K)``) whose rows sum to 1.

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
    onehot = torch.nn.functional.one_hot(target.long(), num_classes).to(torch.float32)
    return onehot * (1.0 - epsilon) + epsilon / num_classes
