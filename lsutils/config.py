"""Compute profiles: how big every experiment of the book is.

Pick one with the environment variable ``LSUTILS_PROFILE`` (``smoke``, ``cpu`` or ``gpu``);
the default is ``gpu`` when CUDA is available, else ``cpu``. Every chapter prints its
profile once (``print(ls.get_profile())``) and sizes its experiments from it.

The book trains roughly 40–60 models (CE / label smoothing / ε sweeps × seeds, teachers and
students, ALS, noisy labels, regularisers), so each profile is a per-model time budget:

* ``smoke`` — Fashion-MNIST, 2,000 train / 1,000 val / 1,000 test images; ``cnn`` width 8,
  2 epochs, batch 128, seeds (0, 1). Budget: the whole book in ≤ 5 min (cold cache).
* ``cpu`` — Fashion-MNIST, 12,000 train / 5,000 val / the full 10,000 test images; ``cnn``
  width 32, 4 epochs, batch 256, seeds (0, 1, 2). Budget: the whole book in ≤ 15 min (cold cache).
* ``gpu`` — CIFAR-10, 45,000 train / 5,000 val / 10,000 test; ``resnet20`` width 16,
  40 epochs, batch 512, random crop + flip, seeds (0, 1, 2). For a GPU (e.g. Colab).

Measured on the book's reference machine (2 shared CPU cores, PyTorch default threads, data
preloaded as tensors, AdamW with a one-cycle schedule, channels_last input, validation
accuracy after every epoch): one ``cpu`` model trains in 7–8 s (≈ 6,000–6,500 images/s)
and reaches ≈ 88 % test accuracy (88.0 % with cross-entropy, 87.8 % with ε = 0.1, seed 0;
a 5th epoch cost 2 s more and gave the same accuracy; width 24 or 10,000 images lost
0.5 points); one ``smoke`` model trains in 0.3–0.4 s (≈ 75 % test accuracy: smoke only
checks that everything runs). Timings vary by ±15 % between runs
on a shared machine. The ``gpu`` profile was not timed here (no GPU); it follows the usual
CIFAR ResNet recipe scaled to a short schedule.

``lr`` and ``weight_decay`` are meant for AdamW (decoupled weight decay) with a one-cycle /
cosine schedule. Test accuracy was the same with weight decay 5e-4 and 5e-2 in the ``cpu``
profile; the default 1e-2 is AdamW's own.
"""
from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import re
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

        return (f"profile={self.name} dataset={self.dataset} n_train={size(self.n_train)} n_val={self.n_val} "
                f"n_test={size(self.n_test)} model={self.model}(width={self.width}) epochs={self.epochs} "
                f"batch_size={self.batch_size} lr={self.lr:g} weight_decay={self.weight_decay:g} "
                f"augment={self.augment} seeds={self.seeds} device={self.device} precision={self.precision}")

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
        "smoke": Profile(name="smoke", dataset="fashion_mnist", n_train=2000, n_val=1000, n_test=1000,
                         model="cnn", width=8, epochs=2, batch_size=128, lr=3e-3, weight_decay=1e-2,
                         seeds=(0, 1), augment=False, device=device),
        "cpu": Profile(name="cpu", dataset="fashion_mnist", n_train=12000, n_val=5000, n_test=None,
                       model="cnn", width=32, epochs=4, batch_size=256, lr=3e-3, weight_decay=1e-2,
                       seeds=(0, 1, 2), augment=False, device=device),
        "gpu": Profile(name="gpu", dataset="cifar10", n_train=None, n_val=5000, n_test=None,
                       model="resnet20", width=16, epochs=40, batch_size=512, lr=3e-3, weight_decay=5e-2,
                       seeds=(0, 1, 2), augment=True, device=device),
    }


def get_profile(name: str | None = None) -> Profile:
    """The compute profile ``name``, else ``$LSUTILS_PROFILE``, else ``gpu`` with CUDA / ``cpu`` without.

    Raises ``ValueError`` for a name other than ``smoke``, ``cpu``, ``gpu`` (case and
    surrounding spaces are ignored). Choosing ``gpu`` without CUDA works but warns: it
    trains CIFAR-10 ResNets on the CPU, which takes hours.

    >>> print(get_profile("smoke"))  # doctest: +ELLIPSIS
    profile=smoke dataset=fashion_mnist n_train=2000 n_val=1000 n_test=1000 model=cnn(width=8) epochs=2 ...
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
        warnings.warn("profile 'gpu' chosen but no CUDA GPU is available: CIFAR-10 ResNets will train on the CPU "
                      "(hours); use LSUTILS_PROFILE=cpu on a CPU", RuntimeWarning, stacklevel=2)
    return _table(device)[key]
