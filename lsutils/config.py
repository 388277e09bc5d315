"""Compute profiles: how big every experiment of the book is.

Pick one with the environment variable ``LSUTILS_PROFILE`` (``smoke``, ``cpu`` or ``gpu``);
the default is ``gpu`` when CUDA is available, else ``cpu``. Every chapter prints its
profile once and sizes its experiments from it.

**The regime.** The papers the book tests train to (near) zero training error, where cross-entropy is
over-confident; an under-trained model is already calibrated and cannot show what label smoothing does to an
over-confident one. So every profile trains to convergence: the ``cpu`` CE models reach ≥ 99 % training
accuracy and a fitted temperature ≥ 1.5 on held-out data (measured on the book's machine, seed 0:
train accuracy 100 %, test accuracy 84.5 %, test ECE 7.6 %, T = 1.70; ε = 0.05: ECE 1.7 %, T = 0.88).
For the same compute, a small training set trained for many epochs is in that regime, a large one trained
for a few epochs is not (12,000 images × 4 epochs: 92.6 % training accuracy, ECE 1.1 %, T = 1.08).

* ``smoke`` — Fashion-MNIST, 500 train / 500 val / 1,000 test images; ``cnn`` width 8, 20 epochs,
  batch 128, seeds (0, 1): the same regime in miniature, for the tests (every chapter under nbval).
* ``cpu`` — Fashion-MNIST, 3,000 train / 2,500 val / the full 10,000 test images; ``cnn`` width 32
  (0.42 M parameters), 16 epochs, batch 256, seeds (0, 1, 2): the published book. One model trains in
  about 3–5 s on the book's 2-core machine.
* ``gpu`` — CIFAR-10 for a GPU, sized for a free Colab T4: 10,000 train / 5,000 val / the full 10,000 test
  images; ``airbench`` width 32 (:class:`lsutils.models.AirbenchNet`, Keller Jordan's fast CIFAR-10 network at half
  its width: 0.50 M parameters, 0.20 GFLOP per image for a training step), 30 epochs, batch 512, seeds (0, 1, 2),
  **no augmentation**. Like ``cpu``, a small training set trained for many epochs, so cross-entropy memorises it
  (≥ 99 % training accuracy) and is over-confident on held-out images. Augmentation (random crop + flip) was left
  out on purpose: it delays memorisation, and at this budget it keeps CE out of the regime — measured with the same
  network on Fashion-MNIST at the ``cpu`` sizes (3,000 × 16 epochs, seed 0): without augmentation 100 % training
  accuracy from epoch 10, test ECE 5.8 %, T = 1.35; with crop + flip 92.7 % training accuracy at the end, ECE 1.3 %,
  T = 1.01 (calibrated: nothing left for label smoothing to fix). A model is ≈ 69 TFLOP (training + validation
  every epoch), an estimated 11–12 s on a T4; ``make gpu-plan`` (``tools/gpu_plan.py``) plans every chapter from
  the book's run list at ≤ 15 min. These T4 numbers are estimates (no GPU was at hand), and so is the regime on
  CIFAR-10 (no CIFAR-10 on the book's machine): the first GPU run should confirm CE's training accuracy ≥ 99 % and
  fitted temperature > 1 (each chapter prints them).

``lr`` and ``weight_decay`` are meant for AdamW (decoupled weight decay) with a one-cycle schedule.
"""
from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import re
import textwrap
import warnings
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Profile", "get_profile", "default_device", "precision", "autocast", "cpu_has_native_bf16", "PROFILE_NAMES",
           "PROFILE_ENV_VAR", "PRECISION_ENV_VAR"]

PROFILE_ENV_VAR = "LSUTILS_PROFILE"
PRECISION_ENV_VAR = "LSUTILS_PRECISION"
PROFILE_NAMES = ("smoke", "cpu", "gpu")
_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Profile:
    """The sizes of every experiment: data, model, schedule, seeds and device.

    >>> p = get_profile("smoke")
    >>> p.dataset, p.model, len(p.seeds) >= 2
    ('fashion_mnist', 'cnn', True)
    """

    name: str
    dataset: str
    n_train: int | None
    n_val: int
    n_test: int | None
    model: str
    width: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seeds: tuple[int, ...]
    augment: bool
    device: str

    def __str__(self) -> str:
        def size(n: int | None) -> str:
            return "all" if n is None else str(n)

        # wrapped at 72 characters, so that the line a chapter prints fits the book's page
        return textwrap.fill(
            f"profile={self.name} dataset={self.dataset} n_train={size(self.n_train)} n_val={self.n_val} "
            f"n_test={size(self.n_test)} model={self.model}(width={self.width}) epochs={self.epochs} "
            f"batch_size={self.batch_size} lr={self.lr:g} weight_decay={self.weight_decay:g} "
            f"augment={self.augment} seeds={self.seeds} device={self.device} precision={self.precision}",
            72, break_long_words=False, break_on_hyphens=False)

    @property
    def precision(self) -> str:
        """The trainer's arithmetic on this profile's device (:func:`precision`)."""
        return precision(self.device)


