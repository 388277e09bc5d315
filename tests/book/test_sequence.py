"""Tests of lsutils.book.sequence (chapter 9)."""
from __future__ import annotations

import json

import matplotlib
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from lsutils import seq  # noqa: E402
from lsutils.book import sequence as ch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_settings(name):
    s = ch.settings(name)
    assert s["epsilons"] == (0.0, 0.1, 0.2) and 1 in s["beam_widths"] and s["beam"] in s["beam_widths"]
    task = seq.make_number_task(**s["task"])          # the split sizes fit the number range
    m = seq.build_translator({"seed": 0, "model": s["model"]}, len(task.src_vocab), len(task.tgt_vocab))
    assert seq.count_parameters(m) <= 1_000_000
    cfg = ch.run_config(s, task, 0.1, 0)
    assert json.loads(json.dumps(cfg)) == cfg          # plain data: a cache key
    if name == "cpu":
        assert len(s["seeds"]) == 3
    with pytest.raises(ValueError):
        ch.settings("tpu")


def test_settings_from_profile_object():
    from lsutils.config import get_profile

    assert ch.settings(get_profile("smoke")) == ch.settings("smoke")


@pytest.fixture(scope="module")
def trained():
    s = ch.settings("smoke")
    task = seq.make_number_task(**s["task"])
    m = seq.build_translator({"seed": 0, "model": s["model"]}, len(task.src_vocab), len(task.tgt_vocab))
    seq.fit_translator(m, task.train, epsilon=0.1, epochs=20, batch_size=32, lr=5e-3, progress=False, device="cpu")
    return s, task, m


def test_decode_scores(trained):
    s, task, m = trained
    out = ch.decode(m, task, task.test, beam_size=2)
    for key in ("exact", "any", "short", "wrong_ambiguous"):
        assert 0 <= out[key] <= 1
    assert 0 <= out["bleu"] <= out["bleu_all"] + 1e-9 <= 100 + 1e-9   # more references never lower BLEU
    assert len(out["hyps"]) == len(task.test) and "nrefs:1" in out["signature"]
    assert out["any"] >= out["exact"]


def test_figures_draw(trained):
    s, task, m = trained
    hist = [(0.0, 0, {"train_acc": [0.5, 0.9]}), (0.1, 0, {"train_acc": [0.4, 0.8]})]
    res = pd.DataFrame({"eps": [0.0, 0.1], "seed": [0, 0], "ppl": [1.2, 1.3], "bleu": [80.0, 82.0],
                        "exp_smoothed_loss": [1.2, 2.0]})
    recs = [{"eps": 0.1, "seed": 0, **r} for r in seq.branch_probabilities(m, task, task.test)]
    sweep = pd.DataFrame({"eps": [0.1] * 4, "seed": [0] * 4, "decoding": ["as trained", "as trained", "rectified",
                                                                           "rectified"],
                          "beam": [1, 2, 1, 2], "length": [3.0, 3.1, 3.0, 3.2], "short": [0.1, 0.2, 0.1, 0.1]})
    z, y = seq.flatten_tokens(*seq.teacher_forced_logits(m, task.test.src, task.test.tgt))
    fig, axes = plt.subplots(3, 3)
    ch.plot_training(hist, axes[0, 0])
    ch.plot_ppl_bleu(res, axes[0, 1], axes[0, 2])
    ch.plot_reliability_row({"LS": (z, y)}, [axes[1, 0]])
    ch.plot_branches(ch.branch_frame(recs), axes[1, 1])
    ch.plot_beam(sweep, axes[1, 2], axes[2, 0])
    ch.plot_score_length(pd.DataFrame({"model": ["LS ε=0.1"] * 3, "tokens": [2, 3, 3], "score": [-0.3, -0.4, -0.5]}),
                         {"LS ε=0.1": 0.1}, axes[2, 1])
    plt.close(fig)
    cal = ch.token_calibration(z, y, z, y)
    assert cal["T"] > 0 and 0 <= cal["ece"] <= 1 and cal["ece_ts"] <= cal["ece"] + 0.05


def test_arm():
    assert ch.arm(0.0) == "CE" and ch.arm(0.2) == "LS ε=0.2"
