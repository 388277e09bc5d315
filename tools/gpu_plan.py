"""How long the book's trained models take on a Colab T4 in the ``gpu`` profile: a plan, printed.

    python tools/gpu_plan.py                 # (make gpu-plan) the plan for the gpu profile
    python tools/gpu_plan.py --utilisation 0.1

Models per chapter: a chapter module of ``lsutils.book`` may expose ``trained_models(profile) -> int`` (the
number of distinct models its run list trains in that profile, cached ones shared with an earlier chapter not
counted); where none does yet, the ESTIMATE table below is used (counted from the cpu-profile model cache,
109 models in all, and the chapters' run lists as of this writing) and the plan says so.

FLOPs per model: ``torch.utils.flop_counter.FlopCounterMode`` on one forward + backward of the profile's model
at batch 2 (per image), × training images × epochs, plus one forward per epoch over the validation set.
T4: 65 TFLOP/s fp16 tensor-core peak. The default utilisation, 10 % (6.5 TFLOP/s), is what small CIFAR
networks reach there in practice: at batch 512 their convolutions have 16–64 channels, too narrow to fill the
tensor cores, and BatchNorm/ReLU are memory-bound (airbench reaches roughly a fifth of an A100's peak with
hand-tuned widths). Treat the times as estimates within a factor of two.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import torch
import torch.nn.functional as F

T4_PEAK = 65e12
BUDGET_S = 15 * 60

#: models trained per chapter (estimate, see the module docstring); 0 = the chapter reuses cached models only
ESTIMATE = {
    "01_math": ("", 0),
    "02_implementations": ("implementations", 6),
    "03_penultimate": ("penultimate", 6),
    "04_calibration": ("calibration", 18),
    "05_distillation": ("distillation", 20),
    "06_als_ood": ("als_ood", 16),
    "07_noise_schedules_tuning": ("practice", 24),
    "08_regularizers_and_limits": ("regularizers", 19),
}


def model_flops(profile) -> int:
    """Forward + backward FLOPs per image of the profile's model (flop counter, batch 2)."""
    from torch.utils.flop_counter import FlopCounterMode
    from lsutils import models

    channels, side = (3, 32) if profile.dataset == "cifar10" else (1, 28)
    model = models.build_model(profile.model, 10, channels, width=profile.width).train()
    x = torch.randn(2, channels, side, side)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long)).backward()
    return counter.get_total_flops() // 2


def chapter_models(chapter: str, module: str, estimate: int, profile) -> tuple[int, str]:
    if module:
        try:
            fn = getattr(importlib.import_module(f"lsutils.book.{module}"), "trained_models", None)
        except ImportError:
            fn = None
        if callable(fn):
            return int(fn(profile)), "chapter"
    return estimate, "estimate"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utilisation", type=float, default=0.10, help="fraction of the T4's 65 TFLOP/s reached")
    args = ap.parse_args(argv)
    from lsutils import config

    profile = config._table("cuda")["gpu"]
    n_train = profile.n_train or 45000
    per_image = model_flops(profile)
    per_model = per_image * (n_train * profile.epochs) + per_image // 3 * profile.n_val * profile.epochs
    rate = T4_PEAK * args.utilisation
    print(f"{profile}")
    print(f"model {profile.model}(width={profile.width}): {per_image / 1e6:.1f} MFLOP per image forward + backward; "
          f"{per_model / 1e15:.3f} PFLOP per model ({n_train} images × {profile.epochs} epochs + validation)")
    print(f"T4 at {args.utilisation:.0%} of 65 TFLOP/s = {rate / 1e12:.1f} TFLOP/s; budget 15 min per chapter")
    print(f"| chapter | models | source | PFLOP | est. T4 minutes | fits 15 min |")
    print(f"|---|---:|---|---:|---:|---|")
    worst = 0.0
    for chapter, (module, estimate) in ESTIMATE.items():
        n, source = chapter_models(chapter, module, estimate, profile)
        seconds = n * per_model / rate
        worst = max(worst, seconds)
        print(f"| {chapter} | {n} | {source} | {n * per_model / 1e15:.2f} | {seconds / 60:.1f} | "
              f"{'yes' if seconds <= BUDGET_S else 'NO'} |")
    print(f"largest chapter: {worst / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