def default_device() -> torch.device:
    """``cuda`` if a CUDA GPU is available, else ``cpu``.

    >>> default_device().type in ("cuda", "cpu")
    True
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (the ``avx512_bf16`` or ``amx_bf16`` instructions; Linux only).

    Without them PyTorch emulates bf16 on the CPU, which is several times *slower* than float32."""
    try:
        flags = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def precision(device: Any = None) -> str:
    """The arithmetic the trainer uses on ``device`` (default: :func:`default_device`): ``"bf16"``, ``"fp16"`` or ``"fp32"``.

    * CUDA: bf16 autocast where the GPU has native bf16 (Ampere and newer), else fp16 with a gradient scaler.
    * CPU: bf16 autocast where the CPU has native bf16 instructions (:func:`cpu_has_native_bf16`; about
      1.5–2× faster training for the book's CNN), else fp32. ``$LSUTILS_PRECISION=fp32`` forces fp32,
      ``bf16`` forces bf16 autocast.

    Autocast covers the forward pass of the network; losses, the optimiser and the classifier's output used for
    metrics stay in float32. The precision is part of every cached model's key.
    """
    dev = torch.device(device) if device is not None else default_device()
    choice = os.environ.get(PRECISION_ENV_VAR, "auto").strip().lower() or "auto"
    if choice not in _PRECISIONS:
        raise ValueError(f"{PRECISION_ENV_VAR}={choice!r} is not allowed; use one of {', '.join(_PRECISIONS)}")
    if choice == "fp32":
        return "fp32"
    if dev.type == "cuda":
        try:  # native bf16 only (Ampere and newer); emulated bf16 (e.g. a T4) is slower than fp16
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch without the argument
            bf16 = torch.cuda.is_bf16_supported()
        return "bf16" if bf16 or choice == "bf16" else "fp16"
    if dev.type == "cpu" and (choice == "bf16" or cpu_has_native_bf16()):
        return "bf16"
    return "fp32"


def autocast(device: Any = None) -> Any:
    """A context manager for the forward pass in :func:`precision` on ``device`` (a no-op for fp32).

    >>> with autocast("cpu"):
    ...     y = torch.nn.Linear(2, 2)(torch.ones(1, 2))
    """
    dev = torch.device(device) if device is not None else default_device()
    mode = precision(dev)
    if mode == "fp32" or dev.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def _table(device: str) -> dict[str, Profile]:
    return {
        "smoke": Profile(name="smoke", dataset="fashion_mnist", n_train=500, n_val=500, n_test=1000,
                         model="cnn", width=8, epochs=20, batch_size=128, lr=3e-3, weight_decay=1e-2,
                         seeds=(0, 1), augment=False, device=device),
        "cpu": Profile(name="cpu", dataset="fashion_mnist", n_train=3000, n_val=2500, n_test=None,
                       model="cnn", width=32, epochs=16, batch_size=256, lr=3e-3, weight_decay=1e-2,
                       seeds=(0, 1, 2), augment=False, device=device),
        "gpu": Profile(name="gpu", dataset="cifar10", n_train=10000, n_val=5000, n_test=None,
                       model="airbench", width=32, epochs=30, batch_size=512, lr=3e-3, weight_decay=1e-2,
                       seeds=(0, 1, 2), augment=False, device=device),
    }


def get_profile(name: str | None = None) -> Profile:
    """The compute profile ``name``, else ``$LSUTILS_PROFILE``, else ``gpu`` with CUDA / ``cpu`` without.

    Raises ``ValueError`` for a name other than ``smoke``, ``cpu``, ``gpu`` (case and
    surrounding spaces are ignored). Choosing ``gpu`` without CUDA works but warns: it
    trains CIFAR-10 networks of 0.2 GFLOP per image on the CPU, which takes hours per chapter.

    >>> print(get_profile("smoke"))  # doctest: +ELLIPSIS
    profile=smoke dataset=fashion_mnist n_train=500 n_val=500 n_test=1000
    model=cnn(width=8) epochs=20 batch_size=128 ...
    """
    source = "name"
    if name is None:
        env = os.environ.get(PROFILE_ENV_VAR, "").strip()
        if env:
            name, source = env, f"environment variable {PROFILE_ENV_VAR}"
    if name is None:
        name = "gpu" if torch.cuda.is_available() else "cpu"
    if not isinstance(name, str):
        raise TypeError(f"profile name must be a str, got {type(name).__name__} ({name!r})")
    key = name.strip().lower()
    if key not in PROFILE_NAMES:
        raise ValueError(f"unknown compute profile {name!r} (from {source}); allowed: {', '.join(PROFILE_NAMES)}")
    device = str(default_device())
    if key == "gpu" and device == "cpu":
        warnings.warn("profile 'gpu' chosen but no CUDA GPU is available: its CIFAR-10 networks will train on the "
                      "CPU (hours); use LSUTILS_PROFILE=cpu on a CPU", RuntimeWarning, stacklevel=2)
    return _table(device)[key]
