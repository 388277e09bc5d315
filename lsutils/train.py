"""The book's trainer: a fast loop over tensors on the device, and a cache of trained models.

:func:`fit` trains any model on tensors that stay on the device the whole time — no
``DataLoader``, no per-image Python transforms. Each epoch draws a seeded permutation of the
training set (``torch.Generator``) and splits it into ``ceil(N / batch_size)`` batches of nearly
equal size (sizes differ by at most one, none larger than ``batch_size``), so every example is
used exactly once per epoch and there is never a tiny last batch. The optimiser is AdamW with a
one-cycle learning-rate schedule over all steps (cosine warm-up from ``lr / 25`` to ``lr`` over the
first 25 % of the steps, then cosine decay to ``lr / 2.5·10⁵``); on the book's small CNN it reached
≈ 0.5 points higher test accuracy than SGD with Nesterov momentum in 4 epochs (see ``benchmarks/README.md``). Inputs and weights use the ``channels_last`` memory format (faster
convolutions, on the CPU as well as on the GPU); on CUDA the forward pass runs under bf16
autocast (fp16 with a gradient scaler where bf16 is not supported). Optional on-device
augmentation (random crop with 4-pixel reflect padding + horizontal flip) is drawn for the whole
batch at once from the same seeded generator. Running loss and accuracy are summed on the device
and read once per epoch, so a step never waits for the device. ``on_epoch_end(model, epoch, history)`` looks at the
model after every epoch (eval mode, no gradients) without changing what is trained.

Losses follow the protocol of :mod:`lsutils.registry`: ``loss(logits, y)``, optionally
``loss.start_epoch(epoch, epochs)`` before every epoch, and with ``loss.wants_batch = True`` the
call ``loss(logits, y, batch)`` where ``batch.x`` holds the (augmented) inputs and
``batch.index`` their rows in the training set.

:func:`train_model` turns a :class:`RunSpec` (plain data) into a trained model, cached on disk
under ``data_root()/cache/<key>.pt``: the key is the SHA-256 of the spec's canonical JSON, of the code that
determines the weights (:func:`code_fingerprint`) and of the arithmetic (:func:`lsutils.config.precision`). Files are written atomically and read with ``weights_only=True``; a
file that is truncated, corrupt or belongs to another spec is reported with one warning and the
model is retrained. A chapter that needs another chapter's model builds the same spec and gets
the cached one.

**Run log.** With ``LSUTILS_RUN_LOG=path`` every :func:`train_model`, :func:`load_or_train` and stand-alone
:func:`fit` call appends one JSON line to ``path``: what was trained (the spec or config, model, sizes, epochs, and
every :func:`fit` it ran), whether it came from the cache, and its seconds (see :func:`read_run_log`).
``tools/execute.py`` sets it per chapter; ``tools/gpu_plan.py`` turns such a log into the book's GPU plan.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import math
import os
import pathlib
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._validate import (as_int, as_real, check_class_indices, check_finite, check_int, check_num_classes,
                        check_positive, check_probability, check_tensor, progress_bar)
from .config import autocast, default_device, precision
from .data import available_datasets, data_root, load_dataset
from .losses import LossContext, build_loss, loss_factory, validate_loss_spec
from .models import available_models, build_model, forward_logits

__all__ = ["Batch", "fit", "evaluate", "augment_batch", "add_label_noise", "one_cycle_schedule",
           "RunSpec", "TrainedRun", "train_model", "train_many", "load_or_train", "code_fingerprint", "cache_path",
           "read_run_log", "CACHE_FORMAT", "RUN_LOG_ENV_VAR"]

CACHE_FORMAT = "lsutils-trained-run/2"
_PCT_WARMUP = 0.25          # one-cycle: fraction of the steps spent warming up
_EVAL_BATCH = 1024


# --------------------------------------------------------------------------------------------- small helpers
@dataclass
class Batch:
    """What a ``wants_batch`` loss receives as its third argument.

    ``x``: the batch's (augmented) inputs ``(B, C, H, W)`` on the training device;
    ``index``: ``(B,)`` int64, their rows in the training tensors passed to :func:`fit`.

    >>> b = Batch(x=torch.zeros(2, 1, 4, 4), index=torch.tensor([5, 7]))
    >>> b.index.tolist()
    [5, 7]
    """

    x: torch.Tensor
    index: torch.Tensor


def _check_real(name: str, value: Any, *, positive: bool = False) -> float:
    value = as_real(name, value)
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} ({value!r})")
    return value


def _resolve_device(device: Any) -> torch.device:
    if device is None:
        return default_device()
    try:
        return torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"device must be None, 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}") from exc


def _check_xy(x: Any, y: Any, xname: str, yname: str) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor(xname, x, floating=True, min_dim=2)
    check_tensor(yname, y, floating=False)
    if y.dim() != 1:
        raise ValueError(f"{yname} must be a 1-D tensor of class indices (N,), got shape {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{xname} and {yname} must hold the same number of examples, "
                         f"got {x.shape[0]} inputs and {y.shape[0]} labels")
    if y.dtype != torch.long:
        raise TypeError(f"{yname} must have dtype torch.long (int64), got {y.dtype}; use {yname}.long()")
    # A finite sum proves every element finite (NaN and ±inf propagate into any sum) at a tenth of the cost of
    # the element-wise test, which runs only when the sum is not finite (NaN/inf present, or an overflow).
    if not (x.numel() and bool(torch.isfinite(x.sum(dtype=torch.float32 if x.dtype != torch.float64 else None)))):
        check_finite(xname, x)
    return x, y


def _unpack_val(val: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    if val is None:
        return None
    if hasattr(val, "x") and hasattr(val, "y"):
        return _check_xy(val.x, val.y, "val.x", "val.y")
    if isinstance(val, (tuple, list)) and len(val) == 2:
        return _check_xy(val[0], val[1], "val[0] (x)", "val[1] (y)")
    raise TypeError(f"val must be None, a Split (with .x and .y) or a pair (x_val, y_val), got {type(val).__name__}")


def _amp_settings(device: torch.device) -> tuple[Callable[[], contextlib.AbstractContextManager], Any]:
    """``(autocast context factory, GradScaler or None)`` for :func:`lsutils.config.precision` on ``device``."""
    scaler = torch.amp.GradScaler("cuda") if precision(device) == "fp16" else None
    return (lambda: autocast(device)), scaler


_MALLOC_ENV_VAR = "LSUTILS_TUNE_MALLOC"


@functools.lru_cache(maxsize=1)
def _tune_cpu_allocator() -> bool:
    """Keep freed memory in the process (glibc ``mallopt``), once per process; returns whether it was set.

    A CPU training step allocates and frees many activation-sized tensors (0.1–10 MB). With glibc's defaults
    each such block is ``mmap``-ed fresh and given back to the system when freed, so every step pays about
    1,300–2,000 page faults (the kernel zeroing each new page) — measured ≈ 15–25 % of a step of the book's CNN.
    Raising the mmap threshold to 32 MiB and the trim threshold to 512 MiB serves them from the heap again:
    the process keeps up to its peak memory instead of returning it between steps. It changes no result.
    Process-wide (what a user gets with jemalloc or tcmalloc preloaded); ``LSUTILS_TUNE_MALLOC=0`` turns it off.
    Linux with glibc only; elsewhere a no-op.
    """
    if os.environ.get(_MALLOC_ENV_VAR, "1").strip() == "0":
        return False
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 512 << 20))
    except (OSError, AttributeError):
        return False


def _adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused into one kernel per step where this torch supports it on the parameters' device."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without the fused kernel
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def _to_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _uses_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Seed torch's global generators for the block and restore them afterwards."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4,
                  flip: bool = True) -> torch.Tensor:
    """Random crop (``padding`` pixels of reflect padding, then a crop of the original size) and horizontal flip.

    Works on a whole batch ``(B, C, H, W)`` at once, on whatever device ``x`` is; the random
    offsets and flips come from ``generator`` (a CPU ``torch.Generator``; ``None`` = the global one),
    so a seeded generator gives the same augmentation every time. Returns a new tensor of the
    same shape.

    >>> g = torch.Generator().manual_seed(0)
    >>> augment_batch(torch.randn(8, 3, 32, 32), g).shape
    torch.Size([8, 3, 32, 32])
    """
    check_tensor("x", x, floating=True)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W) for augmentation, got {tuple(x.shape)}")
    check_int("padding", padding, minimum=0)
    b, _, h, w = x.shape
    if padding >= min(h, w):
        raise ValueError(f"padding must be smaller than the image side ({min(h, w)}), got {padding}")
    if padding:
        xp = F.pad(x, (padding, padding, padding, padding), mode="reflect")
        offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device, non_blocking=True)
        rows = (offsets[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # (B, 1, H, 1)
        cols = (offsets[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # (B, 1, 1, W)
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = xp[batch, chans, rows, cols]
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device, non_blocking=True)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


# --------------------------------------------------------------------------------------------- the run log
RUN_LOG_ENV_VAR = "LSUTILS_RUN_LOG"
_RUN_LOG_FORMAT = "lsutils-run-log/1"
_RUN_STACK: list[dict[str, Any]] = []        # the train_model / load_or_train calls in progress, innermost last
_RUN_LOG_WARNED: set[str] = set()


def _run_log_path() -> pathlib.Path | None:
    path = os.environ.get(RUN_LOG_ENV_VAR, "").strip()
    return pathlib.Path(path) if path else None


def _profile_name() -> str:
    from .config import PROFILE_ENV_VAR

    name = os.environ.get(PROFILE_ENV_VAR, "").strip().lower()
    return name or ("gpu" if torch.cuda.is_available() else "cpu")


def _write_run_log(record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``$LSUTILS_RUN_LOG`` (nothing when unset; a warning if unwritable)."""
    path = _run_log_path()
    if path is None:
        return
    line = json.dumps({"format": _RUN_LOG_FORMAT, **record}, sort_keys=True, default=str) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:    # one write of one line: appends from one process stay whole
            f.write(line)
    except OSError as exc:
        if str(path) not in _RUN_LOG_WARNED:
            _RUN_LOG_WARNED.add(str(path))
            warnings.warn(f"lsutils: cannot write the run log {path} ({exc}); training goes on without it",
                          RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def _logged_run(kind: str, **fields: Any):
    """Collect what one ``train_model`` / ``load_or_train`` call trains (its :func:`fit` calls), then log it.

    Yields the record; the caller sets ``key``, ``from_cache`` (and anything else) on it. Nothing is logged when
    the call fails, nor when ``$LSUTILS_RUN_LOG`` is unset (the bookkeeping is a few dict operations).
    """
    record: dict[str, Any] = {"kind": kind, "nested": bool(_RUN_STACK), "profile": _profile_name(), **fields,
                              "fits": []}
    _RUN_STACK.append(record)
    t0 = time.perf_counter()
    try:
        yield record
    finally:
        _RUN_STACK.pop()
    record["seconds"] = round(time.perf_counter() - t0, 3)
    _write_run_log(record)


def _fit_record(model: nn.Module, x: torch.Tensor, epochs: int, batch_size: int, augment: bool, n_val: int,
                seconds: float) -> dict[str, Any]:
    return {"model_class": type(model).__name__, "n_params": int(sum(p.numel() for p in model.parameters())),
            "input_shape": [int(d) for d in x.shape[1:]], "n_train": int(x.shape[0]), "epochs": int(epochs),
            "batch_size": int(batch_size), "augment": bool(augment), "n_val": int(n_val),
            "seconds": round(seconds, 3)}


def _log_fit(record: dict[str, Any]) -> None:
    """A finished :func:`fit`: part of the innermost logged call, else a stand-alone line of its own."""
    if _RUN_STACK:
        _RUN_STACK[-1]["fits"].append(record)
    elif _run_log_path() is not None:
        _write_run_log({"kind": "fit", "nested": False, "profile": _profile_name(), "from_cache": False,
                        "seconds": record["seconds"], "fits": [record]})


def read_run_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run log written under ``LSUTILS_RUN_LOG`` (one dict per JSON line; blank lines skipped).

    Each record has ``kind`` (``"train_model"``, ``"load_or_train"`` or ``"fit"``), ``nested`` (a teacher loaded
    while another model trained), ``profile``, ``from_cache``, ``seconds`` (wall time of the call), ``fits`` (one
    entry per :func:`fit` it ran: ``model_class``, ``n_params``, ``input_shape``, ``n_train``, ``epochs``,
    ``batch_size``, ``augment``, ``n_val``, ``seconds``; empty when the model came from the cache), and for
    ``train_model`` the ``spec`` (:meth:`RunSpec.to_dict`) and ``key``, for ``load_or_train`` the ``config`` and
    ``key``. Raises ``ValueError`` naming the line of a line that is not a JSON object.
    """
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {number}: not JSON ({exc})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


# --------------------------------------------------------------------------------------------- evaluation
_N_BINS = 15


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dev: torch.device, batch_size: int) -> dict[str, float]:
    """Mean cross-entropy (NLL), accuracy, 15-bin ECE and mean confidence of ``model`` on ``(x, y)``, in eval mode."""
    autocast, _ = _amp_settings(dev)
    channels_last = _uses_channels_last(x)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    count = torch.zeros(_N_BINS, dtype=torch.float64, device=dev)
    acc_sum = torch.zeros(_N_BINS, dtype=torch.float64, device=dev)
    conf_sum = torch.zeros(_N_BINS, dtype=torch.float64, device=dev)
    try:
        for i in range(0, x.shape[0], batch_size):
            xb = _to_input(x[i:i + batch_size].to(dev, non_blocking=True), channels_last)
            yb = y[i:i + batch_size].to(dev, non_blocking=True)
            logits = forward_logits(model, xb, dev)
            if logits.dim() != 2 or logits.shape[0] != yb.shape[0]:
                raise ValueError(f"the model must return logits of shape (B, K), got {tuple(logits.shape)}")
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
            conf, pred = logits.double().softmax(1).max(1)
            hit = (pred == yb).double()
            correct += hit.sum().long()
            idx = (torch.ceil(conf * _N_BINS).long() - 1).clamp_(0, _N_BINS - 1)   # bins (m/M, (m+1)/M]
            count += torch.bincount(idx, minlength=_N_BINS).double()
            acc_sum += torch.bincount(idx, weights=hit, minlength=_N_BINS)
            conf_sum += torch.bincount(idx, weights=conf, minlength=_N_BINS)
    finally:
        model.train(was_training)
    n = x.shape[0]
    return {"loss": float(loss_sum.item()) / n, "acc": float(correct.item()) / n,
            "ece": float((acc_sum - conf_sum).abs().sum().item()) / n, "conf": float(conf_sum.sum().item()) / n}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = _EVAL_BATCH,
             device: Any = None) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` of ``model`` on ``x`` ``(N, ...)``, ``y`` ``(N,)`` int64, in eval mode.

    The loss is plain cross-entropy (negative log-likelihood) whatever loss the model was trained
    with, so validation losses of CE and label-smoothed models are comparable. Runs in chunks of
    ``batch_size`` on ``device`` (``None`` = where the model's parameters are), without gradients,
    and restores the model's training mode afterwards.

    >>> m = nn.Linear(3, 2)
    >>> with torch.no_grad():
    ...     _ = m.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])); _ = m.bias.zero_()
    >>> x = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [2.0, 0, 0]]); y = torch.tensor([0, 1, 1])
    >>> loss, acc = evaluate(m, x, y)
    >>> round(acc, 4)
    0.6667
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x, y = _check_xy(x, y, "x", "y")
    check_positive("batch_size", batch_size, integer=True)
    dev = _resolve_device(device) if device is not None else next(
        (p.device for p in model.parameters()), torch.device("cpu"))
    r = _evaluate(model, x, y, dev, batch_size)
    return r["loss"], r["acc"]


# --------------------------------------------------------------------------------------------- fit
def one_cycle_schedule(optimizer: torch.optim.Optimizer, lr: float, total_steps: int):
    """The trainer's learning-rate schedule: one-cycle over ``total_steps`` (25 % cosine warm-up from ``lr/25``).

    A run too short for a warm-up of at least two steps (``total_steps < 8``) keeps ``lr`` constant instead:
    ``OneCycleLR`` divides by the warm-up length minus one and fails (ZeroDivisionError) or misbehaves there.
    """
    if total_steps * _PCT_WARMUP < 2:
        for group in optimizer.param_groups:
            group["lr"] = lr
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total_steps, pct_start=_PCT_WARMUP, anneal_strategy="cos",
        div_factor=25.0, final_div_factor=1e4)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, *, epochs: int, batch_size: int,
         lr: float, weight_decay: float, seed: int, device: Any, augment: bool, val: Any, progress: bool,
         desc: str | None, leave: bool, on_epoch_end: Callable | None = None) -> dict[str, list[float]]:
    fit_t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(logits, y), got {type(loss_fn).__name__}")
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise TypeError(f"on_epoch_end must be None or callable as on_epoch_end(model, epoch, history), "
                        f"got {type(on_epoch_end).__name__}")
    x, y = _check_xy(x, y, "x", "y")
    epochs = as_int("epochs", epochs, minimum=1)
    batch_size = as_int("batch_size", batch_size, minimum=1)
    lr = _check_real("lr", lr, positive=True)
    weight_decay = _check_real("weight_decay", weight_decay)
    seed = as_int("seed", seed, minimum=0)
    augment = _check_bool("augment", augment)
    progress = _check_bool("progress", progress)
    if augment and x.dim() != 4:
        raise ValueError(f"augment=True needs images x of shape (N, C, H, W), got {tuple(x.shape)}")
    val_xy = _unpack_val(val)
    dev = _resolve_device(device)

    if dev.type == "cpu":
        _tune_cpu_allocator()
    model.to(dev)
    channels_last = _uses_channels_last(x)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    x = x.to(dev, non_blocking=True)
    y = y.to(dev, non_blocking=True)
    if val_xy is not None:
        val_xy = (val_xy[0].to(dev, non_blocking=True), val_xy[1].to(dev, non_blocking=True))

    # One probe forward pass (eval mode, no gradients): checks that the model takes x and gives the
    # number of classes, so that bad labels fail here rather than as a device-side assert.
    model.eval()
    with torch.no_grad():
        probe = model(_to_input(x[:2], channels_last))
    if probe.dim() != 2:
        raise ValueError(f"the model must return logits of shape (B, K), got {tuple(probe.shape)} for x[:2]")
    num_classes = probe.shape[1]
    check_class_indices("y", y, num_classes)
    if val_xy is not None:
        check_class_indices("val y", val_xy[1], num_classes)

    n = x.shape[0]
    n_batches = math.ceil(n / batch_size)
    total_steps = epochs * n_batches
    wants_batch = bool(getattr(loss_fn, "wants_batch", False))
    start_epoch = getattr(loss_fn, "start_epoch", None)
    autocast, scaler = _amp_settings(dev)

    optimizer = _adamw(model, lr, weight_decay)
    scheduler = one_cycle_schedule(optimizer, lr, total_steps)
    generator = torch.Generator().manual_seed(seed)

    history: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "seconds": []}
    if val_xy is not None:
        history.update(val_loss=[], val_acc=[], val_ece=[], val_conf=[])

    bar = progress_bar(total=total_steps, desc=desc or "training", unit="step", disable=not progress, leave=leave)
    old_benchmark = torch.backends.cudnn.benchmark
    try:
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
        with _seeded(seed, dev):
            for epoch in range(epochs):
                t0 = time.perf_counter()
                if start_epoch is not None:
                    start_epoch(epoch, epochs)
                model.train()
                perm = torch.randperm(n, generator=generator).to(dev, non_blocking=True)
                loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
                correct = torch.zeros((), dtype=torch.int64, device=dev)
                for idx in torch.tensor_split(perm, n_batches):
                    xb = x.index_select(0, idx)
                    yb = y.index_select(0, idx)
                    if augment:
                        xb = augment_batch(xb, generator)
                    xb = _to_input(xb, channels_last)
                    with autocast():
                        logits = model(xb)
                    logits = logits.float()
                    loss = loss_fn(logits, yb, Batch(xb, idx)) if wants_batch else loss_fn(logits, yb)
                    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                        raise ValueError(f"loss_fn must return a scalar tensor, got "
                                         f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__}")
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        loss.backward()
                        optimizer.step()
                    scheduler.step()
                    with torch.no_grad():
                        loss_sum += loss.detach().double() * idx.shape[0]
                        correct += (logits.detach().argmax(1) == yb).sum()
                    bar.update(1)
                train_loss = float(loss_sum.item()) / n
                if not math.isfinite(train_loss):
                    raise FloatingPointError(
                        f"training diverged: the mean training loss of epoch {epoch + 1} is {train_loss}; "
                        f"try a smaller lr (got {lr}) or check the loss function")
                history["train_loss"].append(train_loss)
                history["train_acc"].append(float(correct.item()) / n)
                postfix = {"epoch": f"{epoch + 1}/{epochs}", "loss": f"{train_loss:.3f}", "acc": f"{history['train_acc'][-1]:.3f}"}
                if val_xy is not None:
                    v = _evaluate(model, *val_xy, dev, _EVAL_BATCH)
                    for k in ("loss", "acc", "ece", "conf"):
                        history[f"val_{k}"].append(v[k])
                    postfix["val_acc"] = f"{v['acc']:.3f}"
                history["seconds"].append(time.perf_counter() - t0)
                bar.set_postfix(postfix)
                if on_epoch_end is not None:
                    _call_epoch_end(on_epoch_end, model, epoch, history)
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
        bar.close()
    model.eval()
    _log_fit(_fit_record(model, x, epochs, batch_size, augment, 0 if val_xy is None else int(val_xy[0].shape[0]),
                         time.perf_counter() - fit_t0))
    return history


def _call_epoch_end(callback: Callable, model: nn.Module, epoch: int, history: Mapping[str, list[float]]) -> None:
    """``callback(model, epoch, history)`` in eval mode, without gradients, with torch's random generators
    forked (whatever it draws leaves training's draws alone), the model back in training mode afterwards."""
    snapshot = {k: list(v) for k, v in history.items()}      # the callback cannot edit the trainer's history
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            callback(model, epoch, snapshot)
    finally:
        model.train()


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, *, epochs: int, batch_size: int,
        lr: float, weight_decay: float = 1e-2, seed: int = 0, device: Any = None, augment: bool = False,
        val: Any = None, progress: bool = True, desc: str | None = None,
        on_epoch_end: Callable[[nn.Module, int, dict[str, list[float]]], Any] | None = None) -> dict[str, list[float]]:
    """Train ``model`` in place on ``x`` ``(N, C, H, W)`` and ``y`` ``(N,)`` (int64), return the per-epoch history.

    * The data are moved to ``device`` once (``None`` = CUDA if available, else CPU) and stay there;
      every epoch shuffles with a permutation from a ``torch.Generator`` seeded by ``seed`` and
      splits it into ``ceil(N / batch_size)`` nearly equal batches (each example once per epoch).
    * Optimiser: AdamW (``lr`` = peak learning rate, decoupled ``weight_decay``) with a one-cycle
      schedule over ``epochs · ceil(N / batch_size)`` steps. On CUDA: bf16 autocast (or fp16 with a
      gradient scaler); images use ``channels_last``.
    * ``augment=True``: random crop (4-pixel reflect padding) + horizontal flip per batch, on the device.
    * ``loss_fn(logits (B, K) float32, y (B,)) -> scalar``; its ``start_epoch(epoch, epochs)`` is called
      before every epoch if it exists; with ``loss_fn.wants_batch = True`` it is called as
      ``loss_fn(logits, y, batch)`` (``batch.x``, ``batch.index``: see :class:`Batch`).
    * ``val``: ``None``, a :class:`~lsutils.data.Split` or a pair ``(x_val, y_val)``, scored after each epoch
      with plain cross-entropy and accuracy.
    * ``on_epoch_end``: ``None`` or ``on_epoch_end(model, epoch, history)``, called after every epoch (``epoch``
      counts from 0) once that epoch's validation is done, with ``history`` a copy of the history so far (this
      epoch included). It runs with the model in eval mode, under ``torch.no_grad()`` and with torch's random
      generators forked, and the model goes back to training mode afterwards: a callback that only measures the
      model (e.g. :func:`lsutils.predict_logits`) leaves the trained weights bit-identical. Its return value is
      ignored, and its time is not part of ``history["seconds"]``.
    * Deterministic on the CPU: the same ``seed`` (and the same initial weights) gives bit-identical
      weights. Dropout draws from torch's global generator, seeded with ``seed`` for the run and
      restored afterwards.

    Returns ``{"train_loss": [...], "train_acc": [...], "seconds": [...]}`` with one entry per epoch
    (plus ``"val_loss"``, ``"val_acc"`` when ``val`` is given); ``train_loss``/``train_acc`` are the
    means over the epoch's batches of the training objective and of the accuracy in training mode.
    The model is left in eval mode on ``device``. ``progress=False`` hides the tqdm bar; ``desc`` labels it.

    >>> import torch.nn as nn, torch.nn.functional as F
    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> x, y = torch.randn(64, 1, 2, 2), torch.randint(0, 2, (64,))
    >>> h = fit(m, x, y, F.cross_entropy, epochs=2, batch_size=16, lr=1e-2, device="cpu", progress=False)
    >>> len(h["train_loss"])
    2
    """
    return _fit(model, x, y, loss_fn, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                seed=seed, device=device, augment=augment, val=val, progress=progress, desc=desc, leave=True,
                on_epoch_end=on_epoch_end)


# --------------------------------------------------------------------------------------------- label noise
def add_label_noise(y: torch.Tensor, num_classes: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """Replace ``round(fraction · N)`` labels, chosen at random, by a uniformly random *other* class.

    ``y``: ``(N,)`` int64 class indices in ``[0, num_classes)``. Returns a new tensor (``y`` is not
    modified); exactly ``round(fraction · N)`` entries differ from ``y``, each new label drawn
    uniformly from the ``num_classes - 1`` wrong classes. Seeded: the same ``seed`` flips the same
    examples to the same labels.

    >>> y = torch.arange(10) % 5
    >>> noisy = add_label_noise(y, num_classes=5, fraction=0.3, seed=0)
    >>> int((noisy != y).sum())
    3
    """
    check_tensor("y", y, floating=False, allow_empty=True)
    if y.dim() != 1:
        raise ValueError(f"y must be a 1-D tensor of class indices (N,), got shape {tuple(y.shape)}")
    if y.dtype != torch.long:
        raise TypeError(f"y must have dtype torch.long (int64), got {y.dtype}")
    num_classes = check_num_classes(num_classes)
    fraction = check_probability("fraction", fraction)
    seed = check_int("seed", seed, minimum=0)
    check_class_indices("y", y, num_classes)
    n = y.shape[0]
    n_flip = int(round(fraction * n))
    noisy = y.clone()
    if n_flip == 0:
        return noisy
    g = torch.Generator().manual_seed(seed)
    which = torch.randperm(n, generator=g)[:n_flip]
    shift = torch.randint(1, num_classes, (n_flip,), generator=g)   # 1 .. K-1: never the same class
    noisy[which.to(y.device)] = (y[which.to(y.device)] + shift.to(y.device)) % num_classes
    return noisy


# --------------------------------------------------------------------------------------------- run specs
def _freeze(value: Any) -> Any:
    """Plain data → hashable plain data: dicts become tuples of sorted ``(key, value)`` pairs, lists tuples."""
    if isinstance(value, RunSpec):
        value = value.to_dict()
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, str):
                raise TypeError(f"loss spec keys must be str, got {k!r} ({type(k).__name__})")
        return tuple((k, _freeze(value[k])) for k in sorted(value))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"loss spec values must be finite, got {value}")
        return value
    raise TypeError(f"loss spec values must be plain data (str, int, float, bool, None, lists, dicts), "
                    f"got {type(value).__name__} ({value!r})")


