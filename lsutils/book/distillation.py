"""Knowledge distillation, and the tools to see what a label-smoothed teacher has (not) got to teach.

The loss (Hinton et al. 2015). With student logits ``s``, teacher logits ``t``, temperature ``T`` and
softened distributions ``p_t = softmax(t / T)``, ``p_s = softmax(s / T)``, one example costs

    β · T² · KL(p_t ‖ p_s)  +  (1 − β) · CE(s, y),

averaged over the batch. ``β = 1`` trains on the teacher's soft targets only (as Müller et al. 2019
do in their distillation experiments); the factor ``T²`` keeps the size of the soft-target gradients
roughly independent of ``T`` (they shrink as ``1/T²`` otherwise). :func:`distillation_loss` is that
formula; the trainer loss ``"distill"`` (registered here) uses it with a cached teacher::

    {"name": "distill", "teacher": teacher_spec.to_dict(), "temperature": 4.0, "beta": 1.0}

Why an LS teacher can be a worse teacher, measured (Müller et al. 2019, §4):

* :func:`class_similarity_matrix` — ``(K, K)``: the teacher's mean softmax over all classes for the
  examples of each true class (the "dark knowledge" about which classes resemble which).
* :func:`nontarget_divergence` — per example, the KL divergence of the teacher's distribution over
  the *wrong* classes from uniform: 0 means the wrong classes are indistinguishable to it.
* :func:`logit_gap_statistics` — the spread of ``z_a − z_b`` within each of two classes.
* :func:`logit_difference_views` + :func:`gaussian_mutual_information` — Müller et al.'s estimate of
  the mutual information between the index of a training example and the logit difference of two
  classes, under a Gaussian approximation, using ``L`` augmented views of ``N`` images.

The chapter's experiment (:func:`chapter_settings`, :func:`distillation_specs`,
:func:`run_distillation`) and its plots (:func:`plot_student_heatmap`, :func:`plot_student_vs_temperature`,
:func:`plot_similarity_matrices`, :func:`plot_logit_gaps`) live here too, so the notebook stays thin.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from lsutils._validate import check_finite, check_labels_1d, check_logits_2d, check_probability, check_tensor
from lsutils.losses import smoothing_spec

from lsutils.losses import _check_beta, _check_temperature

__all__ = ['chapter_settings', 'teacher_spec', 'student_spec', 'distillation_specs', 'teacher_logits', 'run_distillation', 'student_table', 'paired_differences', 'paired_verdict', 'best_temperature', 'class_similarity_matrix', 'nontarget_divergence', 'nontarget_logit_std', 'logit_gap_statistics', 'logit_difference_views', 'two_class_subset', 'gaussian_mutual_information', 'teacher_diagnostics', 'plot_student_heatmap', 'plot_student_vs_temperature', 'plot_similarity_matrices', 'plot_logit_gaps']


# --------------------------------------------------------------------------------------------- argument checks


# --------------------------------------------------------------------------------------------- the loss


# --------------------------------------------------------------------------------------------- the experiment
def chapter_settings(profile: Any) -> dict[str, Any]:
    """Chapter 5's sizes for a compute profile: teachers, student, temperature grid, seeds, MI set-up.

    * teachers: the profile's model trained with ``ε ∈ (0.0, 0.1, 0.3)`` (the CE/LS models of chapters 3–4,
      reused from the cache);
    * student: ``"mlp"`` of width ``2·profile.width`` for the Fashion-MNIST (``cnn``) profiles — 55 k
      parameters in ``cpu`` against the teacher's 422 k, a different architecture as in Müller et al.'s
      ResNet-56 → AlexNet; on CIFAR-10 (``gpu``) the ``"cnn"`` of width 16 (ResNet-20 teacher);
    * temperatures ``(1, 2, 4, 8, 16)``, ``β = 1``, seeds ``profile.seeds`` (teacher seed = student seed);
    * MI: ``N = 600`` training images of two similar classes (300 each, fewer where the profile's
      training set is small (``n_train / 20`` per class: 100 in ``smoke``); Fashion-MNIST: Shirt vs
      T-shirt/top, CIFAR-10: cat vs dog), ``L = 5`` views each, under two augmentations
      (``mi_augmentations``: name → ``(max_shift, noise_std)``): Gaussian noise of standard deviation 0.1
      (normalised units) alone, and random shifts of up to 1 pixel plus that noise;
    * ``dk_temperatures``: the temperatures at which the teachers' wrong-class structure is measured.

    >>> from lsutils.config import get_profile
    >>> s = chapter_settings(get_profile("cpu"))
    >>> s["student_model"], s["student_width"], s["temperatures"]
    ('mlp', 64, (1.0, 2.0, 4.0, 8.0, 16.0))
    """
    for attr in ("dataset", "n_train", "model", "width", "seeds"):
        if not hasattr(profile, attr):
            raise TypeError(f"profile must be an lsutils Profile (from get_profile()), got "
                            f"{type(profile).__name__} without .{attr}")
    if profile.model == "cnn":
        student_model, student_width = "mlp", 2 * profile.width
    else:
        student_model, student_width = "cnn", 16
    pair = (6, 0) if profile.dataset == "fashion_mnist" else (3, 5)
    return {
        "teacher_epsilons": (0.0, 0.1, 0.3),
        "student_model": student_model,
        "student_width": student_width,
        "temperatures": (1.0, 2.0, 4.0, 8.0, 16.0),
        "beta": 1.0,
        "seeds": tuple(profile.seeds),
        "mi_classes": pair,
        "mi_per_class": 300 if profile.n_train is None else min(300, profile.n_train // 20),
        "mi_views": 5,
        "mi_augmentations": {"noise 0.1": (0, 0.1), "shift ≤ 1 px + noise 0.1": (1, 0.1)},
        "dk_temperatures": (1.0, 4.0, 16.0),
    }


def teacher_spec(profile: Any, epsilon: float, seed: int):
    """The teacher: ``RunSpec.from_profile(profile, loss=smoothing_spec(epsilon), seed=seed)`` (chapters 3–4's models)."""
    from lsutils.train import RunSpec

    return RunSpec.from_profile(profile, loss=smoothing_spec(epsilon), seed=seed)


def student_spec(profile: Any, seed: int, teacher: Any = None, temperature: float | None = None,
                 beta: float = 1.0, **overrides: Any):
    """The student of :func:`chapter_settings`: distilled from ``teacher`` at ``temperature``, or on hard labels.

    ``teacher=None`` gives the hard-label baseline (plain cross-entropy); otherwise ``teacher`` is a
    :class:`~lsutils.train.RunSpec` and the loss is ``{"name": "distill", "teacher": teacher.to_dict(),
    "temperature": float(T), "beta": float(β)}``. ``overrides`` replace other fields (e.g. ``epochs=12``).
    """
    from lsutils.train import RunSpec

    settings = chapter_settings(profile)
    if teacher is None:
        if temperature is not None:
            raise ValueError(f"temperature must be None for the hard-label student (teacher=None), got {temperature}")
        loss: dict[str, Any] = {"name": "ce"}
    else:
        if not isinstance(teacher, RunSpec):
            raise TypeError(f"teacher must be a RunSpec (e.g. teacher_spec(profile, 0.1, seed)) or None, "
                            f"got {type(teacher).__name__}")
        if temperature is None:
            raise ValueError("temperature is required when distilling from a teacher")
        loss = {"name": "distill", "teacher": teacher.to_dict(), "temperature": _check_temperature(temperature),
                "beta": _check_beta(beta)}
    fields = {"model": settings["student_model"], "width": settings["student_width"], **overrides}
    return RunSpec.from_profile(profile, loss=loss, seed=seed, **fields)


def distillation_specs(profile: Any) -> list[tuple[dict[str, Any], Any]]:
    """Every student of the chapter as ``(labels, spec)``: the grid teacher ε × T × seed, then the baselines.

    ``labels`` holds ``teacher_eps`` (``None`` for the hard-label baseline), ``temperature``
    (``None`` likewise) and ``seed``. ``len = len(ε) · len(T) · len(seeds) + len(seeds)``.
    """
    s = chapter_settings(profile)
    out = []
    for seed in s["seeds"]:
        for eps in s["teacher_epsilons"]:
            teacher = teacher_spec(profile, eps, seed)
            for temp in s["temperatures"]:
                out.append(({"teacher_eps": eps, "temperature": temp, "seed": seed},
                            student_spec(profile, seed, teacher, temp, s["beta"])))
        out.append(({"teacher_eps": None, "temperature": None, "seed": seed}, student_spec(profile, seed)))
    return out


def _accuracy(model: nn.Module, split: Any) -> float:
    from lsutils.models import predict_logits

    return float((predict_logits(model, split.x).argmax(1) == split.y).float().mean())


_TEACHER_OUTPUTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_SPLITS = ("test", "val", "train", "pair")


def teacher_logits(profile: Any, epsilon: float, seed: int, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, K), labels (N,))`` of the teacher :func:`teacher_spec` on one split of the profile's data.

    ``split``: ``"test"``, ``"val"``, ``"train"`` or ``"pair"`` (the training examples of the two
    ``mi_classes`` of :func:`chapter_settings`, all of them). The teacher comes from the cache (trained
    if missing); the logits (CPU, float32) are memoised in this process, because the chapter reads the
    same teacher's test logits for its accuracy, its dark knowledge and its figures.
    """
    from lsutils.data import load_profile_data
    from lsutils.models import predict_logits
    from lsutils.train import train_model

    if split not in _SPLITS:
        raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
    spec = teacher_spec(profile, epsilon, seed)
    key = (spec.key(), split, getattr(profile, "n_test", None))
    if key not in _TEACHER_OUTPUTS:
        data = load_profile_data(profile)
        if split == "pair":
            a, b = chapter_settings(profile)["mi_classes"]
            mask = (data.train.y == a) | (data.train.y == b)
            x, y = data.train.x[mask], data.train.y[mask]
        else:
            part = getattr(data, split)
            x, y = part.x, part.y
        model = train_model(spec, progress=False).model
        _TEACHER_OUTPUTS[key] = (predict_logits(model, x), y)
    return _TEACHER_OUTPUTS[key]


def run_distillation(profile: Any, *, progress: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Train (or load) the teachers and every student of :func:`distillation_specs`; score them.

    Returns ``{"teachers": rows, "students": rows}``: one dict per model with ``seed``, ``test_acc``
    and ``cached`` (whether it came from the cache), plus ``eps`` for teachers and, for students,
    ``teacher_eps``, ``temperature`` (``None`` for the hard-label baseline) and ``val_acc`` (used to
    choose the temperature). Accuracies are fractions; validation = the profile's held-out split,
    test = its test split.
    """
    from lsutils.data import load_profile_data
    from lsutils.train import train_many

    s = chapter_settings(profile)
    data = load_profile_data(profile)
    teacher_specs = [(eps, seed, teacher_spec(profile, eps, seed))
                     for seed in s["seeds"] for eps in s["teacher_epsilons"]]
    teacher_runs = train_many([t for _, _, t in teacher_specs], progress=progress)
    teachers = []
    for (eps, seed, _), run in zip(teacher_specs, teacher_runs):
        z, y = teacher_logits(profile, eps, seed, "test")
        teachers.append({"eps": eps, "seed": seed, "test_acc": float((z.argmax(1) == y).float().mean()),
                         "cached": run.from_cache})
    grid = distillation_specs(profile)
    runs = train_many([spec for _, spec in grid], progress=progress)
    students = [{**labels, "val_acc": _accuracy(run.model, data.val), "test_acc": _accuracy(run.model, data.test),
                 "cached": run.from_cache} for (labels, _), run in zip(grid, runs)]
    return {"teachers": teachers, "students": students}


