"""The penultimate layer under label smoothing: Müller, Kornblith & Hinton (2019), Figure 1, and its measurements.

The paper writes the logit of class ``k`` as a (negative) squared distance to a *template* ``w_k``,
the ``k``-th row of the final layer's weight::

    z_k = x·w_k + b_k = -½‖x - w_k‖² + c_k + ½‖x‖²,   c_k = b_k + ½‖w_k‖²       (1)

``½‖x‖²`` is the same for every class and cancels in the softmax, so when the offsets ``c_k`` are
equal the classifier is exactly "the nearest template wins". Our models have a free bias and
unnormalised templates, so ``c_k`` differ: the distance picture is an approximation whose error is
the spread of ``c_k`` (:func:`template_offsets` measures it).

To draw the picture, pick three classes ``a, b, c``; their templates span an affine plane with the
orthonormal basis (:func:`template_plane_basis`)::

    u1 = (w_b - w_a) / ‖w_b - w_a‖,   u2 = r / ‖r‖,  r = (w_c - w_a) - ((w_c - w_a)·u1) u1,

and every activation is projected onto it, ``((x - w_a)·u1, (x - w_a)·u2)`` (:func:`project_to_plane`).
The differences of the three logits, ``z_b - z_a = (w_b - w_a)·x + b_b - b_a`` and ``z_c - z_a``, depend
on ``x`` only through this projection, so the plane shows everything that decides between the three
classes (up to the constant biases).

What the picture claims is measured with scale-free numbers (:func:`cluster_tightness`,
:func:`equidistance`, :func:`logit_gaps`), in the plane and in the full penultimate space.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from ._validate import check_class_indices, check_finite, check_num_classes, check_positive, check_tensor

__all__ = ['template_plane_basis', 'project_to_plane', 'classifier_templates', 'template_offsets', 'sample_per_class', 'project_classes', 'cluster_tightness', 'equidistance', 'logit_gaps', 'template_subspace_basis']


# --------------------------------------------------------------------------------------------- checks
def _check_vector(name: str, value: Any) -> torch.Tensor:
    check_tensor(name, value, floating=True)
    if value.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor (D,), got shape {tuple(value.shape)}")
    check_finite(name, value)
    return value


def _check_points_labels(points: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("points", points, floating=True)
    if points.dim() != 2:
        raise ValueError(f"points must have shape (N, d), got {tuple(points.shape)}")
    check_finite("points", points)
    check_tensor("labels", labels, floating=False)
    if labels.dim() != 1 or labels.shape[0] != points.shape[0]:
        raise ValueError(f"labels must have shape (N,) = ({points.shape[0]},) to match points, "
                         f"got {tuple(labels.shape)}")
    return points, labels


def _resolve_classes(classes: Any, class_names: Sequence[str] | None = None, *, count: int | None = None,
                     num_classes: int | None = None) -> list[int]:
    """Class indices from indices or names (names need ``class_names``); no duplicates."""
    if isinstance(classes, (str, int)) or not isinstance(classes, Sequence):
        raise TypeError(f"classes must be a sequence of class indices or names, got {classes!r}")
    out: list[int] = []
    for c in classes:
        if isinstance(c, str):
            if class_names is None or c not in class_names:
                raise ValueError(f"class name {c!r} is unknown; allowed: {list(class_names or [])}")
            out.append(list(class_names).index(c))
        elif isinstance(c, int) and not isinstance(c, bool):
            out.append(c)
        else:
            raise TypeError(f"classes must hold ints or names, got {type(c).__name__} ({c!r})")
    limit = num_classes if num_classes is not None else (len(class_names) if class_names is not None else None)
    for c in out:
        if c < 0 or (limit is not None and c >= limit):
            raise ValueError(f"class index {c} is out of range [0, {limit}) in classes={list(classes)}")
    if len(set(out)) != len(out):
        raise ValueError(f"classes must be distinct, got {list(classes)}")
    if count is not None and len(out) != count:
        raise ValueError(f"classes must name exactly {count} classes, got {len(out)}: {list(classes)}")
    return out


# --------------------------------------------------------------------------------------------- the plane
def template_plane_basis(w_a: torch.Tensor, w_b: torch.Tensor, w_c: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis ``(D, 2)`` of the plane through three templates (Gram–Schmidt, Müller et al. 2019).

    Column 0 is ``u1 = (w_b - w_a)/‖w_b - w_a‖``; column 1 is ``w_c - w_a`` with its ``u1`` component
    removed, normalised. Computed in float64, returned in the dtype of ``w_a``.

    Args:
        w_a, w_b, w_c: templates, 1-D float tensors of the same shape ``(D,)``, ``D >= 2``.

    Raises:
        TypeError: a template is not a floating tensor.
        ValueError: shapes differ, ``D < 2``, NaN/inf, or the three templates are (nearly) collinear
        (no unique plane: the residual is below ``1e-6`` of their scale).

    >>> B = template_plane_basis(torch.tensor([0., 0, 0]), torch.tensor([2., 0, 0]), torch.tensor([1., 3, 0]))
    >>> B.T
    tensor([[1., 0., 0.],
            [0., 1., 0.]])
    """
    for name, w in (("w_a", w_a), ("w_b", w_b), ("w_c", w_c)):
        _check_vector(name, w)
    if not (w_a.shape == w_b.shape == w_c.shape):
        raise ValueError(f"w_a, w_b, w_c must have the same shape (D,), got {tuple(w_a.shape)}, "
                         f"{tuple(w_b.shape)}, {tuple(w_c.shape)}")
    if w_a.shape[0] < 2:
        raise ValueError(f"templates must have dimension D >= 2 to span a plane, got D={w_a.shape[0]}")
    a, b, c = (w.detach().to(torch.float64).cpu() for w in (w_a, w_b, w_c))
    scale = max(float(a.norm()), float(b.norm()), float(c.norm()), 1e-300)
    d1 = b - a
    if float(d1.norm()) <= 1e-6 * scale:
        raise ValueError("w_a and w_b (nearly) coincide: the three templates do not span a plane")
    u1 = d1 / d1.norm()
    r = (c - a) - ((c - a) @ u1) * u1
    if float(r.norm()) <= 1e-6 * scale:
        raise ValueError("the three templates are (nearly) collinear: they do not span a unique plane")
    u2 = r / r.norm()
    return torch.stack([u1, u2], dim=1).to(dtype=w_a.dtype, device=w_a.device)


