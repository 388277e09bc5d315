"""tools/gpu_plan.py: the plan's arithmetic on a tiny run log, the mapping to the gpu profile, the command line."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lsutils.config import _table

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("tool_gpu_plan", ROOT / "tools" / "gpu_plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plan_tool = _tool()
CPU, GPU = _table("cuda")["cpu"], _table("cuda")["gpu"]


def _spec(**changes):
    values = dict(dataset="fashion_mnist", n_train=CPU.n_train, n_val=CPU.n_val, data_seed=0, model=CPU.model,
                  width=CPU.width, loss={"name": "ce"}, epochs=CPU.epochs, batch_size=CPU.batch_size, lr=CPU.lr,
                  weight_decay=CPU.weight_decay, augment=False, seed=0, label_noise=0.0, dropout=0.0, classes=None)
    values.update(changes)
    return values


def _record(kind="train_model", key=None, spec=None, config=None, fits=(), seconds=1.0, from_cache=False, **kw):
    r = {"format": "lsutils-run-log/1", "kind": kind, "nested": False, "profile": "cpu", "from_cache": from_cache,
         "seconds": seconds, "fits": list(fits), **kw}
    if key is not None:
        r["key"] = key
    if spec is not None:
        r["spec"] = spec
    if config is not None:
        r["config"] = config
    return r


def _fake_flops(model, width, shape):
    """Round numbers: a training step costs 3 FLOP per unit of width, an eval forward 1 (teachers: the same)."""
    return 3.0 * width, 1.0 * width


def _write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_mapping_to_the_gpu_profile():
    m = plan_tool.map_spec(_spec(), CPU, GPU)
    assert (m["model"], m["width"], m["n_train"], m["n_val"], m["epochs"]) == \
        (GPU.model, GPU.width, GPU.n_train, GPU.n_val, GPU.epochs)
    assert m["input_shape"] == (3, 32, 32) and m["dataset"] == "cifar10" and m["teacher"] is None
    # a chapter's derived sizes scale alike: 4 x n_train, 2 x epochs, a quarter of the width
    d = plan_tool.map_spec(_spec(n_train=4 * CPU.n_train, epochs=2 * CPU.epochs, width=CPU.width // 4), CPU, GPU)
    assert (d["n_train"], d["epochs"], d["width"]) == (4 * GPU.n_train, 2 * GPU.epochs, GPU.width // 4)
    # another model keeps its name and width; a teacher inside the loss is mapped too
    teacher = _spec()
    s = plan_tool.map_spec(_spec(model="mlp", width=64, loss={"name": "distill", "teacher": teacher}), CPU, GPU)
    assert (s["model"], s["width"]) == ("mlp", 64) and s["teacher"]["model"] == GPU.model
    # never more images than the dataset's training pool minus validation
    assert plan_tool.map_spec(_spec(n_train=50000), CPU, GPU)["n_train"] == 50000 - GPU.n_val


def test_plan_arithmetic_on_a_tiny_log(tmp_path):
    a, b = _spec(seed=0), _spec(seed=1, epochs=2 * CPU.epochs)
    distill = _spec(model="mlp", width=8, loss={"name": "distill", "teacher": a}, augment=True)
    fit = {"model_class": "SmallCNN", "n_params": 1, "input_shape": [1, 28, 28], "n_train": CPU.n_train,
           "epochs": CPU.epochs, "batch_size": 256, "augment": False, "n_val": 0, "seconds": 2.0}
    ch1 = [_record(key="A", spec=a, fits=[fit], seconds=4.0),
           _record(key="A", spec=a, from_cache=True, seconds=0.1),                   # the same model again
           _record(kind="load_or_train", key="B", config={"spec": b, "probe": "x"}, seconds=8.0),
           _record(kind="fit", fits=[fit], seconds=2.0)]                             # a bare fit: one model
    ch2 = [_record(key="A", spec=a, from_cache=True, seconds=0.1),                   # chapter 1's model
           _record(key="D", spec=distill, seconds=3.0),
           _record(kind="load_or_train", key="S", config={"task": 1}, seconds=12.0)]  # not an image model
    _write(tmp_path / "01_one.jsonl", ch1)
    _write(tmp_path / "02_two.jsonl", ch2)
    chapters = plan_tool.read_logs([tmp_path])
    assert list(chapters) == ["01_one", "02_two"]
    rows = plan_tool.plan(chapters, utilisation=0.5, overhead_s=2.0, flops=_fake_flops)
    rate = 0.5 * plan_tool.T4_PEAK
    w, n, nv, e = GPU.width, GPU.n_train, GPU.n_val, GPU.epochs
    profile_model = 3 * w * n * e + 1 * w * nv * e
    one, two = rows
    assert (one["models"], one["new"], one["unmapped"]) == (3, 3, 0)
    b_flops = 3 * w * n * 2 * e + w * nv * 2 * e
    bare_flops = 3 * w * n * e                                                       # no validation set
    assert one["pflop"] == pytest.approx((profile_model + b_flops + bare_flops) / 1e15)
    assert one["seconds"] == pytest.approx((profile_model + b_flops + bare_flops) / rate + 3 * 2.0)
    assert one["logged_s"] == pytest.approx(4.0 + 0.1 + 8.0 + 2.0)
    # chapter 2: A (cold: counted; in book order: not new), the student with its teacher, the translator as logged
    student = 3 * 8 * n * e + 8 * nv * e + 1 * w * n * e                             # augmented: teacher every epoch
    assert (two["models"], two["new"], two["unmapped"]) == (3, 2, 1)
    assert two["seconds"] == pytest.approx((profile_model + student) / rate + 2 * 2.0 + 12.0)
    assert two["new_seconds"] == pytest.approx(student / rate + 2.0 + 12.0)
    assert two["pflop"] == pytest.approx((profile_model + student) / 1e15)


def test_cli_merge_and_plan(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    _write(runs / "03_three.jsonl", [_record(key="A", spec=_spec(width=4), seconds=1.0)])
    _write(runs / "01_one.jsonl", [])                                  # a chapter that trains nothing stays listed
    merged = tmp_path / "merged.jsonl"
    tool = [sys.executable, str(ROOT / "tools" / "gpu_plan.py")]
    out = subprocess.run(tool + ["--merge", str(runs), "-o", str(merged)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in merged.read_text().splitlines()]
    assert [(r["kind"], r["chapter"]) for r in lines] == [("chapter", "01_one"), ("chapter", "03_three"),
                                                          ("train_model", "03_three")]
    assert list(plan_tool.read_logs([merged])) == ["01_one", "03_three"]
    out = subprocess.run(tool + [str(merged), "--detail"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| 03_three | 1 | 1 |" in out.stdout and "| 01_one | 0 | 0 |" in out.stdout
    assert "fits 15 min" in out.stdout and "airbench(width=4)" in out.stdout and "down to" in out.stdout
    bad = subprocess.run(tool + [str(merged), "--utilisation", "2"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "utilisation" in bad.stderr


def test_committed_log_plans_every_chapter_within_15_minutes():
    """The book's committed cpu run log, mapped to the gpu profile: every chapter fits a Colab T4's 15 minutes."""
    log = ROOT / "benchmarks" / "run_log_cpu.jsonl"
    chapters = plan_tool.read_logs([log])
    assert len(chapters) >= 8
    rows = plan_tool.plan(chapters)
    assert sum(r["models"] for r in rows) > 50
    assert all(r["seconds"] <= plan_tool.BUDGET_S for r in rows), [(r["chapter"], r["seconds"]) for r in rows]
