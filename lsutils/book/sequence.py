"""Chapter 9, label smoothing in sequence models: the chapter's settings per profile, its run list, tables and figures.

The reusable parts (the number-translation task, the Transformer, training, greedy and beam search, token and
sentence metrics) are in :mod:`lsutils.seq`; this module only sizes the chapter's experiment and draws it.

Sizes (:func:`settings`), chosen in preliminary runs on the *validation* split so that the cross-entropy models
reach the papers' regime (≥ 99.5 % training token accuracy, fitted temperature > 1 on validation tokens)
within the chapter's budget:

* ``smoke`` — numbers 0–199, 100 / 40 / 60 sentences, a 1-layer Transformer of width 32, 50 epochs, seeds (0, 1):
  the same pipeline in miniature for the tests (seconds).
* ``cpu`` — numbers 0–1,999, 800 / 400 / 800 sentences (every number used once), a 1-layer encoder and
  1-layer decoder of width 64 (≈ 90 k parameters), 80 epochs of batches of 64 (1,000 steps), seeds (0, 1, 2):
  the published chapter, about 10 s per model on the book's 2-core machine.
* ``gpu`` — the ``cpu`` sizes (a model this small gains nothing from a GPU; the chapter then runs unchanged).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from lsutils import seq
from lsutils.book.common import md
from lsutils.metrics import expected_calibration_error, fit_temperature, plot_reliability

__all__ = ["md", "settings", "run_config", "arm", "decode", "token_calibration", "branch_frame", "plot_training",
           "plot_ppl_bleu", "plot_reliability_row", "plot_branches", "plot_beam", "plot_score_length"]

_MODEL_SMOKE = {"d_model": 32, "nhead": 2, "num_layers": 1, "dim_feedforward": 64, "dropout": 0.0}
_MODEL_CPU = {"d_model": 64, "nhead": 4, "num_layers": 1, "dim_feedforward": 128, "dropout": 0.0}


def settings(profile: Any) -> dict[str, Any]:
    """The chapter's sizes for ``profile`` (an :class:`lsutils.config.Profile` or its name).

    >>> s = settings("smoke")
    >>> s["epsilons"], s["seeds"], s["task"]["max_number"]
    ((0.0, 0.1, 0.2), (0, 1), 199)
    """
    name = getattr(profile, "name", profile)
    if name not in ("smoke", "cpu", "gpu"):
        raise ValueError(f"profile must be smoke, cpu or gpu (or a Profile), got {profile!r}")
    if name == "smoke":
        return {"profile": name, "epsilons": (0.0, 0.1, 0.2), "seeds": (0, 1),
                "task": {"max_number": 199, "n_train": 100, "n_valid": 40, "n_test": 60, "seed": 0},
                "model": dict(_MODEL_SMOKE), "train": {"epochs": 50, "batch_size": 32, "lr": 5e-3},
                "beam_widths": (1, 2, 4), "alphas": (0.6, 1.2), "beam": 4}
    return {"profile": name, "epsilons": (0.0, 0.1, 0.2), "seeds": (0, 1, 2),
            "task": {"max_number": 1999, "n_train": 800, "n_valid": 400, "n_test": 800, "seed": 0},
            "model": dict(_MODEL_CPU), "train": {"epochs": 80, "batch_size": 64, "lr": 3e-3},
            "beam_widths": (1, 2, 4, 8), "alphas": (0.6, 1.2), "beam": 4}


def run_config(s: Mapping[str, Any], task: seq.NumberTask, epsilon: float, seed: int) -> dict[str, Any]:
    """One run of the chapter as plain data (the cache key of :func:`lsutils.seq.train_translators`).

    >>> task = seq.make_number_task(**settings("smoke")["task"])
    >>> sorted(run_config(settings("smoke"), task, 0.1, 0))
    ['epsilon', 'model', 'seed', 'task', 'train']
    """
    return {"task": task.config, "model": dict(s["model"]), "train": dict(s["train"]),
            "epsilon": float(epsilon), "seed": int(seed)}


def arm(eps: float) -> str:
    """``"CE"`` for ε = 0, else ``"LS ε=…"``."""
    return "CE" if eps == 0 else f"LS ε={eps:g}"


def decode(model: seq.Seq2SeqTransformer, task: seq.NumberTask, split: seq.TranslationSplit, *, beam_size: int = 1,
           alpha: float = 0.0, transform: Callable | None = None) -> dict[str, Any]:
    """Translate ``split`` and score it: BLEU against the one reference (``bleu``) and against every right answer
    (``bleu_all``), ``exact`` match with the reference, ``any`` right answer, mean ``length`` in words, and on the
    sentences with two right answers the share that chose the other dialects' (shorter) form (``short``) or
    neither (``wrong_ambiguous``); also the ``hyps``, their ``scores`` (sum of log-probabilities) and
    ``signature`` (sacrebleu's)."""
    max_len = 2 * max(len(v.split()) for vs in split.variants for v in vs) + 2
    toks, scores = seq.translate(model, split.src, beam_size=beam_size, alpha=alpha, transform=transform,
                                 max_len=max_len)
    hyps = task.tgt_vocab.decode_batch(toks)
    one, every = seq.corpus_bleu(hyps, list(split.targets)), seq.corpus_bleu(hyps, list(split.variants))
    choices = [c for c in seq.variant_choices(hyps, list(split.variants)) if c is not None]
    n_amb = max(len(choices), 1)
    return {"bleu": one["bleu"], "bleu_all": every["bleu"], "exact": seq.exact_match(hyps, list(split.targets)),
            "any": seq.any_match(hyps, list(split.variants)), "length": float(np.mean([len(h.split()) for h in hyps])),
            "short": choices.count("other") / n_amb, "wrong_ambiguous": choices.count("wrong") / n_amb,
            "hyps": hyps, "scores": scores.tolist(), "signature": one["signature"]}


def branch_frame(rows: Iterable[Mapping[str, Any]]):
    """The records of :func:`lsutils.seq.branch_probabilities` (plus ``eps``, ``seed``) as a DataFrame with a
    ``form`` column naming the tens (``70s`` …)."""
    import pandas as pd

    df = pd.DataFrame.from_records(list(rows))
    df["numbers"] = df["tens"].map(lambda t: f"…{t}–{t + 9}")
    df["model"] = df["eps"].map(arm)
    return df


# --------------------------------------------------------------------------------------------- figures
def _sns():
    import seaborn as sns

    return sns


def plot_training(histories: Sequence[tuple[float, int, Mapping[str, list]]], ax: Any) -> Any:
    """Training token accuracy (dropout off, teacher forcing, running over each epoch) per epoch, mean and
    range over seeds, one line per ε. ``histories``: ``(ε, seed, history)``."""
    import pandas as pd

    recs = [{"epoch": e + 1, "model": arm(eps), "seed": seed, "train token accuracy (%)": 100 * acc}
            for eps, seed, h in histories for e, acc in enumerate(h["train_acc"])]
    _sns().lineplot(pd.DataFrame(recs), x="epoch", y="train token accuracy (%)", hue="model",
                    errorbar=("pi", 100), ax=ax)
    ax.set_ylim(max(0, ax.get_ylim()[0]), 100.5)
    ax.grid(alpha=0.3)
    return ax


def plot_ppl_bleu(res: Any, ax_tradeoff: Any, ax_smoothed: Any) -> None:
    """(left) Test perplexity against BLEU, one point per model; (right) perplexity from the unsmoothed NLL next to
    ``exp(smoothed loss)`` — the number a training log of an LS model shows."""
    import pandas as pd

    sns = _sns()
    df = res.assign(model=res["eps"].map(arm))
    sns.scatterplot(df, x="ppl", y="bleu", hue="model", style="model", s=70, ax=ax_tradeoff)
    ax_tradeoff.set(xlabel="test perplexity exp(NLL)", ylabel="test BLEU (greedy, one reference)")
    ax_tradeoff.grid(alpha=0.3)
    long = pd.concat([df.assign(quantity="exp(NLL): perplexity", value=df["ppl"]),
                      df.assign(quantity="exp(smoothed loss): not a perplexity", value=df["exp_smoothed_loss"])])
    sns.barplot(long, x="model", y="value", hue="quantity", errorbar="sd", ax=ax_smoothed)
    ax_smoothed.set(xlabel="", ylabel="test value")
    ax_smoothed.legend(fontsize=8, loc="upper left")
    ax_smoothed.set_ylim(1, None)


def plot_reliability_row(logits: Mapping[str, tuple[torch.Tensor, torch.Tensor]], axes: Sequence[Any]) -> None:
    """One reliability diagram per model: ``logits`` maps a title to ``(logits (M, K), labels (M,))`` of the
    non-padding test tokens."""
    for ax, (title, (z, y)) in zip(axes, logits.items()):
        plot_reliability(z.double().softmax(1), y, ax=ax, title=title, legend=False)


def plot_branches(df: Any, ax: Any) -> None:
    """Share of the France form's next word among the two right answers, per test sentence with two answers; the
    data's frequency as black bars."""
    sns = _sns()
    order = sorted(df["numbers"].unique())
    several = df["model"].nunique() > 1
    sns.stripplot(df, x="numbers", y="share_france", hue="model", dodge=several, order=order, size=2.5, alpha=0.5,
                  jitter=0.25, ax=ax, legend=False)
    sns.pointplot(df, x="numbers", y="share_france", hue="model", dodge=0.53 if several else False, order=order,
                  errorbar=None, markers="D", linestyles="none", ax=ax, palette="dark")
    for i, numbers in enumerate(order):
        share = df.loc[df["numbers"] == numbers, "data_share_france"].iloc[0]
        ax.hlines(share, i - 0.45, i + 0.45, color="black", linewidth=2, label="data frequency" if i == 0 else None)
    ax.set(xlabel="test numbers ending in", ylabel="p(France form) / p(either form)", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3, axis="y")


def plot_beam(sweep: Any, ax_len: Any, ax_short: Any) -> None:
    """Mean output length and the share of the shorter form against the beam width, as decoded and rectified."""
    sns = _sns()
    df = sweep.assign(model=sweep["eps"].map(arm))
    for ax, col, label in ((ax_len, "length", "mean output length (words)"),
                           (ax_short, "short", "shorter form chosen (% of two-answer sentences)")):
        data = df.assign(value=df[col] * (100 if col == "short" else 1))
        sns.lineplot(data, x="beam", y="value", hue="model", style="decoding", markers=True, errorbar="sd",
                     ax=ax, legend=ax is ax_short)
        ax.set(xscale="log", xlabel="beam width", ylabel=label)
        ax.set_xticks(sorted(df["beam"].unique()), [str(b) for b in sorted(df["beam"].unique())])
        ax.grid(alpha=0.3)
    ax_short.legend(fontsize=8)


def plot_score_length(df: Any, costs: Mapping[str, float], ax: Any) -> None:
    """Sentence score (sum of token log-probabilities, greedy) against length; dashed: the least cost per token of a
    fully smoothed model, ``−L·(−log(1−ε+ε/K))`` with ``L`` = words + ``<eos>``."""
    sns = _sns()
    several = df["model"].nunique() > 1
    sns.stripplot(df, x="tokens", y="score", hue="model", dodge=several, size=2.5, alpha=0.4, ax=ax, legend=False)
    sns.pointplot(df, x="tokens", y="score", hue="model", dodge=0.53 if several else False, errorbar=None,
                  markers="D", linestyles="none", ax=ax, palette="dark")
    ticks = sorted(df["tokens"].unique())
    xs = np.arange(len(ticks))
    for name, c in costs.items():
        ax.plot(xs, -c * np.asarray(ticks), "--", linewidth=1, label=f"−L·{c:.3f} ({name} optimum)")
    ax.set(xlabel="hypothesis length L (tokens, <eos> included)", ylabel="score: Σ log p (nats)")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)


def token_calibration(z_valid: torch.Tensor, y_valid: torch.Tensor, z_test: torch.Tensor,
                      y_test: torch.Tensor) -> dict[str, float]:
    """Fitted temperature on the validation tokens, test-token ECE before and after temperature scaling."""
    t = fit_temperature(z_valid, y_valid)
    return {"T": t, "ece": expected_calibration_error(z_test.double().softmax(1), y_test),
            "ece_ts": expected_calibration_error((z_test.double() / t).softmax(1), y_test)}

