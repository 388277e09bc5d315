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
    table = pd.DataFrame({"eps": [0.0, 0.0, 0.1, 0.1, 0.1], "seed": [0] * 5,
                          "decoding": ["greedy", "beam 4", "greedy", "beam 4", "beam 4, rectified"],
                          "bleu": [80.0, 81.0, 82.0, 82.5, 82.0]})
    ch.plot_decoding(table, axes[2, 2])
    assert axes[2, 2].get_ylabel().startswith("test BLEU")
    plt.close(fig)
    cal = ch.token_calibration(z, y, z, y)
    assert cal["T"] > 0 and 0 <= cal["ece"] <= 1 and cal["ece_ts"] <= cal["ece"] + 0.05
    assert cal["conf"] == pytest.approx(float(z.double().softmax(1).max(1).values.mean()))


def test_changes_from_pairs_by_model():
    df = pd.DataFrame({"eps": [0.0, 0.0, 0.1, 0.1], "seed": [0, 0, 0, 0], "beam": [1, 4, 1, 4],
                       "short": [0.2, 0.3, 0.1, 0.4]})
    out = ch.changes_from(df, {"beam": 1}, ["short"])
    assert out["d_short"].round(6).tolist() == [0.0, 0.1, 0.0, 0.3]
    with pytest.raises(ValueError, match="no row"):
        ch.changes_from(df, {"beam": 8}, ["short"])
    with pytest.raises(ValueError, match="several rows"):
        ch.changes_from(df, {"seed": 0}, ["short"])
    with pytest.raises(ValueError, match="lacks"):
        ch.changes_from(df, {"width": 1}, ["short"])


def test_premise_and_coarse_p():
    assert ch.premise_holds([0.999, 0.995, 0.997], [1.5, 1.4, 1.6])
    assert not ch.premise_holds([0.999, 0.995], [1.1, 1.2])            # fits, not over-confident enough
    assert not ch.premise_holds([0.97, 0.98], [1.6, 1.7])              # over-confident, does not fit
    with pytest.raises(ValueError):
        ch.premise_holds([99.5], [1.5])                                 # a percentage, not a fraction
    # p of a paired t-test with mean = 2 sd, against SciPy on such differences
    from scipy import stats as sps

    for n in (2, 3, 5):
        d = [1.0] * n
        d[0], d[1] = 1.0 + 2 ** -0.5 * 2, 1.0 - 2 ** -0.5 * 2      # any sample: only mean/sd matter
        sd = pd.Series(d).std()
        shifted = [x - sum(d) / n + 2 * sd for x in d]                  # mean = 2 sd
        assert ch.coarse_p(n) == pytest.approx(sps.ttest_1samp(shifted, 0).pvalue, rel=1e-9)
    assert ch.coarse_p(2) > ch.coarse_p(3) > 0.05 > ch.coarse_p(5)
    with pytest.raises(ValueError):
        ch.coarse_p(1)


def test_verdict_words():
    import lsutils as ls

    rows = pd.DataFrame({"eps": [0.0] * 3 + [0.1] * 3, "seed": [0, 1, 2] * 2, "x": [1, 2, 3, 2.1, 3.0, 4.1]})
    up = ls.paired_comparison(rows, "x", {"eps": 0.1}, {"eps": 0.0})    # clearly higher
    assert ch.verdict(up, "higher", True).startswith("reproduces")
    assert "finding" in ch.verdict(up, "lower", True)
    assert ch.verdict(up, "higher", False).startswith("not tested")
    noisy = pd.DataFrame({"eps": [0.0] * 3 + [0.1] * 3, "seed": [0, 1, 2] * 2, "x": [1, 2, 3, 1.5, 1.8, 3.1]})
    unclear = ls.paired_comparison(noisy, "x", {"eps": 0.1}, {"eps": 0.0})
    assert unclear.p > 0.05 and "not clear" in ch.verdict(unclear, "higher", True)
    with pytest.raises(ValueError):
        ch.verdict(up, "up", True)
    with pytest.raises(TypeError):
        ch.verdict(0.3, "higher", True)


def test_arm():
    assert ch.arm(0.0) == "CE" and ch.arm(0.2) == "LS ε=0.2"
