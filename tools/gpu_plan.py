"""How long each chapter takes on a Colab T4 in the ``gpu`` profile, planned from the book's run log.

    python tools/gpu_plan.py                               # (make gpu-plan) from benchmarks/run_log_cpu.jsonl
    python tools/gpu_plan.py _build/runs                   # from the logs of the last `make outputs`
    python tools/gpu_plan.py --utilisation 0.05 --detail   # another assumption; every model listed
    python tools/gpu_plan.py --merge _build/runs -o benchmarks/run_log_cpu.jsonl   # one file from per-chapter logs

**Models per chapter come from the chapters themselves.** ``tools/execute.py`` runs every chapter with
``LSUTILS_RUN_LOG=_build/runs/<chapter>.jsonl``, and every ``train_model``, ``load_or_train`` and bare ``fit`` call
appends one line (``lsutils.train.read_run_log``): the spec or config, its cache key, whether it came from the
cache, and the size of every ``fit`` it ran. A chapter's models are its distinct keys (a bare ``fit`` is one model
each). *Cold* counts every model the chapter asks for — a fresh Colab runtime that opens only this chapter trains
all of them, and that is what must fit in 15 minutes; *new* counts those no earlier chapter trained (the whole
book, run in order, with one cache).

**Each model is mapped to its gpu-profile twin** — the same chapter structure at the gpu profile's sizes. The log
says which profile trained it (``cpu`` for the committed log); a spec's field that equals that profile's value
takes the gpu profile's, and one the chapter derived from it is scaled alike: ``n_train`` and ``n_val`` by
gpu/source (3,000 → 10,000; a transfer set of 4 × n_train becomes 40,000), ``epochs`` likewise (16 → 30; a
chapter's ``2 · epochs`` becomes 60), the profile's model becomes the gpu profile's (``cnn`` → ``airbench``) with
its width scaled (a ``width // 4`` student stays a quarter), and any other model (the ``mlp`` students) keeps its
name and width on 3×32×32 inputs. A model that is not one of the trainer's image models (chapter 9's translators,
which use their own loop and the same sizes in every profile) keeps its logged seconds: a T4 is assumed no slower
than the 2-core CPU for a 90 k-parameter Transformer.

**FLOPs per model**: ``torch.utils.flop_counter.FlopCounterMode`` on one training step (forward + backward) of the
mapped model per image × training images × epochs, plus an eval-mode forward per validation image per epoch, plus,
for distillation losses, the teacher's forward passes (once over the training set; every epoch when augmented).

**T4 time** = FLOPs ÷ (utilisation × 65 TFLOP/s, the T4's fp16 tensor-core peak) + ``--overhead`` seconds per
model (data to the GPU, cuDNN autotuning, the probe pass, per-epoch synchronisation; default 1 s). The default
utilisation, **10 % = 6.5 TFLOP/s**, is an estimate, derived thus: airbench94 (eager PyTorch, fp16) trains 0.36
PFLOP in 3.83 s on an A100 — 94 TFLOP/s, 30 % of the A100's 312 TFLOP/s; a T4 reaches about half the fraction
of peak an A100 does on convnet training (its 70 W cap lowers clocks under sustained tensor load, and it has 320 GB/s
of memory against 1.5–2 TB/s: published ResNet-50 mixed-precision training throughputs differ by about 10×
against a 4.8× ratio of peaks), so ≈ 15 %; the book trains airbench at half its width (4× smaller matrices per
layer, lower efficiency), with AdamW, validation every epoch and no ``torch.compile``: two thirds of that, 10 %.
Read the minutes as estimates within a factor of two, not measurements; the run log of a real GPU run
(``make outputs`` on Colab) records seconds per model to replace them.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LOG = ROOT / "benchmarks" / "run_log_cpu.jsonl"
T4_PEAK = 65e12                 # FLOP/s, fp16 tensor cores (dense)
BUDGET_S = 15 * 60              # per chapter
DEFAULT_UTILISATION = 0.10
DEFAULT_OVERHEAD_S = 1.0
#: training-split sizes of the datasets (before the validation split is taken out of them)
TRAIN_POOL = {"fashion_mnist": 60000, "cifar10": 50000}
INPUT_SHAPE = {"fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


# --------------------------------------------------------------------------------------------- reading logs
def read_logs(paths: Iterable[str | Path]) -> "OrderedDict[str, list[dict]]":
    """``{chapter: [records]}`` from run-log files or folders of them, chapters sorted (the book's order).

    A record's chapter is its ``"chapter"`` field, else the stem of its file (``_build/runs/04_calibration.jsonl``).
    A chapter that trained nothing is kept with no records: an empty file, or a ``{"kind": "chapter"}`` line
    (what :func:`merge` writes for every chapter).
    """
    from lsutils.train import read_run_log

    chapters: dict[str, list[dict]] = {}
    for path in map(Path, paths):
        files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        if not files:
            raise FileNotFoundError(f"no run log (*.jsonl) in {path}")
        for f in files:
            records = read_run_log(f)
            if not records:
                chapters.setdefault(f.stem, [])
            for record in records:
                kept = chapters.setdefault(str(record.get("chapter") or f.stem), [])
                if record.get("kind") != "chapter":
                    kept.append(record)
    return OrderedDict(sorted(chapters.items()))


def merge(paths: Iterable[str | Path], out: Path) -> int:
    """Write the records of ``paths`` into one file, each with its ``"chapter"`` (and a ``{"kind": "chapter"}``
    line first for every chapter, so that one which trained nothing stays listed); returns the number of records."""
    n = 0
    chapters = read_logs(paths)                 # read everything before writing: out may be one of the inputs
    with open(out, "w", encoding="utf-8") as f:
        for chapter, records in chapters.items():
            f.write(json.dumps({"format": "lsutils-run-log/1", "kind": "chapter", "chapter": chapter}) + "\n")
            for record in records:
                f.write(json.dumps({**record, "chapter": chapter}, sort_keys=True) + "\n")
                n += 1
    return n


# --------------------------------------------------------------------------------------------- mapping
def profiles() -> dict[str, Any]:
    from lsutils import config

    return config._table("cuda")


def _spec_of(record: Mapping[str, Any]) -> dict | None:
    """The RunSpec dict a record trains: ``spec`` (train_model) or ``config["spec"]`` (load_or_train), if any."""
    spec = record.get("spec")
    if spec is None and isinstance(record.get("config"), Mapping):
        spec = record["config"].get("spec")
    return dict(spec) if isinstance(spec, Mapping) and "model" in spec and "epochs" in spec else None


def _scaled(value: float, source: float | None, target: float | None) -> int:
    if source in (None, 0) or target is None:
        return int(value)
    return max(1, int(round(value * target / source)))


def map_spec(spec: Mapping[str, Any], source: Any, target: Any) -> dict[str, Any]:
    """The gpu-profile twin of a spec trained in the ``source`` profile: sizes, epochs and model as ``target``'s.

    Returns ``dataset``, ``model``, ``width``, ``n_train``, ``n_val``, ``epochs``, ``augment``, ``input_shape`` and
    ``teacher`` (the mapped teacher spec of a distillation loss, else None).
    """
    pool = TRAIN_POOL[target.dataset]
    n_val = _scaled(spec["n_val"], source.n_val, target.n_val) if spec["n_val"] else 0
    if spec.get("n_train") is None:
        n_train = (target.n_train or pool - n_val)
    else:
        n_train = _scaled(spec["n_train"], source.n_train, target.n_train or pool - n_val)
    n_train = min(n_train, pool - n_val)
    if spec["model"] == source.model:
        model, width = target.model, _scaled(spec["width"], source.width, target.width)
    else:
        model, width = spec["model"], int(spec["width"])
    loss = spec.get("loss") or {}
    teacher = loss.get("teacher") if isinstance(loss, Mapping) else None
    return {"dataset": target.dataset, "model": model, "width": width, "n_train": n_train, "n_val": n_val,
            "epochs": _scaled(spec["epochs"], source.epochs, target.epochs), "augment": bool(spec.get("augment")),
            "input_shape": INPUT_SHAPE[target.dataset],
            "teacher": map_spec(teacher, source, target) if isinstance(teacher, Mapping) else None}


def map_fit(fit: Mapping[str, Any], source: Any, target: Any) -> dict[str, Any]:
    """A logged ``fit`` (no spec: a bare fit, or a custom load_or_train) mapped like :func:`map_spec`."""
    names = {"SmallCNN": "cnn", "AirbenchNet": "airbench", "MLP": "mlp", "CifarResNet": "resnet20"}
    model = names.get(fit.get("model_class"), "?")
    spec = {"model": model, "width": source.width if model == source.model else fit.get("width", source.width),
            "n_train": fit["n_train"], "n_val": fit.get("n_val", 0), "epochs": fit["epochs"],
            "augment": fit.get("augment", False), "loss": {}}
    return map_spec(spec, source, target)


@functools.lru_cache(maxsize=None)
def image_flops(model: str, width: int, input_shape: tuple[int, ...]) -> tuple[float, float]:
    """``(training step, eval forward)`` FLOPs per image of ``build_model(model, 10, C, width)`` on ``input_shape``."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from lsutils.models import build_model

    c, h, w = input_shape
    net = build_model(model, 10, c, width=width, image_size=h).train()
    x = torch.randn(2, c, h, w)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(net(x), torch.zeros(2, dtype=torch.long)).backward()
    step = counter.get_total_flops() / 2
    net.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return step, counter.get_total_flops() / 2


def model_flops(m: Mapping[str, Any], flops: Callable[[str, int, tuple], tuple[float, float]] = image_flops) -> float:
    """FLOPs to train one mapped model: steps × training images × epochs, validation every epoch, teacher passes."""
    step, forward = flops(m["model"], m["width"], tuple(m["input_shape"]))
    total = step * m["n_train"] * m["epochs"] + forward * m["n_val"] * m["epochs"]
    if m.get("teacher"):
        t = m["teacher"]
        _, t_forward = flops(t["model"], t["width"], tuple(t["input_shape"]))
        total += t_forward * m["n_train"] * (m["epochs"] if m["augment"] else 1)
    return total


# --------------------------------------------------------------------------------------------- the plan
def plan(chapters: Mapping[str, list[dict]], *, utilisation: float = DEFAULT_UTILISATION,
         overhead_s: float = DEFAULT_OVERHEAD_S, flops: Callable = image_flops,
         table: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per chapter: ``chapter``, ``models`` (cold), ``new`` (not trained by an earlier chapter),
    ``pflop``, ``seconds`` (cold, on a T4 at ``utilisation``), ``logged_s`` (CPU seconds the log records for the
    chapter's calls), ``unmapped`` (models kept at their logged seconds) and ``models_detail`` (one dict per model).
    """
    table = dict(table or profiles())
    target = table["gpu"]
    rate = utilisation * T4_PEAK
    seen_before: set[str] = set()
    rows = []
    for chapter, records in chapters.items():
        models: "OrderedDict[str, dict]" = OrderedDict()
        fitted: dict[str, list] = {}                    # a key's fits, from whichever record trained it
        for r in records:
            if r.get("key") and r.get("fits"):
                fitted.setdefault(r["key"], r["fits"])
        for i, r in enumerate(records):
            key = r.get("key") or f"{chapter}:fit:{i}"
            if key in models:
                continue
            source = table.get(r.get("profile", "cpu"), table["cpu"])
            spec = _spec_of(r)
            fits = r.get("fits") or fitted.get(key) or []
            if spec is not None:
                mapped = map_spec(spec, source, target)
            elif fits and all(f.get("model_class") in ("SmallCNN", "AirbenchNet", "MLP", "CifarResNet")
                              for f in fits):
                mapped = map_fit(fits[0], source, target)
            else:
                mapped = None
            if mapped is not None:
                f = model_flops(mapped, flops)
                seconds = f / rate + overhead_s
            else:                                       # not an image model of the trainer: as logged
                f = 0.0
                seconds = float(r.get("seconds") or 0.0)
            models[key] = {"key": key, "kind": r.get("kind"), "mapped": mapped, "flops": f, "seconds": seconds,
                           "logged_s": float(r.get("seconds") or 0.0), "from_cache": bool(r.get("from_cache"))}
        new = [k for k in models if k not in seen_before]
        seen_before |= set(models)
        rows.append({"chapter": chapter, "models": len(models), "new": len(new),
                     "pflop": sum(m["flops"] for m in models.values()) / 1e15,
                     "seconds": sum(m["seconds"] for m in models.values()),
                     "new_seconds": sum(models[k]["seconds"] for k in new),
                     "logged_s": sum(float(r.get("seconds") or 0.0) for r in records if not r.get("nested")),
                     "unmapped": sum(m["mapped"] is None for m in models.values()),
                     "models_detail": list(models.values())})
    return rows


def _describe(m: Mapping[str, Any]) -> str:
    if m["mapped"] is None:
        return f"{m['kind']} (own loop; kept at its logged {m['logged_s']:.1f} s)"
    x = m["mapped"]
    text = (f"{x['model']}(width={x['width']}) {x['n_train']} × {x['epochs']} epochs, val {x['n_val']}"
            f"{', augmented' if x['augment'] else ''}")
    if x.get("teacher"):
        text += f", teacher {x['teacher']['model']}(width={x['teacher']['width']})"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="*", help=f"run-log files or folders (default: {DEFAULT_LOG.relative_to(ROOT)})")
    ap.add_argument("--utilisation", type=float, default=DEFAULT_UTILISATION,
                    help="fraction of the T4's 65 TFLOP/s reached (default 0.10; see the module docstring)")
    ap.add_argument("--overhead", type=float, default=DEFAULT_OVERHEAD_S, help="seconds per model besides FLOPs")
    ap.add_argument("--detail", action="store_true", help="list every model of every chapter")
    ap.add_argument("--merge", action="store_true", help="write the logs into one file (-o) instead of planning")
    ap.add_argument("-o", "--output", type=Path, help="the file --merge writes")
    args = ap.parse_args(argv)
    if not 0 < args.utilisation <= 1:
        ap.error(f"--utilisation must be in (0, 1], got {args.utilisation}")
    if args.overhead < 0:
        ap.error(f"--overhead must be >= 0, got {args.overhead}")
    logs = args.logs or [DEFAULT_LOG]
    if args.merge:
        if args.output is None:
            ap.error("--merge needs -o FILE")
        print(f"{merge(logs, args.output)} records written to {args.output}")
        return 0

    target = profiles()["gpu"]
    rows = plan(read_logs(logs), utilisation=args.utilisation, overhead_s=args.overhead)
    step, forward = image_flops(target.model, target.width, INPUT_SHAPE[target.dataset])
    one = {"model": target.model, "width": target.width, "n_train": target.n_train, "n_val": target.n_val,
           "epochs": target.epochs, "input_shape": INPUT_SHAPE[target.dataset]}
    rate = args.utilisation * T4_PEAK
    print(f"gpu profile: {str(target).replace(' device=cuda', '').split(' precision=')[0]}")
    print(f"model {target.model}(width={target.width}): {step / 1e6:.1f} MFLOP per image for a training step, "
          f"{forward / 1e6:.1f} for an eval forward; one profile model = {model_flops(one) / 1e12:.1f} TFLOP "
          f"({target.n_train} images × {target.epochs} epochs + validation every epoch)")
    print(f"T4 at {args.utilisation:.0%} of 65 TFLOP/s = {rate / 1e12:.1f} TFLOP/s + {args.overhead:g} s per model: "
          f"{model_flops(one) / rate + args.overhead:.1f} s per profile model (an estimate: see the docstring)")
    print(f"from {', '.join(str(p) for p in logs)}; cold = the chapter alone in a fresh runtime, "
          f"new = not trained by an earlier chapter")
    print()
    print("| chapter | models (cold) | new | PFLOP (cold) | est. T4 min (cold) | est. T4 min (new) | logged CPU s | "
          "fits 15 min |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        note = f" ({r['unmapped']} as logged)" if r["unmapped"] else ""
        print(f"| {r['chapter']} | {r['models']}{note} | {r['new']} | {r['pflop']:.2f} | {r['seconds'] / 60:.1f} | "
              f"{r['new_seconds'] / 60:.1f} | {r['logged_s']:.0f} | {'yes' if r['seconds'] <= BUDGET_S else 'NO'} |")
    total = sum(r["new_seconds"] for r in rows)
    worst = max(rows, key=lambda r: r["seconds"]) if rows else None
    print()
    if worst is not None:
        print(f"largest chapter (cold): {worst['chapter']}, {worst['seconds'] / 60:.1f} min of the 15-min budget; "
              f"whole book in order: {total / 60:.1f} min")
        # the utilisation at which the tightest chapter just fits: how much the 10 % assumption may be off
        need = max((r["pflop"] * 1e15 / (BUDGET_S - (r["seconds"] - r["pflop"] * 1e15 / rate))
                    for r in rows if r["pflop"] > 0), default=0.0)
        if need > 0:
            print(f"every chapter fits 15 min down to {need / T4_PEAK:.1%} utilisation ({need / 1e12:.1f} TFLOP/s); "
                  f"training only: each chapter's other work (scoring, figures) took 5–35 s on the CPU")
    if args.detail:
        for r in rows:
            print(f"\n{r['chapter']}:")
            for m in r["models_detail"]:
                print(f"  {m['seconds']:6.1f} s  {m['flops'] / 1e12:6.1f} TFLOP  {_describe(m)}")
    return 0 if all(r["seconds"] <= BUDGET_S for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