def _grid_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if not rows:
        raise ValueError("rows is empty; pass run_distillation(...)['students']")
    for key in ("teacher_eps", "temperature", "seed", "test_acc"):
        if key not in rows[0]:
            raise ValueError(f"rows must come from run_distillation(...)['students'] (missing {key!r})")
    return [r for r in rows if r["teacher_eps"] is not None]


def student_table(rows: Sequence[Mapping[str, Any]], metric: str = "test_acc", digits: int = 1):
    """Student accuracy (%) as ``mean ± std`` over seeds: a ``pandas.DataFrame`` teacher ε × T, plus a "hard labels" row.

    ``rows``: ``run_distillation(...)["students"]``; ``metric``: ``"test_acc"`` or ``"val_acc"``.
    """
    import pandas as pd

    from lsutils.stats import fmt_mean_std

    grid = _grid_rows(rows)
    if metric not in ("test_acc", "val_acc"):
        raise ValueError(f"metric must be 'test_acc' or 'val_acc', got {metric!r}")
    epsilons = sorted({r["teacher_eps"] for r in grid})
    temps = sorted({r["temperature"] for r in grid})
    table = pd.DataFrame(index=[f"ε = {e:g}" for e in epsilons], columns=[f"T = {t:g}" for t in temps], dtype=object)
    for e in epsilons:
        for t in temps:
            vals = [r[metric] for r in grid if r["teacher_eps"] == e and r["temperature"] == t]
            table.loc[f"ε = {e:g}", f"T = {t:g}"] = fmt_mean_std(vals, scale=100, digits=digits)
    base = [r[metric] for r in rows if r["teacher_eps"] is None]
    if base:
        table.loc["hard labels (no teacher)"] = [fmt_mean_std(base, scale=100, digits=digits)] + [""] * (len(temps) - 1)
    table.index.name = "teacher"
    return table