def project_to_plane(features: torch.Tensor, basis: torch.Tensor, origin: torch.Tensor | None = None) -> torch.Tensor:
    """Coordinates ``(N, 2)`` of ``features`` ``(N, D)`` in the plane with orthonormal ``basis`` ``(D, 2)``.

    ``(features - origin) @ basis``; ``origin`` ``(D,)`` is a point of the plane (e.g. ``w_a``, which then
    lands at ``(0, 0)``); ``None`` = the zero vector. Orthogonal projection: the part of ``features``
    perpendicular to the plane is dropped.

    Raises ``ValueError`` for mismatched shapes or a ``basis`` whose columns are not orthonormal
    (``|BᵀB - I| > 1e-4``).

    >>> B = torch.tensor([[1., 0.], [0., 1.], [0., 0.]])
    >>> project_to_plane(torch.tensor([[3., 4., 5.]]), B, origin=torch.tensor([1., 1., 1.]))
    tensor([[2., 3.]])
    """
    check_tensor("features", features, floating=True, allow_empty=True)
    if features.dim() != 2:
        raise ValueError(f"features must have shape (N, D), got {tuple(features.shape)}")
    check_tensor("basis", basis, floating=True)
    if basis.dim() != 2 or basis.shape[1] != 2:
        raise ValueError(f"basis must have shape (D, 2), got {tuple(basis.shape)}")
    if basis.shape[0] != features.shape[1]:
        raise ValueError(f"basis has D={basis.shape[0]} rows but features have D={features.shape[1]} columns")
    gram = basis.detach().to(torch.float64).T @ basis.detach().to(torch.float64)
    if not torch.allclose(gram, torch.eye(2, dtype=torch.float64), atol=1e-4):
        raise ValueError(f"basis columns must be orthonormal (use template_plane_basis); BᵀB = {gram.tolist()}")
    x = features.to(basis.dtype)
    if origin is not None:
        _check_vector("origin", origin)
        if origin.shape[0] != features.shape[1]:
            raise ValueError(f"origin must have shape (D,) = ({features.shape[1]},), got {tuple(origin.shape)}")
        x = x - origin.to(basis.dtype)
    return x @ basis


