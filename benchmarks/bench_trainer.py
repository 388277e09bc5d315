"""Throughput of lsutils' trainer against the training loop a user would write, in one run.

    python benchmarks/bench_trainer.py              # 200 timed steps of batch 256 (about 30-40 s on 2 cores)
    python benchmarks/bench_trainer.py --quick      # a few steps, for the test suite

Both loops train the same model (the book's ``cpu``-profile model, built with the same seed),
with the same optimiser (AdamW + one-cycle schedule with the profile's learning rate and weight
decay), batch size and number of steps, on Fashion-MNIST:

* **user loop**: ``torchvision.datasets.FashionMNIST`` with ``transforms.ToTensor()`` and
  ``transforms.Normalize``, ``DataLoader(batch_size, shuffle=True, num_workers=0)`` (the
  DataLoader defaults; ``--workers`` changes it), the model in its default memory format, and
  ``loss.item()`` every step for a running loss, as tutorials write it;
* **lsutils.fit**: the same images preloaded as one normalised tensor
  (``lsutils.data.load_dataset``), a seeded permutation per epoch, ``channels_last`` inputs and
  weights, the running loss summed on the device.

Each loop first runs ``--warmup`` steps that are not timed (allocator, oneDNN kernels,
DataLoader start-up). Both run under the same process-wide allocator setting (``lsutils.fit`` keeps freed
memory in the process, see ``lsutils.train._tune_cpu_allocator``; the benchmark sets it before either loop).

Besides samples/s of each loop it prints how close the trainer comes to the machine's arithmetic peak:

* ``cpu:`` the CPU model and whether it has native bf16 (avx512_bf16 / amx_bf16); ``precision:`` the trainer's
  arithmetic (:func:`lsutils.config.precision`);
* ``flops_per_sample: counted N analytic M``: forward + backward FLOPs of one training step per image, counted
  by ``torch.utils.flop_counter.FlopCounterMode`` on the trainer's own step, and the same from the model's
  layers (2·MACs for the forward, the weight gradient and the input gradient of every convolution and linear
  layer — no input gradient for the first layer);
* ``fp32_matmul: R GFLOP/s``: a 2048² float32 matmul on the same threads, timed in every round between the loops;
* ``peak_fraction: f`` = counted FLOPs per sample × the trainer's samples/s ÷ that fp32 matmul rate.

The last line is ``ratio: <lsutils samples/s ÷ user-loop samples/s>``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200, help="timed optimiser steps per loop (default 200)")
    ap.add_argument("--batch-size", type=int, default=None, help="batch size (default: the cpu profile's, 256)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps before timing (default 10)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader num_workers of the user loop (default 0)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads for both loops (default: the number of CPU cores)")
    ap.add_argument("--rounds", type=int, default=4,
                    help="alternate the two loops this many times, each round timing steps/rounds steps of each "
                         "(default 4): a load change on a shared machine then hits both loops alike")
    ap.add_argument("--quick", action="store_true", help="6 steps of batch 64 (+2 warm-up), 2 rounds: a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.rounds = 6, 2, 2
        args.batch_size = args.batch_size or 64
    if args.rounds < 1 or args.rounds > args.steps:
        ap.error(f"--rounds must be in [1, --steps={args.steps}], got {args.rounds}")
    for name in ("steps", "warmup", "workers"):
        if getattr(args, name) < (1 if name == "steps" else 0):
            ap.error(f"--{name} must be >= {1 if name == 'steps' else 0}, got {getattr(args, name)}")
    if args.batch_size is not None and args.batch_size < 1:
        ap.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    return args


def _optimiser(model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int):
    """The trainer's optimiser, written out as a user would: AdamW + OneCycleLR (same settings as lsutils.fit)."""
    from lsutils import train

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = train.one_cycle_schedule(opt, lr, total_steps)
    return opt, sched


def user_loop(make_model, root, batch_size: int, steps: int, warmup: int, workers: int, lr: float,
              weight_decay: float, mean: float, std: float) -> float:
    """samples/s of a textbook DataLoader loop over ``steps`` steps after ``warmup`` untimed steps."""
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision import transforms

    tfm = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    dataset = torchvision.datasets.FashionMNIST(str(root), train=True, download=False, transform=tfm)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    model = make_model()
    opt, sched = _optimiser(model, lr, weight_decay, warmup + steps)
    model.train()
    running, done, start = 0.0, 0, time.perf_counter()
    while done < warmup + steps:
        for xb, yb in loader:
            if done == warmup:
                start = time.perf_counter()
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
            done += 1
            if done == warmup + steps:
                break
    return steps * batch_size / (time.perf_counter() - start)