def paired_differences(rows: Sequence[Mapping[str, Any]], eps: float, temperature: float | str,
                       reference_eps: float = 0.0, reference_temperature: float | str | None = None,
                       metric: str = "test_acc") -> list[float]:
    """Per seed: accuracy of the ε-teacher's student minus that of the reference teacher's student (same seed).

    ``temperature`` (and ``reference_temperature``, default: the same) is a grid value or ``"best"``:
    the temperature with the highest mean *validation* accuracy for that teacher ε (chosen on
    validation, so the test numbers stay honest). ``reference_eps=None`` compares with the hard-label
    student. Returns one difference per seed (fractions, e.g. ``-0.004``).
    """
    grid = _grid_rows(rows)
    if reference_temperature is None:
        reference_temperature = temperature

    def pick(e: float | None, t: float | str | None) -> dict[int, float]:
        if e is None:
            return {r["seed"]: r[metric] for r in rows if r["teacher_eps"] is None}
        mine = [r for r in grid if r["teacher_eps"] == e]
        if not mine:
            present = sorted({r["teacher_eps"] for r in grid})
            raise ValueError(f"no students of a teacher with eps={e}; present: {present}")
        if t == "best":
            t = best_temperature(rows, e)
        out = {r["seed"]: r[metric] for r in mine if r["temperature"] == t}
        if not out:
            temps = sorted({r["temperature"] for r in mine})
            raise ValueError(f"temperature must be one of {temps} or 'best', got {t!r}")
        return out

    a, b = pick(eps, temperature), pick(reference_eps, reference_temperature)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("the two groups share no seed")
    return [a[s] - b[s] for s in seeds]