def classifier_templates(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)``: the templates ``W`` ``(K, D)`` (rows of ``model.classifier.weight``) and biases ``b`` ``(K,)``.

    Detached float32 copies on the CPU; ``b`` is zeros when the layer has no bias.

    >>> from lsutils.models import build_model
    >>> W, b = classifier_templates(build_model("mlp", num_classes=3, in_channels=1, width=4, image_size=2))
    >>> W.shape, b.shape
    (torch.Size([3, 4]), torch.Size([3]))
    """
    layer = getattr(model, "classifier", None)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"model must have a final nn.Linear layer named .classifier (every lsutils model has one); "
                        f"{type(model).__name__} has {type(layer).__name__}")
    W = layer.weight.detach().float().cpu().clone()
    b = layer.bias.detach().float().cpu().clone() if layer.bias is not None else torch.zeros(W.shape[0])
    return W, b


def template_offsets(model: nn.Module) -> torch.Tensor:
    """``c_k = b_k + ½‖w_k‖²`` ``(K,)``: how far the model's logits are from the pure distance form of eq. (1).

    ``z_k = -½‖x - w_k‖² + c_k + ½‖x‖²`` holds exactly; with all ``c_k`` equal the logits rank the classes
    by distance to their templates. Report the spread ``max c - min c`` next to the logit gaps.
    """
    W, b = classifier_templates(model)
    return b + 0.5 * (W * W).sum(dim=1)


# --------------------------------------------------------------------------------------------- examples
def sample_per_class(labels: torch.Tensor, classes: Sequence[int], n_per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices ``(M,)`` of up to ``n_per_class`` examples of each class in ``classes``, drawn without replacement.

    Seeded (``torch.Generator``): the same seed gives the same examples. Classes with fewer examples
    contribute all they have; a class with none raises ``ValueError``. Ordered class by class.

    >>> sample_per_class(torch.tensor([0, 1, 0, 1, 2]), [0, 2], n_per_class=5).tolist()
    [0, 2, 4]
    """
    check_tensor("labels", labels, floating=False)
    if labels.dim() != 1:
        raise ValueError(f"labels must have shape (N,), got {tuple(labels.shape)}")
    n_per_class = int(check_positive("n_per_class", n_per_class, integer=True))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for c in _resolve_classes(classes):
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() == 0:
            raise ValueError(f"labels hold no example of class {c}")
        pick = idx[torch.randperm(idx.numel(), generator=gen)[:n_per_class]]
        out.append(pick.sort().values)
    return torch.cat(out)


def project_classes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], *,
                    n_per_class: int = 100, seed: int = 0) -> dict[str, torch.Tensor]:
    """Figure 1 for one model and one split: activations of three classes projected on their templates' plane.

    Args:
        model: an lsutils model (``.features``, ``.classifier``).
        x: inputs ``(N, C, H, W)``; y: labels ``(N,)``.
        classes: three class indices ``(a, b, c)``; the plane passes through ``w_a, w_b, w_c``, origin ``w_a``.
        n_per_class, seed: see :func:`sample_per_class` (same seed = same examples for every model).

    Returns:
        dict with ``coords`` ``(M, 2)``, ``labels`` ``(M,)``, ``templates`` ``(3, 2)`` (the templates'
        own coordinates: ``w_a`` at the origin, ``w_b`` on the first axis), ``basis`` ``(D, 2)``.
    """
    from .models import penultimate

    a, b, c = _resolve_classes(classes, count=3)
    W, _ = classifier_templates(model)
    check_num_classes(W.shape[0])
    _resolve_classes([a, b, c], num_classes=W.shape[0])
    idx = sample_per_class(y, [a, b, c], n_per_class, seed)
    feats = penultimate(model, x[idx])
    basis = template_plane_basis(W[a], W[b], W[c])
    return {"coords": project_to_plane(feats, basis, origin=W[a]), "labels": y[idx].clone(),
            "templates": project_to_plane(W[[a, b, c]], basis, origin=W[a]), "basis": basis}


# --------------------------------------------------------------------------------------------- measurements
def _centroids(points: torch.Tensor, labels: torch.Tensor,
               classes: Sequence[int] | None) -> tuple[list[int], torch.Tensor]:
    points, labels = _check_points_labels(points, labels)
    if classes is None:
        cls = sorted(int(c) for c in torch.unique(labels))
    else:
        cls = _resolve_classes(classes)
    if len(cls) < 2:
        raise ValueError(f"need at least two classes to compare clusters, got {cls}")
    cents = []
    for c in cls:
        mask = labels == c
        if int(mask.sum()) < 2:
            raise ValueError(f"class {c} has {int(mask.sum())} point(s) in labels; each class needs at least 2")
        cents.append(points[mask].to(torch.float64).mean(0))
    return cls, torch.stack(cents)


def _pairwise(cents: torch.Tensor) -> torch.Tensor:
    i, j = torch.triu_indices(len(cents), len(cents), offset=1)
    return (cents[i] - cents[j]).norm(dim=1)