def _is_frozen_dict(value: Any) -> bool:
    return (isinstance(value, tuple) and len(value) > 0
            and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value)
            and [p[0] for p in value] == sorted({p[0] for p in value}))


def _thaw(value: Any) -> Any:
    if _is_frozen_dict(value):
        return {k: _thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a trained model, as plain data; its canonical JSON is part of the cache key.

    ``loss`` is stored frozen (hashable: a dict becomes a tuple of sorted ``(key, value)`` pairs,
    nested dicts likewise) — pass a dict such as ``{"name": "ls", "epsilon": 0.1}`` and read it
    back with :meth:`loss_spec`. A teacher for distillation is nested as a dict (``RunSpec.to_dict()``)
    or a ``RunSpec``. ``label_noise`` is the fraction of training labels replaced by a random other class
    (seeded by ``data_seed``); ``dropout`` goes to the model; ``classes`` keeps only those classes of the
    dataset (see :func:`lsutils.data.load_dataset`). Build specs from a profile with :meth:`from_profile`.

    Every field is checked when the spec is built — the dataset and model names, the sizes, and the loss
    (its name must be registered and its hyper-parameters valid, see :func:`lsutils.losses.build_loss`) — so a
    typo fails at once, not when training starts.

    >>> spec = RunSpec(dataset="fashion_mnist", n_train=2000, n_val=1000, data_seed=0, model="cnn", width=8,
    ...                loss={"name": "ls", "epsilon": 0.1}, epochs=2, batch_size=128, lr=3e-3,
    ...                weight_decay=1e-2, augment=False, seed=0)
    >>> spec.loss_spec(), len(spec.key())
    ({'epsilon': 0.1, 'name': 'ls'}, 64)
    >>> RunSpec.from_dict({**spec.to_dict(), "loss": {"name": "ls", "epsilon": 2.0}})
    Traceback (most recent call last):
    ...
    ValueError: loss 'ls': epsilon must be in [0.0, 1.0], got 2.0
    """

    dataset: str
    n_train: int | None
    n_val: int
    data_seed: int
    model: str
    width: int
    loss: tuple
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    augment: bool
    seed: int
    label_noise: float = 0.0
    dropout: float = 0.0
    classes: tuple | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("dataset", available_datasets()), ("model", available_models())):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        setattr_ = object.__setattr__
        if self.n_train is not None:
            setattr_(self, "n_train", as_int("n_train", self.n_train, minimum=1))
        for name, minimum in (("n_val", 0), ("data_seed", 0), ("width", 1), ("epochs", 1), ("batch_size", 1),
                              ("seed", 0)):
            setattr_(self, name, as_int(name, getattr(self, name), minimum=minimum))
        _check_bool("augment", self.augment)
        setattr_(self, "lr", _check_real("lr", self.lr, positive=True))
        setattr_(self, "weight_decay", _check_real("weight_decay", self.weight_decay))
        setattr_(self, "label_noise", check_probability("label_noise", self.label_noise, high_open=True))
        setattr_(self, "dropout", check_probability("dropout", self.dropout, high_open=True))
        if self.classes is not None:
            if isinstance(self.classes, (str, bytes)) or not hasattr(self.classes, "__iter__"):
                raise TypeError(f"classes must be None or a sequence of class indices, got {self.classes!r}")
            classes = tuple(as_int(f"classes[{i}]", c, minimum=0) for i, c in enumerate(self.classes))
            if len(set(classes)) != len(classes) or len(classes) < 2:
                raise ValueError(f"classes must hold at least 2 distinct class indices, got {classes}")
            setattr_(self, "classes", classes)
        loss = self.loss
        if isinstance(loss, Mapping):
            loss = _freeze(loss)
        elif isinstance(loss, tuple):
            loss = _freeze(_thaw(loss)) if _is_frozen_dict(loss) else None
        else:
            loss = None
        if loss is None:
            raise TypeError(f"loss must be a dict like {{'name': 'ls', 'epsilon': 0.1}} (or its frozen tuple form), "
                            f"got {self.loss!r}")
        setattr_(self, "loss", loss)
        spec = self.loss_spec()
        validate_loss_spec(spec)
        if isinstance(spec.get("teacher"), Mapping):   # a nested run spec (distillation): check it too
            RunSpec.from_dict(spec["teacher"])

    @classmethod
    def from_profile(cls, profile: Any, *, loss: Mapping[str, Any], seed: int, **overrides: Any) -> "RunSpec":
        """A spec with the profile's data sizes, model and schedule, the given ``loss`` and ``seed``.

        ``overrides`` replace any field (e.g. ``epochs=8``, ``label_noise=0.2``, ``data_seed=1``);
        unknown names raise ``TypeError``.

        >>> from lsutils.config import get_profile
        >>> RunSpec.from_profile(get_profile("smoke"), loss={"name": "ce"}, seed=1, epochs=3).epochs
        3
        """
        for attr in ("dataset", "n_train", "n_val", "model", "width", "epochs", "batch_size", "lr",
                     "weight_decay", "augment"):
            if not hasattr(profile, attr):
                raise TypeError(f"profile must be an lsutils Profile (from get_profile()), got "
                                f"{type(profile).__name__} without .{attr}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"unknown RunSpec field(s) {unknown}; fields are {sorted(fields)}")
        values = dict(dataset=profile.dataset, n_train=profile.n_train, n_val=profile.n_val, data_seed=0,
                      model=profile.model, width=profile.width, loss=loss, epochs=profile.epochs,
                      batch_size=profile.batch_size, lr=profile.lr, weight_decay=profile.weight_decay,
                      augment=profile.augment, seed=seed)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> "RunSpec":
        """A copy with some fields changed (validated like a new spec), e.g. ``spec.replace(seed=1)``."""
        values = self.to_dict()
        unknown = sorted(set(changes) - set(values))
        if unknown:
            raise TypeError(f"unknown RunSpec field(s) {unknown}; fields are {sorted(values)}")
        values.update(changes)
        return RunSpec(**values)

    def loss_spec(self) -> dict[str, Any]:
        """The loss as a dict, e.g. ``{"name": "ls", "epsilon": 0.1}`` (nested dicts thawed too)."""
        return _thaw(self.loss)

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain JSON-able data (``loss`` as a dict). ``RunSpec.from_dict`` inverts it."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["loss"] = self.loss_spec()
        out["classes"] = None if self.classes is None else list(self.classes)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunSpec":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(values, Mapping):
            raise TypeError(f"values must be a dict of RunSpec fields, got {type(values).__name__}")
        return cls(**values)

    def canonical_json(self) -> str:
        """The spec as canonical JSON (sorted keys, no spaces)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def key(self, device: Any = None) -> str:
        """The cache key: SHA-256 of the spec, the code that determines the weights and the arithmetic.

        That is :meth:`canonical_json`, :func:`code_fingerprint` (the trainer, models, losses, targets and data
        code, and the module of a loss registered outside ``lsutils``) and :func:`lsutils.config.precision` on
        ``device`` (default: where training would run). Changing the code of any of them retrains.
        """
        modules = _loss_modules(self.loss_spec())
        return _key({"spec": json.loads(self.canonical_json())}, modules, device)


def _loss_modules(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """Modules outside the core whose code decides a loss (its factory's module, a nested teacher's too)."""
    mods = set()
    factory = loss_factory(spec["name"])
    if factory.__module__ not in _CORE_MODULES:
        mods.add(factory.__module__)
    teacher = spec.get("teacher")
    if isinstance(teacher, Mapping) and isinstance(teacher.get("loss"), Mapping):
        mods |= set(_loss_modules(teacher["loss"]))
    return tuple(sorted(mods))


@dataclass
class TrainedRun:
    """A trained model and how it was made.

    ``model``: eval mode, on the training device; ``history``: per-epoch ``train_loss``, ``train_acc``,
    ``val_loss`` (cross-entropy = NLL), ``val_acc``, ``val_ece`` (15 bins), ``val_conf`` (mean max
    probability) and ``seconds`` (from the original training, also when loaded from the cache); ``key``:
    :meth:`RunSpec.key`; ``from_cache``: whether it was loaded; ``seconds``: wall time of the call that returned it.
    """

    spec: Any
    model: nn.Module
    history: dict[str, list[float]]
    key: str
    from_cache: bool
    seconds: float


# --------------------------------------------------------------------------------------------- the cache
#: The modules whose code determines a trained model's weights (their source, without docstrings, is hashed).
_CORE_MODULES = ("lsutils.train", "lsutils.models", "lsutils.losses", "lsutils.targets", "lsutils.data")


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=64)
def _module_fingerprint(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ValueError(f"cannot fingerprint module {module!r}: no Python source found")
    tree = _strip_docstrings(ast.parse(pathlib.Path(spec.origin).read_text(encoding="utf-8")))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def code_fingerprint(modules: Iterable[str] = ()) -> str:
    """SHA-256 over the code of the core modules that determine a model's weights, plus ``modules``.

    The code is each module's syntax tree without docstrings and comments: editing documentation keeps every
    cached model, changing a line of code retrains the models it could affect (the cache cannot tell which).

    >>> len(code_fingerprint())
    64
    """
    names = sorted(set(_CORE_MODULES) | set(modules))
    return hashlib.sha256(json.dumps({n: _module_fingerprint(n) for n in names}).encode()).hexdigest()


def _key(config: Mapping[str, Any], modules: Iterable[str], device: Any) -> str:
    dev = torch.device(device) if device is not None else default_device()
    payload = {"config": config, "code": code_fingerprint(modules), "precision": precision(dev),
               "device": dev.type, "format": CACHE_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_path(spec: RunSpec) -> pathlib.Path:
    """Where :func:`train_model` caches ``spec``: ``data_root()/"cache"/f"{spec.key()}.pt"``."""
    if not isinstance(spec, RunSpec):
        raise TypeError(f"spec must be a RunSpec, got {type(spec).__name__}")
    return _cache_file(spec.key())


def _cache_file(key: str) -> pathlib.Path:
    return data_root() / "cache" / f"{key}.pt"


def _state_checksum(state: Mapping[str, torch.Tensor], history: Mapping[str, Any], meta: str) -> str:
    h = hashlib.sha256(meta.encode())
    h.update(json.dumps(history, sort_keys=True).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _write_cache(path: pathlib.Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_REQUIRED = {"format": str, "key": str, "config": str, "state_dict": dict, "history": dict, "meta": dict,
             "checksum": str}


def _read_cache(path: pathlib.Path, config_json: str, key: str, device: torch.device,
                build: Callable[[dict], nn.Module]) -> tuple[nn.Module, dict, dict] | str:
    """The cached ``(model, history, meta)``, or a one-line reason why the file cannot be used."""
    try:
        with warnings.catch_warnings():  # torch's own warnings about a garbled file: our one warning says it
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, unpickling refused...
        return f"cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if not isinstance(payload, dict):
        return f"holds a {type(payload).__name__}, not a trained-run record"
    for field, kind in _REQUIRED.items():
        if not isinstance(payload.get(field), kind):
            return f"lacks the field {field!r}"
    if payload["format"] != CACHE_FORMAT:
        return f"has format {payload['format']!r}, expected {CACHE_FORMAT!r}"
    if payload["key"] != key or payload["config"] != config_json:
        return "belongs to another configuration"
    meta_json = json.dumps(payload["meta"], sort_keys=True) + payload["config"]
    if _state_checksum(payload["state_dict"], payload["history"], meta_json) != payload["checksum"]:
        return "fails its checksum"
    try:
        model = build(payload["meta"])
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:
        return f"does not fit the model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return model.to(device).eval(), payload["history"], payload["meta"]


def _cached(config: Mapping[str, Any], key: str, device: torch.device, build: Callable[[dict], nn.Module],
            train: Callable[[], tuple[nn.Module, dict, dict]], stacklevel: int) -> tuple[nn.Module, dict, bool]:
    """The cache protocol shared by :func:`train_model` and :func:`load_or_train`: load, else train and store."""
    config_json = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    path = _cache_file(key)
    if path.exists():
        loaded = _read_cache(path, config_json, key, device, build)
        if isinstance(loaded, str):
            warnings.warn(f"lsutils: cached model {path.name} {loaded}; retraining", RuntimeWarning,
                          stacklevel=stacklevel)
        else:
            return loaded[0], loaded[1], True
    model, history, meta = train()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta_json = json.dumps(meta, sort_keys=True) + config_json
    _write_cache(path, {"format": CACHE_FORMAT, "key": key, "config": config_json, "state_dict": state,
                        "history": history, "meta": meta, "checksum": _state_checksum(state, history, meta_json)})
    return model.eval(), history, False


def load_or_train(config: Mapping[str, Any], build: Callable[[], nn.Module],
                  train: Callable[[nn.Module], Mapping[str, Any]], *, code: Iterable[str] = (),
                  device: Any = None) -> TrainedRun:
    """Any model, trained once and cached by a key over its full configuration and the code that trains it.

    ``config``: plain JSON-able data that determines the model (sizes, seeds, hyper-parameters, data);
    ``build()``: a fresh, untrained model; ``train(model)``: trains it in place on ``device`` and returns its
    history (a dict of JSON-able lists); ``code``: the modules (dotted names) whose code trains it, hashed into
    the key with the core's (:func:`code_fingerprint`). The file is written atomically and read back with
    ``torch.load(..., weights_only=True)``; a corrupt file is retrained with one warning. Returns a
    :class:`TrainedRun` (its ``spec`` is ``config``).

    >>> run = load_or_train({"what": "demo", "seed": 0}, lambda: nn.Linear(2, 2),
    ...                     lambda m: {"loss": [0.0]}, device="cpu")    # doctest: +SKIP
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict of plain data, got {type(config).__name__}")
    for name, fn in (("build", build), ("train", train)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    if isinstance(code, str):
        code = (code,)
    dev = _resolve_device(device)
    config = json.loads(json.dumps(config, allow_nan=False))   # plain data only: fails here, not later
    key = _key({"custom": config}, tuple(code), dev)
    t0 = time.perf_counter()

    def fresh(meta: dict) -> nn.Module:
        model = build()
        if not isinstance(model, nn.Module):
            raise TypeError(f"build() must return a torch.nn.Module, got {type(model).__name__}")
        return model

    def run() -> tuple[nn.Module, dict, dict]:
        model = fresh({}).to(dev)
        history = train(model)
        if not isinstance(history, Mapping):
            raise TypeError(f"train(model) must return its history as a dict, got {type(history).__name__}")
        return model, json.loads(json.dumps(dict(history))), {}

    with _logged_run("load_or_train", config=config, key=key) as record:
        model, history, from_cache = _cached({"custom": config}, key, dev, fresh, run, stacklevel=3)
        record["from_cache"] = from_cache
    return TrainedRun(config, model.to(dev), history, key, from_cache, time.perf_counter() - t0)


def _build(spec: RunSpec, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    kw: dict[str, Any] = {"dropout": spec.dropout} if spec.dropout > 0 else {}
    return build_model(spec.model, num_classes, in_channels, width=spec.width, image_size=image_size, **kw)


def _check_data(spec: RunSpec, data: Any) -> None:
    for attr in ("train", "val", "num_classes"):
        if not hasattr(data, attr):
            raise TypeError(f"data must be an lsutils ImageDataset (from load_dataset), got {type(data).__name__}")
    problems = []
    if getattr(data, "name", spec.dataset) != spec.dataset:
        problems.append(f"dataset {data.name!r} != {spec.dataset!r}")
    if spec.n_train is not None and len(data.train.y) != spec.n_train:
        problems.append(f"{len(data.train.y)} training examples != n_train={spec.n_train}")
    if len(data.val.y) != spec.n_val:
        problems.append(f"{len(data.val.y)} validation examples != n_val={spec.n_val}")
    if spec.classes is not None and data.num_classes != len(spec.classes):
        problems.append(f"{data.num_classes} classes != the spec's {len(spec.classes)} classes {spec.classes}")
    if problems:
        raise ValueError("data does not match the spec (the cache key would describe other data): "
                         + "; ".join(problems))


def _train_model(spec: RunSpec, *, progress: bool, data: Any, leave: bool) -> TrainedRun:
    if not isinstance(spec, RunSpec):
        raise TypeError(f"spec must be a RunSpec, got {type(spec).__name__}")
    _check_bool("progress", progress)
    t0 = time.perf_counter()
    device = default_device()

    def build(meta: dict) -> nn.Module:
        return _build(spec, int(meta["num_classes"]), int(meta["in_channels"]), int(meta["image_size"]))

    def train() -> tuple[nn.Module, dict, dict]:
        ds = data
        if ds is None:
            ds = load_dataset(spec.dataset, n_train=spec.n_train, n_val=spec.n_val, seed=spec.data_seed,
                              classes=spec.classes)
        else:
            _check_data(spec, ds)
        meta = {"num_classes": int(ds.num_classes), "in_channels": int(ds.train.x.shape[1]),
                "image_size": int(ds.train.x.shape[-1])}
        train_x = ds.train.x.to(device)
        train_y = ds.train.y
        if spec.label_noise > 0:
            train_y = add_label_noise(train_y, meta["num_classes"], spec.label_noise, seed=spec.data_seed)
        train_y = train_y.to(device)
        with _seeded(spec.seed, device):
            model = build(meta)

        def load_model(teacher: Any) -> nn.Module:
            if isinstance(teacher, Mapping):
                teacher = RunSpec.from_dict(teacher)
            return _train_model(teacher, progress=progress, data=None, leave=False).model

        loss_fn = build_loss(spec.loss_spec(), LossContext(train_x, train_y, device, load_model))
        desc = f"{spec.model} {spec.loss_spec().get('name')} seed={spec.seed}"
        history = _fit(model, train_x, train_y, loss_fn, epochs=spec.epochs, batch_size=spec.batch_size,
                       lr=spec.lr, weight_decay=spec.weight_decay, seed=spec.seed, device=device,
                       augment=spec.augment, val=ds.val if len(ds.val.y) else None, progress=progress, desc=desc,
                       leave=leave)
        return model, history, meta

    key = spec.key(device)
    with _logged_run("train_model", spec=spec.to_dict(), key=key) as record:
        model, history, from_cache = _cached({"spec": json.loads(spec.canonical_json())}, key, device, build, train,
                                             stacklevel=4)
        record["from_cache"] = from_cache
    return TrainedRun(spec, model, history, key, from_cache, time.perf_counter() - t0)


def train_model(spec: RunSpec, *, progress: bool = True, data: Any = None) -> TrainedRun:
    """Train the model that ``spec`` describes, or load it from the cache.

    The cache file is ``data_root()/"cache"/f"{spec.key()}.pt"`` (see :func:`cache_path` and
    :meth:`RunSpec.key`: the spec, the code that trains it and the arithmetic); it holds the weights, the
    history, the spec's JSON, the model's shape arguments and a checksum, and is written atomically (temporary
    file + ``os.replace``) and read with ``torch.load(..., weights_only=True)``. A file that cannot be read,
    lacks a field, belongs to another spec or fails its checksum gives one ``RuntimeWarning`` and the model is
    retrained (and the file rewritten).

    Training: ``lsutils.data.load_dataset(spec.dataset, n_train=spec.n_train, n_val=spec.n_val,
    seed=spec.data_seed, classes=spec.classes)`` (or ``data``, which must have the spec's dataset and sizes),
    label noise (:func:`add_label_noise` seeded by ``data_seed``) when ``spec.label_noise > 0``, the model from
    ``build_model(spec.model, K, C, width=spec.width, dropout=spec.dropout)`` initialised under
    ``torch.manual_seed(spec.seed)``, the loss from ``build_loss(spec.loss_spec(), LossContext(...))``,
    then :func:`fit` with validation on ``data.val`` every epoch.

    >>> from lsutils.config import get_profile
    >>> spec = RunSpec.from_profile(get_profile("smoke"), loss={"name": "ce"}, seed=0)
    >>> run = train_model(spec, progress=False)          # doctest: +SKIP
    >>> run.history["val_acc"][-1] > 0.5, run.from_cache  # doctest: +SKIP
    (True, False)
    """
    return _train_model(spec, progress=progress, data=data, leave=True)


def train_many(specs: Iterable[RunSpec], *, progress: bool = True, data: Any = None) -> list[TrainedRun]:
    """:func:`train_model` for each spec, in order, under one outer progress bar; returns the runs.

    ``progress`` and ``data`` go to every :func:`train_model` call; the per-run bars disappear when each run
    ends, the outer bar counts runs (and how many came from the cache).

    >>> runs = train_many([spec_ce, spec_ls], progress=False)  # doctest: +SKIP
    """
    specs = list(specs)
    for i, spec in enumerate(specs):
        if not isinstance(spec, RunSpec):
            raise TypeError(f"specs[{i}] must be a RunSpec, got {type(spec).__name__}")
    progress = _check_bool("progress", progress)
    runs = []
    with progress_bar(total=len(specs), desc="runs", unit="run", disable=not progress) as bar:
        for spec in specs:
            run = _train_model(spec, progress=progress, data=data, leave=False)
            runs.append(run)
            bar.set_postfix({"cached": sum(r.from_cache for r in runs)}, refresh=False)
            bar.update(1)
    return runs