def paired_verdict(diffs: Sequence[float], *, scale: float = 100.0, digits: int = 1, higher: str = "higher",
                   lower: str = "lower", none: str = "no clear difference") -> dict[str, Any]:
    """Summarise paired per-seed differences: ``text`` (``"+0.3 ± 0.1"``, times ``scale``) and a ``verdict`` word.

    The book's rule (as in the calibration chapter): a difference is *clear* only when the absolute
    value of its mean exceeds twice its standard deviation over seeds (``ddof=1``); then the verdict is
    ``higher`` or ``lower``, else ``none``. A rough rule for a handful of seeds, not a significance test.
    Also returns ``mean`` and ``std`` (times ``scale``).

    >>> paired_verdict([0.004, 0.005, 0.003])["verdict"], paired_verdict([0.004, -0.002])["verdict"]
    ('higher', 'no clear difference')
    """
    from lsutils.stats import mean_std

    m, sd = mean_std(diffs)
    if len(list(diffs)) < 2:
        raise ValueError(f"diffs needs at least 2 paired differences (seeds) for a verdict, got {list(diffs)}")
    verdict = (higher if m > 0 else lower) if abs(m) > 2 * sd else none
    return {"text": f"{m * scale:+.{digits}f} ± {sd * scale:.{digits}f}", "verdict": verdict,
            "mean": m * scale, "std": sd * scale}


def best_temperature(rows: Sequence[Mapping[str, Any]], eps: float) -> float:
    """The grid temperature with the highest mean validation accuracy for the teacher with smoothing ``eps``."""
    grid = [r for r in _grid_rows(rows) if r["teacher_eps"] == eps]
    if not grid:
        raise ValueError(f"no students of a teacher with eps={eps}")
    temps = sorted({r["temperature"] for r in grid})
    return max(temps, key=lambda t: sum(r["val_acc"] for r in grid if r["temperature"] == t))


