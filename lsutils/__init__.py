"""lsutils — label smoothing for PyTorch: targets, losses, metrics, data, models, and a fast cached trainer.

The core library of the *Label Smoothing* book, usable on its own::

    import lsutils as ls
    ls.smooth_targets(torch.tensor([2]), num_classes=5, epsilon=0.1)      # tensor([[0.02, 0.02, 0.92, 0.02, 0.02]])
    loss = ls.smoothed_cross_entropy(logits, target, epsilon=0.1)         # = F.cross_entropy(..., label_smoothing=0.1)
    run = ls.train_model(ls.RunSpec.from_profile(ls.get_profile(), loss=ls.smoothing_spec(0.1), seed=0))
    ece = ls.expected_calibration_error(logits.softmax(1), labels)

The most used names are at the top level; the rest live in the modules: :mod:`lsutils.targets` (smoothed
targets and other libraries' conventions), :mod:`lsutils.losses` (label-smoothed losses, distillation, adaptive
LS, ε schedules, online LS, the trainer's loss registry), :mod:`lsutils.metrics` (calibration, OOD detection,
selective classification), :mod:`lsutils.data`, :mod:`lsutils.models`, :mod:`lsutils.train` (the trainer and its
cache), :mod:`lsutils.config` (compute profiles), :mod:`lsutils.geometry` (Müller et al.'s template plane),
:mod:`lsutils.stats` (results over seeds, paired t-tests) and :mod:`lsutils.seq` (a tiny translation task, a
Transformer, greedy and beam decoding). The book's chapter code lives in :mod:`lsutils.book`, which the core never
imports. Importing ``lsutils`` never touches the network.
"""
__version__ = "0.2.0"

from . import config, data, geometry, losses, metrics, models, seq, stats, targets, train  # noqa: F401
from .config import default_device, get_profile
from .data import load_dataset, load_profile_data
from .losses import (als_loss, distillation_loss, optimal_logit_gap, register_loss, smoothed_cross_entropy,
                     smoothing_spec)
from .metrics import (accuracy, aurc, energy_score, expected_calibration_error, fit_temperature,
                      max_logit_score, msp_score, nll, ood_metrics, plot_reliability, risk_coverage_curve)
from .models import build_model, penultimate, predict_logits
from .stats import mean_std, paired_comparison
from .targets import convert_epsilon, smooth_targets
from .train import RunSpec, evaluate, fit, train_many, train_model

__all__ = [
    # modules
    "config", "data", "geometry", "losses", "metrics", "models", "seq", "stats", "targets", "train",
    # compute profiles and data
    "get_profile", "default_device", "load_dataset", "load_profile_data",
    # targets and losses
    "smooth_targets", "convert_epsilon", "smoothed_cross_entropy", "distillation_loss", "als_loss",
    "optimal_logit_gap", "smoothing_spec", "register_loss",
    # models and training
    "build_model", "predict_logits", "penultimate", "fit", "evaluate", "RunSpec", "train_model", "train_many",
    # metrics
    "accuracy", "nll", "expected_calibration_error", "fit_temperature", "plot_reliability",
    "msp_score", "max_logit_score", "energy_score", "ood_metrics", "risk_coverage_curve", "aurc",
    # results over seeds
    "mean_std", "paired_comparison",
]
