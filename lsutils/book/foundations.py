"""Chapters 1 and 2: the mathematics of label smoothing and its implementations.

Nothing here trains a network. The chapters compute everything in visible cells; this module supplies the two
small tools they reuse — the *stochastic* label scheme that label smoothing is the expectation of
(:func:`resample_labels`) and a check for probabilities passed where a loss expects logits
(:func:`looks_like_probabilities`), a way to print a library function's core so that it fits the page
(:func:`source_excerpt`) — and the chapters' figures (:func:`plot_target_schemes`,
:func:`plot_logit_gap`, :func:`plot_double_softmax`).
"""
from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize
from typing import Any, Callable, Mapping, Sequence

import torch

from lsutils._validate import (check_class_indices, check_int, check_num_classes, check_probability,
                               check_tensor)
from lsutils.book.common import md

__all__ = ["md", "resample_labels", "looks_like_probabilities", "source_excerpt", "plot_target_schemes",
           "plot_logit_gap", "plot_double_softmax"]


def resample_labels(target: torch.Tensor, num_classes: int, epsilon: float,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Szegedy et al.'s stochastic reading of label smoothing: keep each label with probability ``1 - ε``, else
    replace it by a class drawn uniformly from all ``K`` (the true class included).

    Drawn afresh at every call (e.g. every epoch), this is a *random* target scheme (DisturbLabel trains this
    way); its expected one-hot target is exactly the smoothed target ``(1 - ε)·onehot(y) + ε/K`` that label
    smoothing uses, deterministically, every time.

    Args:
        target: integer class indices of any shape, values in ``[0, K)``.
        num_classes: ``K >= 2``.
        epsilon: probability of replacing a label, in ``[0, 1]``.
        generator: optional ``torch.Generator`` (on the CPU) for reproducible draws.

    Returns:
        a ``torch.long`` tensor of the shape of ``target``.

    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.full((100_000,), 3)
    >>> drawn = resample_labels(y, num_classes=10, epsilon=0.1, generator=g)
    >>> round((drawn != y).float().mean().item(), 2)      # changed: ε·(K-1)/K = 0.09
    0.09
    """
    check_tensor("target", target, floating=False)
    num_classes = check_num_classes(num_classes)
    epsilon = check_probability("epsilon", epsilon)
    check_class_indices("target", target, num_classes)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    replace = torch.rand(target.shape, generator=generator) < epsilon
    random_class = torch.randint(0, num_classes, target.shape, generator=generator)
    return torch.where(replace.to(target.device), random_class.to(target.device), target.long())


def looks_like_probabilities(outputs: torch.Tensor, dim: int = 1, atol: float = 1e-4) -> bool:
    """Whether ``outputs`` look like probabilities (every entry in ``[0, 1]``, every row summing to 1) rather
    than logits — the check to run on what you pass to ``nn.CrossEntropyLoss``, which expects logits.

    Logits of a trained network practically never pass this test (they are unbounded and their rows sum to
    anything); the output of a softmax always does.

    Args:
        outputs: floating tensor with the classes along ``dim`` (e.g. ``(N, K)``).
        dim: the class dimension.
        atol: tolerance on the row sums.

    >>> z = torch.tensor([[2.0, -1.0, 0.5]])
    >>> looks_like_probabilities(z), looks_like_probabilities(z.softmax(dim=1))
    (False, True)
    """
    check_tensor("outputs", outputs, floating=True, min_dim=1)
    dim = check_int("dim", dim)
    if not -outputs.dim() <= dim < outputs.dim():
        raise ValueError(f"dim must be in [{-outputs.dim()}, {outputs.dim() - 1}] for outputs of shape "
                         f"{tuple(outputs.shape)}, got {dim}")
    atol = check_probability("atol", atol)
    x = outputs.detach()
    in_range = bool(((x >= 0) & (x <= 1)).all())
    return in_range and bool(torch.allclose(x.sum(dim=dim), torch.ones((), dtype=x.dtype), rtol=0, atol=atol))


def _strip_comments(code: str) -> str:
    """``code`` without its ``#`` comments (strings that contain ``#`` are left alone)."""
    comments = [tok for tok in tokenize.generate_tokens(io.StringIO(code).readline) if tok.type == tokenize.COMMENT]
    lines = code.splitlines()
    for tok in reversed(comments):
        row, col = tok.start
        lines[row - 1] = lines[row - 1][:col].rstrip()
    return "\n".join(line for line in lines if line.strip() or not line)


def source_excerpt(function: Callable[..., Any], start: str, width: int = 76) -> str:
    """The source of ``function`` from the first line that contains ``start`` to its end, comments removed,
    dedented, and every line longer than ``width`` continued with Python's ``\\`` — the same code, narrow
    enough to print on a page.

    Raises ``ValueError`` when ``start`` is not in the source or a line cannot be broken (no space before
    ``width`` outside a string).

    >>> def f(x):
    ...     y = x + 1  # one more
    ...     return y
    >>> print(source_excerpt(f, "y = x"))
    y = x + 1
    return y
    """
    if not callable(function):
        raise TypeError(f"function must be a function, got {type(function).__name__}")
    if not isinstance(start, str) or not start:
        raise TypeError("start must be a non-empty str (text of the first line to show)")
    width = check_int("width", width, minimum=20)
    lines = inspect.getsource(function).splitlines()
    first = next((i for i, line in enumerate(lines) if start in line), None)
    if first is None:
        raise ValueError(f"{start!r} does not occur in the source of {getattr(function, '__name__', function)}")
    code = textwrap.dedent(_strip_comments(textwrap.dedent("\n".join(lines[first:]))))
    out = []
    for line in code.splitlines():
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        while len(line) > width:
            cut = _break_point(line, width - 2)
            out.append(line[:cut].rstrip() + " \\")
            line = indent + line[cut:].lstrip()
        out.append(line)
    text = "\n".join(out)
    if ast.dump(ast.parse(text)) != ast.dump(ast.parse(code)):  # pragma: no cover - a break inside a string
        raise ValueError("breaking the long lines changed the code; pass a larger width")
    return text


def _break_point(line: str, limit: int) -> int:
    """The last space before ``limit`` that lies outside a string literal."""
    quote = None
    spaces = []
    for i, ch in enumerate(line[:limit]):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == " " and i > len(line) - len(line.lstrip()):
            spaces.append(i)
    if not spaces:
        raise ValueError(f"cannot break the line {line!r} at a space before column {limit}")
    return spaces[-1]


# ------------------------------------------------------------------------------------------------- figures
def _check_series(name: str, series: Any) -> dict[str, list[float]]:
    if not isinstance(series, Mapping) or not series:
        raise TypeError(f"{name} must be a non-empty mapping from a label to a sequence of numbers")
    out = {}
    for label, values in series.items():
        values = [float(v) for v in values]
        if not values:
            raise ValueError(f"{name}[{label!r}] is empty")
        out[str(label)] = values
    return out


def plot_target_schemes(per_epoch: Mapping[str, Sequence[float]], smoothed: float):
    """The target of the true class of one example, epoch after epoch, under random or noisy label schemes,
    against label smoothing's constant.

    ``per_epoch`` maps a scheme's name to its target on the true class at each epoch (0 or 1 for a one-hot
    label, e.g. one drawn afresh every epoch); each is drawn as markers with its running mean as a line.
    ``smoothed`` (label smoothing's ``1 - ε + ε/K``, the same in every epoch) is drawn as a black line.
    Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    series = _check_series("per_epoch", per_epoch)
    smoothed = check_probability("smoothed", smoothed)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osd^v"
    for i, (label, values) in enumerate(series.items()):
        v = np.asarray(values)
        epochs = np.arange(1, len(v) + 1)
        color = colors[(i + 1) % len(colors)]
        ax.plot(epochs, v, markers[i % len(markers)], ms=3.5, alpha=0.55, color=color, label=f"{label}: each epoch")
        ax.plot(epochs, np.cumsum(v) / epochs, "-", lw=1.8, color=color, label=f"{label}: running mean")
    ax.axhline(smoothed, color="black", lw=2, label=f"label smoothing: {smoothed:.2f} in every epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("target of the true class")
    ax.set_ylim(-0.1, 1.1)
    ax.set_title("One example: the target of its true class, epoch by epoch", fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_logit_gap(alphas: Sequence[float], closed_form: Mapping[int, Sequence[float]],
                   alpha_dots: Sequence[float], numeric: Mapping[int, Sequence[float]]):
    """The optimal logit gap against α (log scale), one line per number of classes ``K`` (the closed form at
    ``alphas``) and circles at ``alpha_dots`` (the numeric minimiser). Returns the ``Figure``."""
    import matplotlib.pyplot as plt

    alphas = [float(a) for a in alphas]
    alpha_dots = [float(a) for a in alpha_dots]
    if not alphas or not alpha_dots or min(alphas + alpha_dots) <= 0:
        raise ValueError("alphas and alpha_dots must be non-empty sequences of positive numbers")
    if not isinstance(closed_form, Mapping) or not isinstance(numeric, Mapping) or \
            set(closed_form) != set(numeric) or not closed_form:
        raise ValueError("closed_form and numeric must be mappings with the same keys (the numbers of classes)")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for k in closed_form:
        curve, dots = [float(v) for v in closed_form[k]], [float(v) for v in numeric[k]]
        if len(curve) != len(alphas) or len(dots) != len(alpha_dots):
            raise ValueError(f"K = {k}: {len(curve)} closed-form values for {len(alphas)} alphas, "
                             f"{len(dots)} numeric values for {len(alpha_dots)} alpha_dots")
        (line,) = ax.plot(alphas, curve, label=f"K = {k}")
        ax.plot(alpha_dots, dots, "o", color=line.get_color(), mfc="none", ms=7)
    ax.axvline(0.1, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("smoothing α (log scale)")
    ax.set_ylabel("optimal logit gap  $z_y - z_k$")
    ax.set_title("The logit gap that minimises the LS loss\n"
                 "(lines: log(1 + K(1-α)/α); circles: L-BFGS on free logits)", fontsize=10)
    ax.legend(title="classes")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_double_softmax(histories: Mapping[str, Mapping[str, Sequence[float]]], floors: Mapping[str, float]):
    """Gradient descent on one example's logits, with the right input to the loss and with probabilities.

    ``histories`` maps a run's name to ``{"loss": [...], "grad_norm": [...], "gap": [...]}`` (per step);
    ``floors`` maps a label to a loss value drawn as a horizontal line in the loss panel (e.g. ``H(q')`` and
    the floor of the double softmax). Three panels: loss, gradient norm (log scale), logit gap.
    Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt

    if not isinstance(histories, Mapping) or not histories:
        raise TypeError("histories must be a non-empty mapping from a run's name to its per-step measurements")
    need = ("loss", "grad_norm", "gap")
    for name, h in histories.items():
        if not isinstance(h, Mapping) or any(k not in h for k in need):
            raise ValueError(f"histories[{name!r}] must hold the keys {need}")
    if not isinstance(floors, Mapping):
        raise TypeError(f"floors must be a mapping from a label to a loss value, got {type(floors).__name__}")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    titles = {"loss": "loss", "grad_norm": "‖gradient‖ w.r.t. the logits (log scale)",
              "gap": "logit gap  $z_y - z_k$"}
    for name, h in histories.items():
        for ax, key in zip(axes, need):
            ax.plot(range(len(h[key])), [float(v) for v in h[key]], lw=1.8, label=name)
    for (label, value), style in zip(floors.items(), (":", "--", "-.")):
        axes[0].axhline(float(value), color="black", lw=1, ls=style, label=f"{label} = {float(value):.2f}")
    axes[1].set_yscale("log")
    for ax, key in zip(axes, need):
        ax.set_title(titles[key], fontsize=10)
        ax.set_xlabel("gradient-descent step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