# --------------------------------------------------------------------------------------------- dark knowledge
def class_similarity_matrix(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``(K, K)``: row ``y`` is the mean of ``softmax(z / T)`` over the examples of true class ``y``.

    ``logits``: ``(N, K)``; ``labels``: ``(N,)`` int64. Each row sums to 1; the diagonal is the mean
    confidence in the true class, the off-diagonal entries how much probability the model gives to
    each other class — the similarity structure distillation transfers. Every class must occur.

    >>> m = class_similarity_matrix(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1]))
    >>> torch.allclose(m.sum(1), torch.ones(2))
    True
    """
    check_logits_2d("logits", logits)
    k = logits.shape[1]
    check_labels_1d("labels", labels, logits.shape[0], k)
    temperature = _check_temperature(temperature)
    probs = F.softmax(logits.float() / temperature, dim=1)
    counts = torch.bincount(labels, minlength=k)
    if (counts == 0).any():
        raise ValueError(f"labels must contain every class at least once; missing "
                         f"{torch.nonzero(counts == 0).flatten().tolist()}")
    sums = torch.zeros(k, k, dtype=probs.dtype, device=probs.device).index_add_(0, labels, probs)
    return sums / counts[:, None].to(probs.dtype)


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

    ``q`` is the model's distribution over the ``K − 1`` *wrong* classes (the true class removed,
    renormalised). 0 means the wrong classes are all equally likely (no information about which
    classes an example resembles); the maximum ``log(K − 1)`` means all the mass is on one wrong class.
    ``logits``: ``(N, K)``, ``labels``: ``(N,)``; returns ``(N,)`` float32.

    >>> nontarget_divergence(torch.tensor([[5.0, 1.0, 1.0]]), torch.tensor([0]))
    tensor([0.])
    """
    temperature = _check_temperature(temperature)
    others = _wrong_class_logits(logits, labels) / temperature
    k = logits.shape[1]
    log_q = F.log_softmax(others, dim=1)
    entropy = -(log_q.exp() * log_q).sum(1)
    return (math.log(k - 1) - entropy).clamp_min(0.0)