def cluster_tightness(points: torch.Tensor, labels: torch.Tensor, classes: Sequence[int] | None = None) -> float:
    """Within-class spread relative to the distance between classes; smaller = tighter clusters.

    ``tightness = mean_c [ mean_{i in c} ‖x_i - μ_c‖ ] / mean_{c < c'} ‖μ_c - μ_c'‖``, with ``μ_c`` the
    centroid of class ``c``. Scale-free (multiplying all points by ``s`` changes nothing). Works in any dimension:
    on plane coordinates ``(N, 2)`` or on full penultimate activations ``(N, D)``.

    Args:
        points: ``(N, d)`` float; labels: ``(N,)`` int class indices.
        classes: the classes to use (default: every label present; at least two, each with >= 2 points).

    >>> pts = torch.tensor([[-1., 0], [1, 0], [9, 0], [11, 0]])
    >>> cluster_tightness(pts, torch.tensor([0, 0, 1, 1]))   # spread 1, centroids 10 apart
    0.1
    """
    points, labels = _check_points_labels(points, labels)
    cls, cents = _centroids(points, labels, classes)
    within = torch.stack([(points[labels == c].to(torch.float64) - cents[i]).norm(dim=1).mean()
                          for i, c in enumerate(cls)]).mean()
    between = _pairwise(cents).mean()
    if float(between) == 0.0:
        raise ValueError("all class centroids coincide: tightness is undefined")
    return float(within / between)


def equidistance(points: torch.Tensor, labels: torch.Tensor, classes: Sequence[int] | None = None) -> float:
    """Coefficient of variation of the pairwise distances between class centroids; 0 = perfectly equidistant.

    ``std / mean`` (population std) of ``‖μ_c - μ_c'‖`` over all pairs ``c < c'``. Scale-free. Three centroids
    at the corners of an equilateral triangle give 0; a 3-4-5 triangle gives ``√(2/3)/4 ≈ 0.204``.

    >>> pts = torch.tensor([[0., 0], [0, 0], [3, 0], [3, 0], [0, 4], [0, 4]])
    >>> round(equidistance(pts, torch.tensor([0, 0, 1, 1, 2, 2])), 4)
    0.2041
    """
    points, labels = _check_points_labels(points, labels)
    _, cents = _centroids(points, labels, classes)
    d = _pairwise(cents)
    if float(d.mean()) == 0.0:
        raise ValueError("all class centroids coincide: equidistance is undefined")
    return float(d.std(unbiased=False) / d.mean())


def logit_gaps(logits: torch.Tensor, labels: torch.Tensor, against: str = "max") -> torch.Tensor:
    """True-class logit minus the other logits.

    ``against="max"``: ``z_y - max_{k≠y} z_k``, shape ``(N,)`` (negative = misclassified);
    ``against="each"``: ``z_y - z_k`` for every ``k ≠ y``, shape ``(N, K-1)`` (others in class order).
    At the optimum of label smoothing every such gap equals ``log(1 + K(1-ε)/ε)``
    (:func:`lsutils.optimal_logit_gap`); under cross-entropy the gap has no bound.

    >>> z = torch.tensor([[3., 1., 0.], [0., 2., 5.]])
    >>> logit_gaps(z, torch.tensor([0, 1])).tolist(), logit_gaps(z, torch.tensor([0, 1]), "each").tolist()
    ([2.0, -3.0], [[2.0, 3.0], [2.0, -3.0]])
    """
    check_tensor("logits", logits, floating=True)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, K) with K >= 2, got {tuple(logits.shape)}")
    check_finite("logits", logits)
    check_tensor("labels", labels, floating=False)
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must have shape (N,) = ({logits.shape[0]},), got {tuple(labels.shape)}")
    check_class_indices("labels", labels, logits.shape[1])
    if against not in ("max", "each"):
        raise ValueError(f"against must be 'max' or 'each', got {against!r}")
    labels = labels.to(logits.device).long()
    true = logits.gather(1, labels[:, None])
    others = ~torch.nn.functional.one_hot(labels, logits.shape[1]).bool()
    rest = logits[others].view(logits.shape[0], logits.shape[1] - 1)
    if against == "max":
        return true[:, 0] - rest.max(dim=1).values
    return true - rest


def template_subspace_basis(templates: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis ``(D, r)`` of the affine span of all ``K`` templates (directions ``w_k - w_0``), ``r <= K-1``.

    The generalisation of :func:`template_plane_basis` to every class: the logit *differences* depend on an
    activation only through its projection on this subspace, so it is the part of the penultimate space
    that the classifier sees. ``r`` is the numerical rank (singular values above ``1e-6`` of the largest).

    >>> template_subspace_basis(torch.eye(3)).shape
    torch.Size([3, 2])
    """
    check_tensor("templates", templates, floating=True)
    if templates.dim() != 2 or templates.shape[0] < 2:
        raise ValueError(f"templates must have shape (K, D) with K >= 2, got {tuple(templates.shape)}")
    check_finite("templates", templates)
    diffs = (templates[1:] - templates[0]).detach().to(torch.float64).cpu().T       # (D, K-1)
    u, sv, _ = torch.linalg.svd(diffs, full_matrices=False)
    if float(sv.max()) == 0.0:
        raise ValueError("all templates coincide: they span no subspace")
    rank = int((sv > 1e-6 * sv.max()).sum())
    return u[:, :rank].to(templates.dtype)


# --------------------------------------------------------------------------------------------- plots


