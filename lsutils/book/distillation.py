"""Chapter 5: knowledge distillation, and what a label-smoothed teacher has (not) got to teach.

The loss is the core's :func:`lsutils.distillation_loss` (Hinton et al. 2015); a student trains on it through
the trainer loss ``{"name": "distill", "teacher": teacher_spec.to_dict(), "temperature": T, "beta": β}``.
This module holds the chapter's recipe:

* **settings and specs** — :func:`chapter_settings` (every size of the chapter, from the profile),
  :func:`teacher_spec` (the CE/LS models of chapters 3–4, shared through the cache), :func:`student_spec`,
  and the loss dicts :func:`kd`, :func:`pseudo_labels` and :func:`kd_rescaled`;
* **two trainer losses** registered here: ``"pseudo_label"`` (cross-entropy on the teacher's *argmax*: the
  extra images labelled by the teacher, without its soft targets) and ``"distill_rescaled"`` (distillation
  from a teacher whose logits are multiplied by a constant, e.g. ``1 / T_fit`` for a calibrated teacher);
* **measurements** — :func:`output_sharpness` (how one-hot a teacher's outputs are),
  :func:`nontarget_divergence` (how far its wrong-class distribution is from uniform),
  :func:`wrong_class_rank_agreement` (whether two teachers order the wrong classes alike: scale-free),
  :func:`class_similarity_matrix`, :func:`target_entropy`, :func:`cluster_spread` (tightness of a student's
  penultimate clusters) and Müller et al.'s mutual-information estimate (:func:`two_class_subset`,
  :func:`logit_difference_views`, :func:`gaussian_mutual_information`);
* **figures** — one per result: :func:`plot_sharpness`, :func:`plot_routes`, :func:`plot_temperature`,
  :func:`plot_similarity_matrices`, :func:`plot_erasure`, :func:`plot_target_entropy`, :func:`plot_spread`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from lsutils.book.common import md  # noqa: F401  (the chapter's generated prose: ch.md(...))
from lsutils._validate import check_finite, check_labels_1d, check_logits_2d, check_probability, check_tensor
from lsutils.losses import (DistillationLoss, LossContext, _check_beta, _check_temperature, _teacher_from_context,
                            register_loss, smoothing_spec)

__all__ = ["md", "chapter_settings", "teacher_name", "teacher_spec", "student_spec", "kd", "pseudo_labels", "kd_rescaled",
           "PseudoLabelLoss", "RescaledDistillationLoss", "teacher_logits", "accuracy_on", "evaluate_runs", "route_deltas",
           "output_sharpness", "nontarget_divergence", "wrong_class_rank_agreement", "class_similarity_matrix",
           "target_entropy", "cluster_spread", "two_class_subset", "logit_difference_views",
           "gaussian_mutual_information", "t_interval", "plot_sharpness", "plot_routes", "plot_temperature",
           "plot_similarity_matrices", "plot_erasure", "plot_target_entropy", "plot_spread"]


# --------------------------------------------------------------------------------------------- settings
def _check_profile(profile: Any) -> None:
    for attr in ("dataset", "n_train", "n_val", "model", "width", "epochs", "seeds"):
        if not hasattr(profile, attr):
            raise TypeError(f"profile must be an lsutils Profile (from get_profile()), got "
                            f"{type(profile).__name__} without .{attr}")


def chapter_settings(profile: Any) -> dict[str, Any]:
    """Chapter 5's sizes for a compute profile.

    * ``teacher_eps`` ``(0.0, 0.1, 0.3)``: the teachers are the profile's CE/LS models (chapters 3–4, cached);
      ``route_eps`` ``(0.0, 0.1)``: the teachers tried on every route;
    * the student: an ``"mlp"`` of width ``2 · profile.width`` (64 in ``cpu``: 55 k parameters against the
      CNN teacher's 422 k), trained with the profile's schedule; the *tiny* student of route (c): an MLP of
      width ``profile.width // 4`` (8 in ``cpu``);
    * route (a), the transfer set: ``n_train = 4 · profile.n_train`` images (the teacher's images first, then
      images it never saw, whose labels the student never uses), ``profile.epochs // 2`` epochs;
    * route (b), augmentation: a CE teacher trained with the trainer's augmentation for ``2 · epochs``
      epochs and a ``"cnn"`` student of width ``profile.width // 4`` trained with the same augmentation for
      as long, on ``aug_seeds`` (the first seed only: its teacher costs about two ordinary models);
    * temperatures: ``route_temperatures`` ``(1, 4)`` on every route, ``temperatures`` ``(1, 2, 4, 8)`` on the
      transfer set; ``beta`` 1 (teacher targets only, as Müller et al.);
    * the mutual-information estimate: ``mi_per_class`` training images of Shirt and T-shirt/top,
      ``mi_views`` views with Gaussian noise of standard deviation ``mi_noise`` (normalised units).

    >>> from lsutils.config import get_profile
    >>> s = chapter_settings(get_profile("cpu"))
    >>> s["student_width"], s["tiny_width"], s["transfer_n_train"], s["transfer_epochs"]
    (64, 8, 12000, 8)
    """
    _check_profile(profile)
    if profile.n_train is None:
        raise ValueError(f"chapter 5 needs a profile with a finite training set (its transfer set is images beyond "
                         f"the teacher's n_train); got profile {getattr(profile, 'name', '?')!r} with n_train=None")
    seeds = tuple(profile.seeds)
    return {
        "teacher_eps": (0.0, 0.1, 0.3),
        "route_eps": (0.0, 0.1),
        "student_model": "mlp",
        "student_width": 2 * profile.width,
        "tiny_width": max(2, profile.width // 4),
        "transfer_n_train": 4 * profile.n_train,
        "transfer_epochs": max(1, profile.epochs // 2),
        "aug_teacher_epochs": 2 * profile.epochs,
        "aug_student_width": max(2, profile.width // 4),
        "aug_seeds": seeds[:1],
        "route_temperatures": (1.0, 4.0),
        "temperatures": (1.0, 2.0, 4.0, 8.0),
        "beta": 1.0,
        "seeds": seeds,
        "mi_classes": (6, 0) if profile.dataset == "fashion_mnist" else (3, 5),
        "mi_per_class": min(300, profile.n_train // 20),
        "mi_views": 5,
        "mi_noise": 0.1,
    }


def teacher_name(epsilon: float) -> str:
    """``"CE"`` for ε = 0, else ``"LS ε = 0.1"`` (the chapter's label for a teacher).

    >>> teacher_name(0.0), teacher_name(0.1)
    ('CE', 'LS ε = 0.1')
    """
    epsilon = check_probability("epsilon", epsilon)
    return "CE" if epsilon == 0 else f"LS ε = {epsilon:g}"


def teacher_spec(profile: Any, epsilon: float, seed: int, **overrides: Any):
    """``RunSpec.from_profile(profile, loss=smoothing_spec(epsilon), seed=seed, **overrides)``.

    Without ``overrides`` this is the very model chapters 3–4 train (one cache entry)."""
    from lsutils.train import RunSpec

    return RunSpec.from_profile(profile, loss=smoothing_spec(epsilon), seed=seed, **overrides)


def student_spec(profile: Any, seed: int, loss: Mapping[str, Any] | None = None, **overrides: Any):
    """The chapter's student (``chapter_settings``: an MLP of width ``2 · profile.width``) trained with ``loss``.

    ``loss=None`` is plain cross-entropy on the hard labels; ``overrides`` replace any other field
    (``n_train``, ``epochs``, ``width``, ``model``, ``augment``).

    >>> from lsutils.config import get_profile
    >>> student_spec(get_profile("cpu"), 0).model, student_spec(get_profile("cpu"), 0, width=8).width
    ('mlp', 8)
    """
    from lsutils.train import RunSpec

    s = chapter_settings(profile)
    fields = {"model": s["student_model"], "width": s["student_width"], **overrides}
    return RunSpec.from_profile(profile, loss=dict(loss) if loss is not None else {"name": "ce"}, seed=seed,
                                **fields)


def _teacher_dict(teacher: Any) -> dict[str, Any]:
    from lsutils.train import RunSpec

    if not isinstance(teacher, RunSpec):
        raise TypeError(f"teacher must be a RunSpec (e.g. teacher_spec(profile, 0.1, seed)), "
                        f"got {type(teacher).__name__}")
    return teacher.to_dict()


def kd(teacher: Any, temperature: float, beta: float = 1.0) -> dict[str, Any]:
    """The core's distillation loss spec: ``{"name": "distill", "teacher": ..., "temperature": T, "beta": β}``."""
    return {"name": "distill", "teacher": _teacher_dict(teacher), "temperature": _check_temperature(temperature),
            "beta": _check_beta(beta)}


def pseudo_labels(teacher: Any) -> dict[str, Any]:
    """``{"name": "pseudo_label", "teacher": ...}``: cross-entropy on the teacher's predicted class (no soft targets)."""
    return {"name": "pseudo_label", "teacher": _teacher_dict(teacher)}


def kd_rescaled(teacher: Any, temperature: float, scale: float, beta: float = 1.0) -> dict[str, Any]:
    """``{"name": "distill_rescaled", ...}``: distillation from the teacher's logits times ``scale`` (> 0).

    ``scale = 1 / T_fit`` (the teacher's fitted temperature) distils from the *calibrated* teacher, so teachers
    with different logit scales are compared at the same effective temperature."""
    return {**kd(teacher, temperature, beta), "name": "distill_rescaled", "scale": _check_scale(scale)}


def _check_scale(scale: Any) -> float:
    from lsutils._validate import as_real

    value = as_real("scale", scale)
    if value <= 0:
        raise ValueError(f"scale must be a finite number > 0 (e.g. 1 / T_fit), got {value}")
    return value


# --------------------------------------------------------------------------------------------- two trainer losses
class PseudoLabelLoss(DistillationLoss):
    """Cross-entropy against the teacher's predicted class ``argmax_k t_k`` (the teacher as a labeller).

    Looks the teacher's logits up like :class:`lsutils.losses.DistillationLoss` (or runs the teacher on an
    augmented batch), then ignores everything but their argmax: the student gets the teacher's labels and no
    soft targets. With a transfer set this separates "more images labelled by the teacher" from "soft targets".

    >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    >>> x = torch.randn(8, 1, 2, 2)
    >>> from lsutils.train import Batch
    >>> loss = PseudoLabelLoss(teacher, x)
    >>> t = teacher(x).detach()
    >>> bool(torch.isclose(loss(t, torch.zeros(8, dtype=torch.long), Batch(x, torch.arange(8))),
    ...                    F.cross_entropy(t, t.argmax(1))))
    True
    """

    def __init__(self, teacher: nn.Module, train_x: torch.Tensor) -> None:
        super().__init__(teacher, train_x, temperature=1.0, beta=1.0)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, batch: Any) -> torch.Tensor:
        teacher = self.teacher_batch(batch).to(logits.device)
        return F.cross_entropy(logits, teacher.argmax(1))


class RescaledDistillationLoss(DistillationLoss):
    """:class:`lsutils.losses.DistillationLoss` from a teacher whose logits are multiplied by ``scale``.

    Distilling at temperature ``T`` then softens the teacher by ``T / scale`` and the student by ``T``.

    >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    >>> x = torch.randn(8, 1, 2, 2)
    >>> loss = RescaledDistillationLoss(teacher, x, temperature=2.0, scale=0.5)
    >>> torch.allclose(loss.teacher_logits, 0.5 * teacher(x).detach())
    True
    """

    def __init__(self, teacher: nn.Module, train_x: torch.Tensor, temperature: float, scale: float,
                 beta: float = 1.0) -> None:
        self.scale = _check_scale(scale)
        super().__init__(teacher, train_x, temperature, beta)

    def _teacher_on(self, x: torch.Tensor) -> torch.Tensor:
        return super()._teacher_on(x) * self.scale


def _check_teacher_dict(teacher: Any) -> None:
    from lsutils.train import RunSpec

    if not isinstance(teacher, Mapping) or "loss" not in teacher:
        raise TypeError(f"teacher must be the teacher's RunSpec as a dict (RunSpec.to_dict()), got {teacher!r}")
    RunSpec.from_dict(teacher)


@register_loss("pseudo_label")
def _pseudo_label_loss(teacher: Mapping[str, Any], context: LossContext | None = None) -> PseudoLabelLoss | None:
    """``{"name": "pseudo_label", "teacher": RunSpec.to_dict()}``: :class:`PseudoLabelLoss`."""
    _check_teacher_dict(teacher)
    if context is None:
        return None
    return PseudoLabelLoss(_teacher_from_context(teacher, context, "pseudo_label"), context.train_x)


@register_loss("distill_rescaled")
def _distill_rescaled_loss(teacher: Mapping[str, Any], temperature: float, scale: float, beta: float = 1.0,
                           context: LossContext | None = None) -> RescaledDistillationLoss | None:
    """``{"name": "distill_rescaled", "teacher": ..., "temperature": T, "scale": c, "beta": β}``."""
    _check_teacher_dict(teacher)
    temperature, scale, beta = _check_temperature(temperature), _check_scale(scale), _check_beta(beta)
    if context is None:
        return None
    return RescaledDistillationLoss(_teacher_from_context(teacher, context, "distill_rescaled"), context.train_x,
                                    temperature, scale, beta)


# --------------------------------------------------------------------------------------------- outputs and scores
_LOGITS: dict[tuple, torch.Tensor] = {}


def teacher_logits(spec: Any, x: torch.Tensor, name: str) -> torch.Tensor:
    """Logits ``(N, K)`` (CPU, float32) of the model ``spec`` (trained or loaded from the cache) on ``x``.

    Memoised under ``(spec.key(), name)`` in this process: ``name`` says which inputs ``x`` are (``"test"``,
    ``"val"``, ...), because the chapter reads the same teacher's outputs in several places.
    """
    from lsutils.models import predict_logits
    from lsutils.train import RunSpec, train_model

    if not isinstance(spec, RunSpec):
        raise TypeError(f"spec must be a RunSpec, got {type(spec).__name__}")
    check_tensor("x", x, floating=True)
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str naming the inputs, got {name!r}")
    key = (spec.key(), name, tuple(x.shape))
    if key not in _LOGITS:
        _LOGITS[key] = predict_logits(train_model(spec, progress=False).model, x)
    return _LOGITS[key]


def accuracy_on(model: nn.Module, split: Any) -> float:
    """Accuracy (a fraction) of ``model`` on ``split`` (``.x``, ``.y``)."""
    from lsutils.models import predict_logits

    if not (hasattr(split, "x") and hasattr(split, "y")):
        raise TypeError(f"split must have .x and .y (e.g. data.test), got {type(split).__name__}")
    return float((predict_logits(model, split.x).argmax(1) == split.y).float().mean())


def evaluate_runs(labelled: Sequence[tuple[Mapping[str, Any], Any]], data: Any) -> list[dict[str, Any]]:
    """One row per ``(labels, run)``: the labels plus ``val_acc``, ``test_acc`` (%) and ``trained`` (not cached)."""
    rows = []
    for labels, run in labelled:
        if not isinstance(labels, Mapping) or not hasattr(run, "model"):
            raise TypeError("labelled must hold (dict of labels, TrainedRun) pairs")
        rows.append({**labels, "val_acc": 100 * accuracy_on(run.model, data.val),
                     "test_acc": 100 * accuracy_on(run.model, data.test), "trained": not run.from_cache})
    return rows


def route_deltas(rows: Any, baseline: str = "hard labels", metric: str = "test_acc"):
    """Per route and seed, every arm's ``metric`` minus that of the route's ``baseline`` arm (same seed).

    ``rows``: one row per student with ``route``, ``arm``, ``seed`` and ``metric``. Returns a DataFrame with
    ``route``, ``arm``, ``seed`` and ``delta`` (the baseline arm itself left out).

    >>> import pandas as pd
    >>> rows = [{"route": "r", "arm": a, "seed": 0, "test_acc": v} for a, v in (("hard labels", 80.0), ("kd", 81.5))]
    >>> route_deltas(rows)[["arm", "delta"]].values.tolist()
    [['kd', 1.5]]
    """
    df = _frame(rows)
    _need(df, ["route", "arm", "seed", metric], "route_deltas")
    base = df[df["arm"] == baseline].set_index(["route", "seed"])[metric]
    missing = sorted(set(df["route"]) - set(base.index.get_level_values(0)))
    if missing:
        raise ValueError(f"routes {missing} have no {baseline!r} arm to compare with")
    out = df[df["arm"] != baseline].copy()
    out["delta"] = [v - base[(r, s)] for r, s, v in zip(out["route"], out["seed"], out[metric])]
    return out[["route", "arm", "seed", "delta"]].reset_index(drop=True)


# --------------------------------------------------------------------------------------------- measurements
def output_sharpness(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """How close to one-hot a model's outputs are: ``acc``, mean ``max_prob``, mean ``entropy`` (nats) and mean
    ``wrong_kl`` (:func:`nontarget_divergence` at T = 1).

    >>> r = output_sharpness(torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), torch.tensor([0, 1]))
    >>> round(r["acc"], 2), round(r["max_prob"], 3)
    (0.5, 0.667)
    """
    check_logits_2d("logits", logits)
    check_labels_1d("labels", labels, logits.shape[0], logits.shape[1])
    p = logits.double().softmax(1)
    entropy = -(p * p.clamp_min(1e-300).log()).sum(1)
    return {"acc": float((p.argmax(1) == labels).double().mean()), "max_prob": float(p.max(1).values.mean()),
            "entropy": float(entropy.mean()), "wrong_kl": float(nontarget_divergence(logits, labels).mean())}


def _wrong_class_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The ``(N, K - 1)`` float32 logits of the wrong classes (the true class removed), after checking the inputs."""
    check_logits_2d("logits", logits)
    n, k = logits.shape
    if k < 3:
        raise ValueError(f"logits must have at least 3 classes (K - 1 >= 2 wrong classes), got K = {k}")
    check_labels_1d("labels", labels, n, k)
    keep = torch.ones_like(logits, dtype=torch.bool)
    keep[torch.arange(n, device=logits.device), labels] = False
    return logits.float()[keep].view(n, k - 1)


def nontarget_divergence(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per example, ``KL(q ‖ uniform) = log(K − 1) − H(q)`` in nats, where ``q = softmax(z_{≠y} / T)``.

    ``q`` is the model's distribution over the ``K − 1`` *wrong* classes (true class removed, renormalised):
    0 means all wrong classes look alike; ``log(K − 1)`` means all the mass is on one wrong class. It depends on
    the logits' scale: compare models after dividing each one's logits by its fitted temperature.
    ``logits``: ``(N, K)``, ``labels``: ``(N,)``; returns ``(N,)`` float32.

    >>> nontarget_divergence(torch.tensor([[5.0, 1.0, 1.0]]), torch.tensor([0]))
    tensor([0.])
    """
    temperature = _check_temperature(temperature)
    log_q = F.log_softmax(_wrong_class_logits(logits, labels) / temperature, dim=1)
    entropy = -(log_q.exp() * log_q).sum(1)
    return (math.log(logits.shape[1] - 1) - entropy).clamp_min(0.0)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return x.argsort(dim=1).argsort(dim=1).double()


def wrong_class_rank_agreement(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per example, the Spearman correlation between two models' orders of the ``K − 1`` wrong classes, ``(N,)``.

    Scale-free (ranks only): 1 = both models rank the wrong classes of this image identically, 0 = unrelated.
    Two seeds of one recipe agree only where the order comes from the image, not from the initialisation: the
    part of the "dark knowledge" a student can learn.

    >>> z, y = torch.tensor([[5.0, 3.0, 2.0, 1.0]]), torch.tensor([0])
    >>> [round(float(wrong_class_rank_agreement(z, b, y)), 6) for b in (10 * z, -z)]
    [1.0, -1.0]
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"logits_a and logits_b must have the same shape, got {tuple(logits_a.shape)} and "
                         f"{tuple(logits_b.shape)}")
    ra = _ranks(_wrong_class_logits(logits_a, labels))
    rb = _ranks(_wrong_class_logits(logits_b, labels))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


def class_similarity_matrix(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                            wrong_only: bool = False) -> torch.Tensor:
    """``(K, K)``: row ``y`` = mean of ``softmax(z / T)`` over the examples of true class ``y``.

    With ``wrong_only=True`` the diagonal is set to 0 and each row renormalised to sum to 1: the row then says
    how the model spreads the probability it gives to *wrong* classes, whatever its confidence (so a teacher
    with small logits compares with one with large logits). Every class must occur.

    >>> m = class_similarity_matrix(torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0]]),
    ...                             torch.tensor([0, 1, 2]), wrong_only=True)
    >>> torch.allclose(m.sum(1), torch.ones(3)), float(m.diagonal().abs().sum())
    (True, 0.0)
    """
    check_logits_2d("logits", logits)
    k = logits.shape[1]
    check_labels_1d("labels", labels, logits.shape[0], k)
    temperature = _check_temperature(temperature)
    if not isinstance(wrong_only, bool):
        raise TypeError(f"wrong_only must be True or False, got {wrong_only!r}")
    probs = F.softmax(logits.double() / temperature, dim=1)
    counts = torch.bincount(labels, minlength=k)
    if (counts == 0).any():
        raise ValueError(f"labels must contain every class at least once; missing "
                         f"{torch.nonzero(counts == 0).flatten().tolist()}")
    m = torch.zeros(k, k, dtype=probs.dtype).index_add_(0, labels.cpu(), probs.cpu()) / counts.cpu()[:, None]
    if wrong_only:
        m.fill_diagonal_(0.0)
        m = m / m.sum(1, keepdim=True)
    return m.float()


def target_entropy(logits: torch.Tensor, temperature: float) -> float:
    """Mean entropy of the soft targets ``softmax(z / T)`` as a fraction of its maximum ``log K`` (1 = uniform).

    >>> round(target_entropy(torch.zeros(3, 4), 1.0), 3), target_entropy(torch.tensor([[50.0, 0.0]]), 1.0) < 1e-6
    (1.0, True)
    """
    check_logits_2d("logits", logits)
    temperature = _check_temperature(temperature)
    log_p = F.log_softmax(logits.double() / temperature, dim=1)
    return float(-(log_p.exp() * log_p).sum(1).mean()) / math.log(logits.shape[1])


def cluster_spread(features: torch.Tensor, labels: torch.Tensor) -> float:
    """How tight a model's classes are in its penultimate layer, scale-free: within-class over between-class spread.

    ``mean_i ‖h_i − μ_{y_i}‖² / mean_{a ≠ b} ‖μ_a − μ_b‖²`` with ``μ_c`` the mean activation of class ``c``:
    small = tight, well separated clusters (what LS does to a network's own penultimate layer, Müller et al.;
    and, Chandrasegaran et al. argue, to its student's at T = 1). ``features``: ``(N, D)``, ``labels``: ``(N,)``.

    >>> h = torch.tensor([[0.0, 0.0], [0.0, 0.2], [4.0, 0.0], [4.0, 0.2]])
    >>> round(cluster_spread(h, torch.tensor([0, 0, 1, 1])), 6)
    0.000625
    """
    check_tensor("features", features, floating=True)
    if features.dim() != 2:
        raise ValueError(f"features must have shape (N, D), got {tuple(features.shape)}")
    check_tensor("labels", labels, floating=False)
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
    h = features.double()
    classes = labels.unique()
    if classes.numel() < 2:
        raise ValueError("cluster_spread needs examples of at least 2 classes")
    mu = torch.stack([h[labels == c].mean(0) for c in classes])
    index = torch.searchsorted(classes, labels)
    within = float(((h - mu[index]) ** 2).sum(1).mean())
    d = torch.cdist(mu, mu) ** 2
    between = float(d.sum() / (classes.numel() * (classes.numel() - 1)))
    return within / between


def two_class_subset(split: Any, class_a: int, class_b: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: the first ``per_class`` examples of class ``a`` then of class ``b`` in ``split`` (``.x``, ``.y``)."""
    if not (hasattr(split, "x") and hasattr(split, "y")):
        raise TypeError(f"split must have .x and .y (e.g. load_profile_data(p).train), got {type(split).__name__}")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an int >= 1, got {per_class!r}")
    parts = []
    for name, c in (("class_a", class_a), ("class_b", class_b)):
        idx = torch.nonzero(split.y == c).flatten()[:per_class]
        if idx.numel() < per_class:
            raise ValueError(f"{name}={c!r} has only {idx.numel()} examples in the split, need per_class={per_class}")
        parts.append(idx)
    idx = torch.cat(parts)
    return split.x[idx], split.y[idx]


def logit_difference_views(model: nn.Module, x: torch.Tensor, class_a: int, class_b: int, *, views: int = 5,
                           max_shift: int = 0, noise_std: float = 0.1, seed: int = 0,
                           batch_size: int = 2048) -> torch.Tensor:
    """``(N, L)``: ``z_a − z_b`` of ``model`` on ``L = views`` randomly perturbed copies of each image in ``x``.

    Each view shifts the image by up to ``max_shift`` pixels (reflect padding, then a crop of the original
    size; :func:`lsutils.train.augment_batch` without flips) and adds Gaussian noise of standard deviation
    ``noise_std`` (normalised units). Seeded. ``x``: ``(N, C, H, W)`` float. The model runs in eval mode.
    """
    from lsutils.models import predict_logits
    from lsutils.train import augment_batch

    check_tensor("x", x, floating=True)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if isinstance(views, bool) or not isinstance(views, int) or views < 2:
        raise ValueError(f"views must be an int >= 2 (the estimate needs the spread between views), got {views!r}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
    noise_std = check_probability("noise_std", noise_std, low=0.0, high=math.inf)
    g = torch.Generator().manual_seed(seed)
    cols = []
    for _ in range(views):
        v = augment_batch(x, g, padding=max_shift, flip=False) if max_shift else x.clone()
        if noise_std:
            v = v + noise_std * torch.randn(v.shape, generator=g).to(v.device, v.dtype)
        z = predict_logits(model, v, batch_size=batch_size)
        k = z.shape[1]
        for name, c in (("class_a", class_a), ("class_b", class_b)):
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < k:
                raise ValueError(f"{name} must be a class index in [0, {k - 1}], got {c!r}")
        cols.append(z[:, class_a] - z[:, class_b])
    return torch.stack(cols, dim=1)


def gaussian_mutual_information(d: torch.Tensor, chunk: int = 2048) -> float:
    """Mutual information ``I(X; D)`` in nats between an example's index ``X`` and a scalar output ``D``.

    ``d``: ``(N, L)`` — ``L ≥ 2`` noisy values (e.g. augmented views) of the output for each of ``N``
    examples. As in Müller et al. (2019, §4), ``X`` is uniform over the ``N`` examples and
    ``p(d | x) = N(μ_x, σ²)`` with ``μ_x`` the mean of row ``x`` and ``σ²`` the pooled within-row
    variance ``Σ_{x,l} (d_{xl} − μ_x)² / (N L)``; the mutual information is then estimated by
    Monte Carlo over the observed values:

        I ≈ (1 / N L) Σ_{x,l} [ log N − (d_{xl} − μ_x)² / 2σ² − log Σ_{x'} exp(−(d_{xl} − μ_{x'})² / 2σ²) ].

    ``I`` is at most ``log N`` (every example identifiable from its output) and near 0 when all
    ``μ_x`` coincide; two tight, well separated groups give ``I ≈ log 2``. Invariant to ``a·d + b``
    (so teachers with different logit scales compare). Indistinguishable examples still get about
    ``½·log(L / (L − 1))`` (0.11 nats for ``L = 5``). Raises ``ValueError`` if every row is constant.

    >>> d = torch.tensor([[0.0, 0.1], [10.0, 10.1], [20.0, 20.1]])
    >>> round(gaussian_mutual_information(d), 4) == round(math.log(3), 4)
    True
    """
    check_tensor("d", d, floating=True)
    if d.dim() != 2:
        raise ValueError(f"d must have shape (N, L) (N examples, L views each), got {tuple(d.shape)}")
    n, L = d.shape
    if n < 2 or L < 2:
        raise ValueError(f"d needs at least 2 examples and 2 views each, got shape {tuple(d.shape)}")
    check_finite("d", d)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    d = d.double().cpu()
    mu = d.mean(dim=1)
    var = ((d - mu[:, None]) ** 2).mean()
    if not var > 1e-12 * max(float(d.abs().max()) ** 2, 1e-300):
        raise ValueError("d has (numerically) no spread within rows: every view of an example gives the same value, "
                         "so the Gaussian approximation is undefined; use views that differ (augmentation or noise)")
    flat = d.reshape(-1)
    own = mu.repeat_interleave(L)
    total = 0.0
    for i in range(0, flat.numel(), chunk):
        y = flat[i:i + chunk]
        log_own = -(y - own[i:i + chunk]) ** 2 / (2 * var)
        log_all = torch.logsumexp(-(y[:, None] - mu[None, :]) ** 2 / (2 * var), dim=1)
        total += float((log_own - log_all).sum())
    return math.log(n) + total / flat.numel()


# --------------------------------------------------------------------------------------------- figures
def _frame(rows: Any):
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(list(rows))
    if df.empty:
        raise ValueError("rows is empty")
    return df


def _need(df: Any, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs the columns {missing}; got {sorted(df.columns)}")


def plot_sharpness(rows: Any, ax: Any = None):
    """Histograms of a teacher's max softmax probability, per teacher, on its training images vs held-out ones.

    ``rows``: one row per example with ``teacher`` (a label), ``images`` (e.g. ``"its training images"``) and
    ``max_prob``. One panel per teacher; returns the Axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = _frame(rows)
    _need(df, ["teacher", "images", "max_prob"], "plot_sharpness")
    teachers = list(dict.fromkeys(df["teacher"]))
    if ax is None:
        _, ax = plt.subplots(1, len(teachers), figsize=(4.2 * len(teachers), 3.2), sharey=True, squeeze=False,
                             layout="constrained")
        ax = ax[0]
    for i, (a, t) in enumerate(zip(ax, teachers)):
        sns.histplot(df[df["teacher"] == t], x="max_prob", hue="images", bins=30, binrange=(0.1, 1.0),
                     stat="percent", common_norm=False, element="step", ax=a, legend=i == len(teachers) - 1)
        a.set_yscale("log")
        a.set_title(t, fontsize=10)
        a.set_xlabel("teacher's max softmax probability")
    ax[0].set_ylabel("% of images (log scale)")
    return ax


def t_interval(values: Any, confidence: float = 0.95) -> tuple[float, float]:
    """The ``confidence`` t-interval of the mean of ``values`` (a point for a single value): seaborn's ``errorbar``.

    >>> lo, hi = t_interval([1.0, 2.0, 3.0]); round(lo, 3), round(hi, 3)
    (-0.484, 4.484)
    """
    from scipy import stats as sps

    from lsutils.stats import mean_std

    vals = [float(v) for v in values]
    m, sd = mean_std(vals)
    if len(vals) < 2:
        return m, m
    half = float(sps.t.ppf(0.5 + confidence / 2, len(vals) - 1)) * sd / math.sqrt(len(vals))
    return m - half, m + half


def plot_routes(rows: Any, ax: Any = None):
    """Point plot: per route, each arm's student test accuracy minus the route's fair baseline (points).

    ``rows``: one row per (route, arm, seed) with ``route``, ``arm`` and ``delta``; error bars are 95 %
    t-intervals over seeds (none for a single seed). Returns the Axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = _frame(rows)
    _need(df, ["route", "arm", "delta"], "plot_routes")
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.2), layout="constrained")
    sns.pointplot(df, x="route", y="delta", hue="arm", dodge=0.55, linestyle="none", errorbar=t_interval,
                  capsize=0.08, markers="o", ax=ax, err_kws={"linewidth": 1.2})
    ax.axhline(0, color="gray", lw=1, ls="--")
    ax.set_xlabel("")
    ax.set_ylabel("student test acc. − fair baseline (points)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title=None, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def plot_temperature(rows: Any, baselines: Mapping[str, float] | None = None, ax: Any = None):
    """Student test accuracy (%) against the temperature (log₂ axis), one line per ``teacher``, mean ± sd over seeds.

    ``rows``: ``teacher``, ``T``, ``test_acc`` per seed; ``baselines``: ``{label: accuracy}`` drawn as
    horizontal lines. Returns the Axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = _frame(rows)
    _need(df, ["teacher", "T", "test_acc"], "plot_temperature")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4), layout="constrained")
    sns.lineplot(df, x="T", y="test_acc", hue="teacher", marker="o", errorbar="sd", err_style="bars",
                 ax=ax, err_kws={"capsize": 3})
    for (label, value), ls_ in zip((baselines or {}).items(), ("--", ":", "-.")):
        ax.axhline(value, color="gray", ls=ls_, lw=1.2, label=label)
    ax.set_xscale("log", base=2)
    temps = sorted(df["T"].unique())
    ax.set_xticks(temps, [f"{t:g}" for t in temps])
    ax.minorticks_off()
    ax.set_xlabel("distillation temperature T")
    ax.set_ylabel("student test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_similarity_matrices(matrices: Mapping[str, torch.Tensor], class_names: Sequence[str], axes: Any = None):
    """One heatmap per matrix of :func:`class_similarity_matrix` (``wrong_only=True``), shared colour scale.

    Returns the array of Axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not matrices:
        raise ValueError("matrices is empty; pass e.g. {'CE teacher': m0, 'LS teacher': m1}")
    k = next(iter(matrices.values())).shape[0]
    names = list(class_names)
    if len(names) != k:
        raise ValueError(f"class_names must have {k} entries, got {len(names)}")
    if axes is None:
        _, axes = plt.subplots(1, len(matrices), figsize=(4.1 * len(matrices) + 1, 4.3), squeeze=False,
                               layout="constrained")
        axes = axes[0]
    vmax = max(float(m.max()) for m in matrices.values())
    for i, (ax, (title, m)) in enumerate(zip(axes, matrices.items())):
        arr = m.detach().cpu().double().numpy().copy()
        mask = torch.eye(k, dtype=torch.bool).numpy()
        sns.heatmap(arr, mask=mask, vmin=0, vmax=vmax, cmap="viridis", square=True, ax=ax,
                    cbar=i == len(matrices) - 1, cbar_kws={"label": "share of the wrong-class probability",
                                                           "shrink": 0.8},
                    xticklabels=names, yticklabels=names if i == 0 else False)
        ax.tick_params(labelsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("wrong class k")
        if i == 0:
            ax.set_ylabel("true class y")
    return axes


def plot_erasure(rows: Any, axes: Any = None):
    """One panel per measure (``measure`` column), bars per teacher (``teacher``), mean ± sd over seeds (``value``).

    Returns the Axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = _frame(rows)
    _need(df, ["measure", "teacher", "value"], "plot_erasure")
    measures = list(dict.fromkeys(df["measure"]))
    if axes is None:
        _, axes = plt.subplots(1, len(measures), figsize=(3.3 * len(measures), 3.3), squeeze=False,
                               layout="constrained")
        axes = axes[0]
    for ax, m in zip(axes, measures):
        sns.barplot(df[df["measure"] == m], x="teacher", y="value", hue="teacher", errorbar="sd", capsize=0.15,
                    ax=ax, legend=False)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", labelsize=8)
    return axes


def plot_target_entropy(rows: Any, ax: Any = None):
    """Student test accuracy (%) against the normalised entropy of the teacher's soft targets, per teacher and T.

    ``rows``: ``teacher``, ``T``, ``entropy``, ``test_acc`` (one row per seed; points are means, bars sd).
    If the targets' flatness were what costs accuracy, every teacher's points would fall on one curve."""
    import matplotlib.pyplot as plt

    df = _frame(rows)
    _need(df, ["teacher", "T", "entropy", "test_acc"], "plot_target_entropy")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4), layout="constrained")
    g = df.groupby(["teacher", "T"], sort=False).agg(entropy=("entropy", "mean"), acc=("test_acc", "mean"),
                                                     sd=("test_acc", "std")).reset_index()
    for teacher, part in g.groupby("teacher", sort=False):
        part = part.sort_values("T")
        line = ax.errorbar(part["entropy"], part["acc"], yerr=part["sd"].fillna(0), marker="o", capsize=3,
                           label=teacher)
        for _, r in part.iterrows():
            ax.annotate(f"T={r['T']:g}", (r["entropy"], r["acc"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=line[0].get_color())
    ax.set_xlabel("entropy of the soft targets / log K (1 = uniform)")
    ax.set_ylabel("student test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_spread(rows: Any, ax: Any = None):
    """Point plot of the students' :func:`cluster_spread` against T, one line per ``teacher`` (mean ± sd)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = _frame(rows)
    _need(df, ["teacher", "T", "spread"], "plot_spread")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 3.6), layout="constrained")
    sns.pointplot(df, x="T", y="spread", hue="teacher", errorbar="sd", capsize=0.08, dodge=0.3, ax=ax,
                  formatter=lambda t: f"{t:g}")
    ax.set_xlabel("distillation temperature T")
    ax.set_ylabel("student's within / between-class spread")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