def nontarget_logit_std(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per example, the standard deviation (``ddof=0``) of the ``K − 1`` wrong-class logits ``z_{≠y}``, shape ``(N,)``.

    In logit units: what distillation at a high temperature asks a student to copy, since for large
    ``T`` the ``T²``-scaled loss tends to ``(1 / 2K) Σ_k ((s_k − s̄) − (t_k − t̄))²`` (Hinton et al. 2015).
    0 means all wrong classes get the same logit.

    >>> nontarget_logit_std(torch.tensor([[5.0, 1.0, 3.0]]), torch.tensor([0]))
    tensor([1.])
    """
    return _wrong_class_logits(logits, labels).std(dim=1, unbiased=False)


def logit_gap_statistics(logits: torch.Tensor, labels: torch.Tensor, class_a: int, class_b: int) -> dict[str, float]:
    """The logit difference ``d = z_a − z_b`` on the examples of classes ``a`` and ``b``: its spread within each class.

    Returns ``mean_a``, ``std_a``, ``mean_b``, ``std_b`` (std with ``ddof=1``), ``gap = mean_a − mean_b``,
    ``spread_ratio = sqrt((std_a² + std_b²) / 2) / |gap|`` (how wide each class is compared with the
    distance between the two classes: scale-free, so teachers with different logit scales compare)
    and ``within_fraction`` = within-class variance / total variance of ``d`` over both classes
    (0 = every example of a class sits at its class's mean: nothing tells one example from another).
    """
    check_logits_2d("logits", logits)
    n, k = logits.shape
    check_labels_1d("labels", labels, n, k)
    for name, c in (("class_a", class_a), ("class_b", class_b)):
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < k:
            raise ValueError(f"{name} must be a class index in [0, {k - 1}], got {c!r}")
    if class_a == class_b:
        raise ValueError(f"class_a and class_b must differ, got {class_a} for both")
    d = (logits[:, class_a] - logits[:, class_b]).double()
    da, db = d[labels == class_a], d[labels == class_b]
    for name, part in (("class_a", da), ("class_b", db)):
        if part.numel() < 2:
            raise ValueError(f"need at least 2 examples of {name}, got {part.numel()}")
    ma, mb, sa, sb = float(da.mean()), float(db.mean()), float(da.std()), float(db.std())
    both = torch.cat([da, db])
    within = (float(((da - ma) ** 2).sum()) + float(((db - mb) ** 2).sum())) / both.numel()
    total = float(both.var(unbiased=False))
    gap = ma - mb
    return {"mean_a": ma, "std_a": sa, "mean_b": mb, "std_b": sb, "gap": gap,
            "spread_ratio": math.sqrt((sa ** 2 + sb ** 2) / 2) / abs(gap) if gap != 0 else math.inf,
            "within_fraction": within / total if total > 0 else float("nan")}


def logit_difference_views(model: nn.Module, x: torch.Tensor, class_a: int, class_b: int, *, views: int = 5,
                           max_shift: int = 2, noise_std: float = 0.1, seed: int = 0,
                           batch_size: int = 2048) -> torch.Tensor:
    """``(N, L)``: ``z_a − z_b`` of ``model`` on ``L = views`` randomly perturbed copies of each image in ``x``.

    Each view shifts the image by up to ``max_shift`` pixels in each direction (reflect padding, then
    a crop of the original size; :func:`lsutils.train.augment_batch` without flips) and adds Gaussian
    noise of standard deviation ``noise_std`` (in the normalised units of ``x``). Seeded: the same
    ``seed`` gives the same views. ``x``: ``(N, C, H, W)`` float. The model runs in eval mode.
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


def gaussian_mutual_information(d: torch.Tensor, chunk: int = 2048) -> float:
    """Mutual information ``I(X; D)`` in nats between an example's index ``X`` and a scalar output ``D``.

    ``d``: ``(N, L)`` — ``L ≥ 2`` noisy values (e.g. augmented views) of the output for each of ``N``
    examples. As in Müller et al. (2019, §4), ``X`` is uniform over the ``N`` examples and
    ``p(d | x) = N(μ_x, σ²)`` with ``μ_x`` the mean of row ``x`` and ``σ²`` the pooled within-row
    variance ``Σ_{x,l} (d_{xl} − μ_x)² / (N L)``; the mutual information is then estimated by
    Monte Carlo over the observed values:

        I ≈ (1 / N L) Σ_{x,l} [ log N − (d_{xl} − μ_x)² / 2σ² − log Σ_{x'} exp(−(d_{xl} − μ_{x'})² / 2σ²) ].

    ``I`` is at most ``log N`` (every example identifiable from its output) and near 0 when all
    ``μ_x`` coincide; if the examples fall into two tight, well separated groups (e.g. two classes
    whose examples the model no longer tells apart), ``I ≈ log 2``. Invariant to ``a·d + b``.
    Because each ``μ_x`` is estimated from only ``L`` values, indistinguishable examples still get
    about ``½·log(L / (L − 1))`` on top (0.11 nats for ``L = 5``, 0.03 for ``L = 20``).
    Raises ``ValueError`` if every row is constant (σ² = 0: the views must differ).

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
    mu = d.mean(dim=1)                                         # (N,)
    var = ((d - mu[:, None]) ** 2).mean()
    if not var > 1e-12 * max(float(d.abs().max()) ** 2, 1e-300):
        raise ValueError("d has (numerically) no spread within rows: every view of an example gives the same value, "
                         "so the Gaussian approximation is undefined; use views that differ (augmentation or noise)")
    flat = d.reshape(-1)                                       # (N·L,), row-major: example x's views together
    own = mu.repeat_interleave(L)
    total = 0.0
    for i in range(0, flat.numel(), chunk):
        y = flat[i:i + chunk]
        log_own = -(y - own[i:i + chunk]) ** 2 / (2 * var)
        log_all = torch.logsumexp(-(y[:, None] - mu[None, :]) ** 2 / (2 * var), dim=1)
        total += float((log_own - log_all).sum())
    return math.log(n) + total / flat.numel()


def teacher_diagnostics(profile: Any, *, progress: bool = False) -> list[dict[str, Any]]:
    """For every teacher of :func:`chapter_settings` (ε × seed), the measurements of this chapter as one row.

    Keys: ``eps``, ``seed``; ``nontarget_kl_T{T}`` — mean :func:`nontarget_divergence` on the test set
    at each ``dk_temperatures`` value; ``nontarget_logit_std`` — mean :func:`nontarget_logit_std` on
    the test set; ``spread_ratio`` and ``within_fraction`` of :func:`logit_gap_statistics` for the
    ``mi_classes`` pair on its training examples; ``mi[<augmentation>]`` — :func:`gaussian_mutual_information`
    of :func:`logit_difference_views` on ``mi_per_class`` training images of each class of the pair
    (``mi_views`` views, seed 0) for each of ``mi_augmentations``. Teachers come from the cache
    (trained if missing).
    """
    from lsutils.data import load_profile_data
    from lsutils.train import train_model

    s = chapter_settings(profile)
    data = load_profile_data(profile)
    a, b = s["mi_classes"]
    x2, _ = two_class_subset(data.train, a, b, s["mi_per_class"])
    rows = []
    for seed in s["seeds"]:
        for eps in s["teacher_epsilons"]:
            model = train_model(teacher_spec(profile, eps, seed), progress=progress).model
            z_test, y_test = teacher_logits(profile, eps, seed, "test")
            z_pair, y_pair = teacher_logits(profile, eps, seed, "pair")
            row: dict[str, Any] = {"eps": eps, "seed": seed}
            for temp in s["dk_temperatures"]:
                row[f"nontarget_kl_T{temp:g}"] = float(nontarget_divergence(z_test, y_test, temp).mean())
            row["nontarget_logit_std"] = float(nontarget_logit_std(z_test, y_test).mean())
            gaps = logit_gap_statistics(z_pair, y_pair, a, b)
            row["spread_ratio"], row["within_fraction"] = gaps["spread_ratio"], gaps["within_fraction"]
            for name, (shift, noise) in s["mi_augmentations"].items():
                d = logit_difference_views(model, x2, a, b, views=s["mi_views"], max_shift=shift, noise_std=noise,
                                           seed=0)
                row[f"mi[{name}]"] = gaussian_mutual_information(d)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------- plots
def _mean_std_grid(rows: Sequence[Mapping[str, Any]], metric: str):
    import numpy as np

    grid = _grid_rows(rows)
    epsilons = sorted({r["teacher_eps"] for r in grid})
    temps = sorted({r["temperature"] for r in grid})
    mean = np.zeros((len(epsilons), len(temps)))
    std = np.zeros_like(mean)
    for i, e in enumerate(epsilons):
        for j, t in enumerate(temps):
            vals = np.array([r[metric] for r in grid if r["teacher_eps"] == e and r["temperature"] == t]) * 100
            mean[i, j] = vals.mean()
            std[i, j] = vals.std(ddof=1) if len(vals) > 1 else 0.0
    base = np.array([r[metric] for r in rows if r["teacher_eps"] is None]) * 100
    return epsilons, temps, mean, std, base


def plot_student_heatmap(rows: Sequence[Mapping[str, Any]], metric: str = "test_acc", ax: Any = None,
                         title: str | None = None):
    """Heatmap of student accuracy (%), teacher ε (rows) × temperature (columns), annotated ``mean ± std``.

    Colours are the difference from the hard-label student (red: worse, blue: better), so the
    reader sees at a glance where distillation helps. Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    epsilons, temps, mean, std, base = _mean_std_grid(rows, metric)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.5 * len(temps) + 2.5, 1.0 * len(epsilons) + 1.8))
    ref = float(base.mean()) if base.size else float(mean.mean())
    diff = mean - ref
    lim = max(float(np.abs(diff).max()), 1e-6)
    im = ax.imshow(diff, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(epsilons)):
        for j in range(len(temps)):
            dark = abs(diff[i, j]) > 0.6 * lim
            ax.text(j, i, f"{mean[i, j]:.2f}\n± {std[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(temps)), [f"{t:g}" for t in temps])
    ax.set_yticks(range(len(epsilons)), [f"{e:g}" for e in epsilons])
    ax.set_xlabel("distillation temperature T")
    ax.set_ylabel("teacher's smoothing ε")
    label = "test" if metric == "test_acc" else "validation"
    base_txt = f"; hard-label student {base.mean():.2f} ± {base.std(ddof=1) if base.size > 1 else 0:.2f}" \
        if base.size else ""
    ax.set_title(title or f"Student {label} accuracy (%){base_txt}", fontsize=10)
    ax.figure.colorbar(im, ax=ax, label="points above the hard-label student")
    return ax


def plot_student_vs_temperature(rows: Sequence[Mapping[str, Any]], metric: str = "test_acc", ax: Any = None):
    """Student accuracy (%) against T (log scale), one line per teacher ε, error bars = std over seeds; band = hard labels."""
    import matplotlib.pyplot as plt

    epsilons, temps, mean, std, base = _mean_std_grid(rows, metric)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for i, e in enumerate(epsilons):
        ax.errorbar(temps, mean[i], yerr=std[i], marker="o", capsize=3,
                    label=f"teacher ε = {e:g}" + (" (CE)" if e == 0 else " (LS)"))
    if base.size:
        m, s = base.mean(), (base.std(ddof=1) if base.size > 1 else 0.0)
        ax.axhline(m, color="gray", ls="--", label="hard labels (no teacher)")
        ax.axhspan(m - s, m + s, color="gray", alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(temps, [f"{t:g}" for t in temps])
    ax.set_xlabel("distillation temperature T")
    ax.set_ylabel(f"student {'test' if metric == 'test_acc' else 'validation'} accuracy (%)")
    ax.set_title("Student accuracy vs temperature (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_similarity_matrices(matrices: Mapping[str, torch.Tensor], class_names: Sequence[str] | None = None,
                             axes: Any = None):
    """One heatmap per matrix of :func:`class_similarity_matrix` (log₁₀ colour scale, shared), titled by the dict keys.

    A log scale shows the off-diagonal structure (1e-4 … 1e-1), which a linear scale would hide
    under the diagonal. Returns the array of Axes.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    if not matrices:
        raise ValueError("matrices is empty; pass e.g. {'CE teacher': m0, 'LS teacher': m1}")
    mats = {k: v.detach().cpu().double().numpy() for k, v in matrices.items()}
    k = next(iter(mats.values())).shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names must have {k} entries, got {len(names)}")
    if axes is None:
        _, axes = plt.subplots(1, len(mats), figsize=(4.4 * len(mats) + 1.2, 4.6), squeeze=False,
                               layout="constrained")
        axes = axes[0]
    lo = max(min(float(m[m > 0].min()) for m in mats.values()), 1e-6)
    norm = LogNorm(vmin=lo, vmax=1.0)
    for i, (ax, (title, m)) in enumerate(zip(axes, mats.items())):
        im = ax.imshow(np.clip(m, lo, 1.0), cmap="viridis", norm=norm)
        ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), names if i == 0 else [], fontsize=8)
        ax.set_xlabel("class k (mean softmax probability)")
        if i == 0:
            ax.set_ylabel("true class y")
        ax.set_title(title, fontsize=10)
    axes[0].figure.colorbar(im, ax=list(axes), label="mean p(k | x), log scale", shrink=0.85)
    return axes


def plot_logit_gaps(gaps: Mapping[str, tuple[torch.Tensor, torch.Tensor]], class_names: tuple[str, str],
                    axes: Any = None, bins: int = 40):
    """Histograms of ``d = z_a − z_b`` for the examples of class ``a`` and of class ``b``, one panel per model.

    ``gaps``: ``{title: (d_of_class_a_examples, d_of_class_b_examples)}``. Returns the Axes.
    """
    import matplotlib.pyplot as plt

    if not gaps:
        raise ValueError("gaps is empty; pass e.g. {'CE teacher': (d_a, d_b)}")
    if axes is None:
        _, axes = plt.subplots(1, len(gaps), figsize=(4.6 * len(gaps), 3.4), squeeze=False)
        axes = axes[0]
    a, b = class_names
    for ax, (title, (da, db)) in zip(axes, gaps.items()):
        ax.hist(da.cpu().numpy(), bins=bins, alpha=0.6, label=f"true class: {a}")
        ax.hist(db.cpu().numpy(), bins=bins, alpha=0.6, label=f"true class: {b}")
        ax.set_xlabel(f"logit difference z[{a}] − z[{b}]")
        ax.set_ylabel("examples")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    return axes