def lsutils_loop(make_model, x: torch.Tensor, y: torch.Tensor, batch_size: int, steps: int, warmup: int,
                 lr: float, weight_decay: float) -> float:
    """samples/s of ``lsutils.fit`` for one epoch of exactly ``steps`` batches, after a ``warmup``-step fit."""
    from lsutils import train

    if warmup:
        n = warmup * batch_size
        train.fit(make_model(), x[:n], y[:n], F.cross_entropy, epochs=1, batch_size=batch_size, lr=lr,
                  weight_decay=weight_decay, device="cpu", progress=False)
    n = steps * batch_size
    model = make_model()
    start = time.perf_counter()
    train.fit(model, x[:n], y[:n], F.cross_entropy, epochs=1, batch_size=batch_size, lr=lr,
              weight_decay=weight_decay, device="cpu", progress=False)
    return n / (time.perf_counter() - start)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``) and its bf16 support."""
    import platform
    from lsutils import config

    name = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name} ({'native bf16' if config.cpu_has_native_bf16() else 'no native bf16'})"


def step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """``(counted, analytic)`` forward + backward FLOPs of one training step on the batch ``x``, per sample.

    *counted*: ``FlopCounterMode`` around the trainer's forward (under its autocast) and backward;
    *analytic*: 2·MACs per convolution / linear layer for the forward, the weight gradient and, where the
    layer's input needs a gradient, the input gradient (shapes recorded by forward hooks).
    """
    from torch.utils.flop_counter import FlopCounterMode
    from lsutils import config

    layers: list[tuple[int, bool]] = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            macs = output[0].numel() * (module.in_channels // module.groups) * module.kernel_size[0] \
                * module.kernel_size[1]
        else:
            macs = module.in_features * module.out_features
        layers.append((macs, inputs[0].requires_grad))

    model.train()
    x = x.contiguous(memory_format=torch.channels_last)
    model.to(memory_format=torch.channels_last)
    # analytic: the layers' shapes from the model's definition (a SmallCNN's features are ``body``, module by
    # module; its fast path calls some layers' weights directly, so hooks would miss them there)
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.enable_grad():
            body = getattr(model, "body", None)
            (model.classifier(body(x)) if isinstance(body, torch.nn.Sequential) else model(x)).sum()
    finally:
        for h in handles:
            h.remove()
    counter = FlopCounterMode(display=False)
    with counter:
        with config.autocast("cpu"):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
    model.zero_grad(set_to_none=True)
    analytic = sum(2 * macs * (3 if needs_input_grad else 2) for macs, needs_input_grad in layers)
    return counter.get_total_flops() // x.shape[0], analytic


def matmul_seconds(n: int = 2048, reps: int = 3) -> float:
    """Seconds for ``reps`` float32 ``n × n`` matmuls (after one untimed), on torch's current threads."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> float:
    args = _parse(argv)
    from lsutils import config, data, models, train

    train._tune_cpu_allocator()      # process-wide: both loops run with it
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    profile = config.get_profile("cpu")
    batch_size = args.batch_size or profile.batch_size
    n = (args.steps + args.warmup) * batch_size
    if n > 60000:
        raise SystemExit(f"(--steps + --warmup) × --batch-size must be <= 60000 (one pass over Fashion-MNIST's "
                         f"training set), got {n}")
    # Also decompresses the raw IDX files into <data_root>/FashionMNIST/raw/, which the user loop reads.
    ds = data.load_dataset("fashion_mnist", n_train=n, n_val=0, seed=0)

    def make_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return models.build_model(profile.model, ds.num_classes, ds.input_shape[0], width=profile.width)

    n_params = sum(p.numel() for p in make_model().parameters())
    counted, analytic = step_flops(make_model(), ds.train.x[:batch_size], ds.train.y[:batch_size])
    print(f"torch {torch.__version__}, {threads} threads on {os.cpu_count()} cores; model {profile.model}"
          f"(width={profile.width}), {n_params / 1e6:.2f} M parameters; batch {batch_size}, {args.steps} timed steps "
          f"after {args.warmup} warm-up steps, in {args.rounds} alternating rounds; AdamW + one-cycle, "
          f"lr {profile.lr:g}, weight decay {profile.weight_decay:g}")
    # The loops alternate (user, ours, ours, user, ...) in rounds of about steps/rounds timed steps each, and the
    # samples and seconds of all rounds are summed: a change of load on a shared machine hits both loops alike.
    per_round = [args.steps // args.rounds + (1 if r < args.steps % args.rounds else 0) for r in range(args.rounds)]
    seconds = {"user": 0.0, "ours": 0.0, "matmul": 0.0}
    matmul_reps = 3
    for r, steps in enumerate(per_round):
        kw = dict(batch_size=batch_size, steps=steps, warmup=args.warmup, lr=profile.lr,
                  weight_decay=profile.weight_decay)
        order = ("user", "ours") if r % 2 == 0 else ("ours", "user")
        for which in order:
            if which == "user":
                rate = user_loop(make_model, data.data_root(), workers=args.workers, mean=ds.mean[0],
                                 std=ds.std[0], **kw)
            else:
                rate = lsutils_loop(make_model, ds.train.x, ds.train.y, **kw)
            seconds[which] += steps * batch_size / rate
        seconds["matmul"] += matmul_seconds(reps=matmul_reps)
    user = args.steps * batch_size / seconds["user"]
    ours = args.steps * batch_size / seconds["ours"]
    print(f"user loop (torchvision FashionMNIST + ToTensor + Normalize, DataLoader(shuffle=True, "
          f"num_workers={args.workers})): {user:,.0f} samples/s")
    print(f"lsutils.fit (preloaded tensors, seeded permutation, channels_last): {ours:,.0f} samples/s")
    matmul = 2 * 2048 ** 3 * matmul_reps * args.rounds / seconds["matmul"]
    print(f"cpu: {cpu_model()}")
    print(f"precision: {config.precision('cpu')}")
    print(f"flops_per_sample: counted {counted} analytic {analytic}")
    print(f"fp32_matmul: {matmul / 1e9:.1f} GFLOP/s (2048x2048, {threads} threads)")
    print(f"lsutils.fit achieved: {counted * ours / 1e9:.1f} GFLOP/s")
    print(f"peak_fraction: {counted * ours / matmul:.2f}")
    ratio = ours / user
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main(sys.argv[1:])
