"""Argument checks shared by every public function of :mod:`lsutils`.

Each check raises a :class:`TypeError` or :class:`ValueError` whose message names
the argument, the value that was given and what is allowed, so that a reader
never has to decode a CUDA device-side assert or a silent wrong result.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

__all__: list[str] = []  # private helpers; nothing is re-exported


def check_tensor(name: str, value: Any, *, floating: bool | None = None, min_dim: int | None = None,
                 allow_empty: bool = False) -> torch.Tensor:
    """Return ``value`` if it is a tensor of the required kind, else raise.

    ``floating=True`` requires a floating dtype, ``False`` an integer dtype, ``None`` either.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating is True and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (e.g. float32), got dtype {value.dtype}")
    if floating is False and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name} must hold integer class indices (dtype torch.long), got dtype {value.dtype}; "
                        "pass probabilities as a float tensor of the same shape as the logits instead")
    if min_dim is not None and value.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(value.shape)}")
    if not allow_empty and value.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(value.shape)}); at least one element is required")
    return value


def _scalar(name: str, value: Any, *, integer: bool) -> Any:
    """The one rule for scalar arguments: Python and numpy numbers and 0-d (or one-element) tensors alike.

    Booleans are refused (``True`` is not a number here). Returns a Python ``int`` or ``float``.
    """
    what = "an int" if integer else "a real number"
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be {what} (or a 0-d tensor), got a tensor of shape {tuple(value.shape)}")
        if value.dtype == torch.bool or value.is_complex() or (integer and value.is_floating_point()):
            raise TypeError(f"{name} must be {what}, got a tensor of dtype {value.dtype}")
        return value.item()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch
        np = None
    if np is not None and isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bool) or (np is not None and isinstance(value, np.bool_)):
        raise TypeError(f"{name} must be {what}, got a bool ({value!r})")
    if np is not None and isinstance(value, np.integer):
        return int(value)
    if not integer and np is not None and isinstance(value, np.floating):
        return float(value)
    if isinstance(value, int) or (not integer and isinstance(value, float)):
        return value
    raise TypeError(f"{name} must be {what}, got {type(value).__name__} ({value!r})")


def as_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as a Python int: an int, a numpy integer or a 0-d integer tensor (not a bool), at least ``minimum``."""
    value = int(_scalar(name, value, integer=True))
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def as_real(name: str, value: Any, *, finite: bool = True) -> float:
    """``value`` as a Python float: an int, float, numpy number or 0-d real tensor (not a bool); finite unless told."""
    value = float(_scalar(name, value, integer=False))
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """Return ``value`` as an int (see :func:`as_int`) if it is at least ``minimum`` (when given), else raise."""
    return as_int(name, value, minimum)


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise ``ValueError`` if a floating tensor holds NaN or infinity."""
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


def check_probability(name: str, value: Any, *, low: float = 0.0, high: float = 1.0,
                      low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a float (see :func:`as_real`) if it lies in the interval, else raise."""
    value = as_real(name, value, finite=False)
    lo_ok = value > low if low_open else value >= low
    hi_ok = value < high if high_open else value <= high
    if math.isnan(value) or not (lo_ok and hi_ok):
        lb = "(" if low_open else "["
        rb = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lb}{low}, {high}{rb}, got {value}")
    return value


def check_positive(name: str, value: Any, *, integer: bool = False, minimum: float | None = None) -> float | int:
    """Return ``value`` (an int if ``integer``) if it is > 0, or >= ``minimum`` when given; finite."""
    value = as_int(name, value) if integer else as_real(name, value, finite=False)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if minimum is None:
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    elif not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_num_classes(num_classes: Any, name: str = "num_classes") -> int:
    """Return ``num_classes`` as an int if it is an integer >= 2."""
    num_classes = as_int(name, num_classes)
    if num_classes < 2:
        raise ValueError(f"{name} must be >= 2 (label smoothing needs at least two classes), got {num_classes}")
    return num_classes


def check_class_indices(name: str, target: torch.Tensor, num_classes: int,
                        ignore_index: int | None = None) -> torch.Tensor:
    """Raise ``ValueError`` if any index (other than ``ignore_index``) lies outside ``[0, num_classes)``."""
    values = target if ignore_index is None else target[target != ignore_index]
    if values.numel():
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            extra = f" (or ignore_index={ignore_index})" if ignore_index is not None else ""
            raise ValueError(f"{name} holds class index {bad}, but indices must be in [0, {num_classes - 1}]{extra}")
    return target


def check_logits_2d(name: str, logits: Any, *, finite: bool = False) -> torch.Tensor:
    """Return ``logits`` if it is a floating ``(N, K)`` tensor with ``K >= 2`` (and finite, if asked), else raise."""
    check_tensor(name, logits, floating=True)
    if logits.dim() != 2:
        raise ValueError(f"{name} must have shape (N, K), got {tuple(logits.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"{name} must have at least K = 2 classes (dim 1), got shape {tuple(logits.shape)}")
    if finite:
        check_finite(name, logits)
    return logits


def check_labels_1d(name: str, labels: Any, n: int, num_classes: int) -> torch.Tensor:
    """Return ``labels`` if it holds ``n`` integer class indices ``(n,)`` in ``[0, num_classes)``, else raise."""
    check_tensor(name, labels, floating=False)
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one class index per row of the logits), "
                         f"got {tuple(labels.shape)}")
    return check_class_indices(name, labels, num_classes)


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def progress_bar(*args: Any, **kwargs: Any):
    """A tqdm progress bar: the notebook widget where ipywidgets is installed (e.g. Colab), else the text bar.

    ``tqdm.auto`` in a Jupyter kernel without ipywidgets warns "IProgress not found" and falls back to text;
    choosing the text bar ourselves gives the same bar without the warning.
    """
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(*args, **kwargs)


def check_same_device(**tensors: Any) -> None:
    """Raise ``ValueError`` naming the devices when the given tensors are not all on one device."""
    devices = {name: t.device for name, t in tensors.items() if isinstance(t, torch.Tensor)}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"tensors must be on the same device, got {listed}; move them with .to(device)")
