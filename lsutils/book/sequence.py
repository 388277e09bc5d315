"""Chapter 9, label smoothing in sequence models: the chapter's settings per profile, its run list, tables and figures.

The reusable parts (the number-translation task, the Transformer, training, greedy and beam search, token and
sentence metrics) are in :mod:`lsutils.seq`; this module only sizes the chapter's experiment and draws it.

Sizes (:func:`settings`), chosen in preliminary runs on the *validation* split so that the cross-entropy models
reach the papers' regime (:data:`PREMISE`: ≥ 99 % training token accuracy and a temperature ≥ 1.3 fitted on the
validation tokens) within the chapter's budget:

* ``smoke`` — numbers 0–199, 100 / 40 / 60 sentences, a 1-layer Transformer of width 32, 60 epochs at a peak
  learning rate of 0.01 (240 steps, about 1 s per model), seeds (0, 1): the same pipeline in miniature for CI
  and the tests; its CE models also fit their training set (≥ 99.4 %, T ≈ 1.7).
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

__all__ = ["md", "PREMISE", "premise_holds", "coarse_p", "verdict", "settings", "run_config", "arm", "decode",
           "token_calibration", "branch_frame", "changes_from", "plot_training", "plot_ppl_bleu",
           "plot_reliability_row", "plot_branches", "plot_beam", "plot_decoding", "plot_score_length"]

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
                "model": dict(_MODEL_SMOKE), "train": {"epochs": 60, "batch_size": 32, "lr": 1e-2},
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


#: The papers' premise, as this chapter tests it: CE models that fit their training tokens and are clearly
#: over-confident on held-out ones (temperature fitted on the validation tokens).
PREMISE = {"train_acc": 0.99, "T": 1.3}


def premise_holds(train_acc: Iterable[float], temperature: Iterable[float]) -> bool:
    """Whether the CE models meet :data:`PREMISE` on average over seeds (training token accuracy as a fraction).

    >>> premise_holds([0.995, 0.998], [1.5, 1.45]), premise_holds([0.98, 0.99], [1.5, 1.5])
    (True, False)
    """
    acc, t = np.asarray(list(train_acc), dtype=float), np.asarray(list(temperature), dtype=float)
    if acc.size == 0 or t.size == 0:
        raise ValueError("train_acc and temperature need at least one value each")
    if not ((0 <= acc) & (acc <= 1)).all():
        raise ValueError(f"train_acc must be fractions in [0, 1], got {acc.tolist()}")
    return bool(acc.mean() >= PREMISE["train_acc"] and t.mean() >= PREMISE["T"])


def coarse_p(n: int) -> float:
    """The p-value of a paired t-test over ``n`` seeds whose mean difference is twice its standard deviation
    (``t = 2·√n``, ``n − 1`` degrees of freedom): how coarse the p-values of ``n`` seeds are.

    >>> round(coarse_p(3), 3), round(coarse_p(2), 2)
    (0.074, 0.22)
    """
    from scipy import stats as sps

    n = int(n)
    if n < 2:
        raise ValueError(f"a paired t-test needs n >= 2, got {n}")
    return float(2 * sps.t.sf(2 * np.sqrt(n), n - 1))


def verdict(comparison: Any, expect: str, premise: bool) -> str:
    """A paper's claim against a paired comparison (LS minus CE): the words of the "paper vs this book" table.

    ``expect``: the sign the paper reports, ``"higher"`` or ``"lower"``; ``premise``: whether the paper's premise
    holds in this run (:func:`premise_holds`). Without the premise the claim is not tested; with it, a clear
    difference in the paper's direction *reproduces* it, one in the other direction is a finding, and an unclear
    one is reported with its direction and p.

    >>> from types import SimpleNamespace as NS
    >>> verdict(NS(mean=1.0, p=0.01, alpha=0.05), "higher", True)
    'reproduces (p = 0.01)'
    >>> verdict(NS(mean=-1.0, p=0.01, alpha=0.05), "higher", True)
    '**does not reproduce**: clearly the opposite (p = 0.01), a finding'
    >>> verdict(NS(mean=0.0, p=1.0, alpha=0.05), "higher", True)
    'does not reproduce: no difference at all (p = 1.00)'
    >>> verdict(NS(mean=1.0, p=0.2, alpha=0.05), "higher", False)
    'not tested: the premise does not hold in this run'
    """
    from lsutils.stats import p_text

    if expect not in ("higher", "lower"):
        raise ValueError(f"expect must be 'higher' or 'lower', got {expect!r}")
    for attr in ("mean", "p", "alpha"):
        if not hasattr(comparison, attr):
            raise TypeError(f"comparison must be a PairedComparison (from ls.paired_comparison), got {comparison!r}")
    if not premise:
        return "not tested: the premise does not hold in this run"
    if comparison.mean == 0:
        return f"does not reproduce: no difference at all ({p_text(comparison.p)})"
    same_way = comparison.mean > 0 if expect == "higher" else comparison.mean < 0
    clear = comparison.p < comparison.alpha
    p = p_text(comparison.p)
    if same_way:
        return f"reproduces ({p})" if clear else f"same direction, not clear ({p})"
    if clear:
        return f"**does not reproduce**: clearly the opposite ({p}), a finding"
    return f"does not reproduce: opposite direction, not clear ({p})"


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


def plot_training(histories: Sequence[tuple[float, int, Mapping[str, list]]], ax: Any, *,
                  floor: float = 0.01) -> Any:
    """Training token error (100 − accuracy, %, log scale) per epoch, as the trainer counts it while it trains
    (teacher forcing, running over the epoch); mean and range over seeds, one line per ε. ``histories``:
    ``(ε, seed, history)``; errors below ``floor`` % are drawn at ``floor`` (a log axis has no 0)."""
    import pandas as pd

    recs = [{"epoch": e + 1, "model": arm(eps), "seed": seed,
             "training token error (%)": max(100 * (1 - acc), floor)}
            for eps, seed, h in histories for e, acc in enumerate(h["train_acc"])]
    df = pd.DataFrame(recs)
    _sns().lineplot(df, x="epoch", y="training token error (%)", hue="model", errorbar=("pi", 100), ax=ax)
    ax.set_yscale("log")
    ax.set_ylim(df["training token error (%)"].min() / 1.5, 100)
    ax.grid(alpha=0.3, which="both")
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


def changes_from(df: Any, base: Mapping[str, Any], columns: Sequence[str], *, by: Sequence[str] = ("eps", "seed")):
    """``df`` with a column ``d_<c>`` per ``c`` in ``columns``: the value minus that of the row selected by ``base``
    (e.g. ``{"decoding": "as trained", "beam": 1}``) with the same ``by`` values (the same model): a change paired
    by model.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"eps": [0.1] * 3, "seed": [0] * 3, "beam": [1, 2, 4], "length": [4.0, 3.5, 3.0]})
    >>> changes_from(df, {"beam": 1}, ["length"])["d_length"].tolist()
    [0.0, -0.5, -1.0]
    """
    by = list(by)
    mask = np.ones(len(df), dtype=bool)
    for col, value in base.items():
        if col not in df.columns:
            raise ValueError(f"base names a column {col!r} that df lacks; columns: {list(df.columns)}")
        mask &= (df[col] == value).to_numpy()
    ref = df[mask]
    if ref.empty:
        raise ValueError(f"no row of df matches base={dict(base)}")
    if ref.duplicated(by).any():
        raise ValueError(f"base={dict(base)} selects several rows per {by}")
    ref = ref[by + list(columns)].rename(columns={c: f"_base_{c}" for c in columns})
    out = df.merge(ref, on=by, how="left")
    for c in columns:
        out[f"d_{c}"] = out[c] - out[f"_base_{c}"]
    return out.drop(columns=[f"_base_{c}" for c in columns])


def plot_beam(sweep: Any, ax_len: Any, ax_short: Any) -> None:
    """Change from greedy decoding of the same model (mean ± sd over seeds) against the beam width, as decoded and
    rectified: (left) mean output length in words, (right) the share of two-answer sentences decoded into the
    shorter form, in points."""
    from matplotlib.ticker import NullFormatter

    sns = _sns()
    df = changes_from(sweep, {"decoding": "as trained", "beam": 1}, ["length", "short"])
    df = df.assign(model=df["eps"].map(arm), d_short=100 * df["d_short"])
    beams = sorted(df["beam"].unique())
    for ax, col, label in ((ax_len, "d_length", "output length − greedy's (words)"),
                           (ax_short, "d_short", "shorter form − greedy's (points)")):
        sns.lineplot(df, x="beam", y=col, hue="model", style="decoding", markers=True, errorbar="sd",
                     err_style="bars", err_kws={"capsize": 3}, ax=ax, legend=ax is ax_short)
        ax.axhline(0, color="gray", linewidth=1, linestyle=":")
        ax.set(xscale="log", xlabel="beam width", ylabel=label)
        ax.set_xticks(beams, [str(b) for b in beams])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    ax_short.legend(fontsize=8, loc="upper left")


def plot_decoding(table: Any, ax: Any) -> None:
    """Test BLEU of each decoding minus greedy decoding's, per model: seeds as dots, mean ± sd as diamonds.
    ``table``: one row per (eps, seed, decoding) with ``bleu``; the greedy rows are named ``"greedy"``."""
    sns = _sns()
    df = changes_from(table, {"decoding": "greedy"}, ["bleu"])
    df = df[df["decoding"] != "greedy"].assign(model=df["eps"].map(arm))
    order = list(dict.fromkeys(df["decoding"]))
    hue_order = [arm(e) for e in sorted(df["eps"].unique())]
    sns.stripplot(df, x="decoding", y="d_bleu", hue="model", order=order, hue_order=hue_order, dodge=True, size=4,
                  alpha=0.6, ax=ax, legend=False)
    sns.pointplot(df, x="decoding", y="d_bleu", hue="model", order=order, hue_order=hue_order, dodge=0.53,
                  errorbar="sd", capsize=0.1, markers="D", linestyles="none", palette="dark", ax=ax)
    ax.axhline(0, color="gray", linewidth=1, linestyle=":")
    ax.set(xlabel="", ylabel="test BLEU − greedy's (points)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def plot_score_length(df: Any, costs: Mapping[str, float], ax: Any) -> None:
    """Sentence score (sum of token log-probabilities) against length ``L`` (tokens, ``<eos>`` included), one dot
    per hypothesis (jittered), diamonds: the mean per length; dashed: ``−L·c``, the least cost of a fully smoothed
    model, ``c = −log(1−ε+ε/K)`` per token (``costs`` maps a model's name to ``c``)."""
    models = list(dict.fromkeys(df["model"]))
    colors = dict(zip(models, _sns().color_palette(n_colors=len(models))))
    width = 0.6 / max(len(models), 1)
    rng = np.random.default_rng(0)
    for i, name in enumerate(models):
        sub = df[df["model"] == name]
        shift = (i - (len(models) - 1) / 2) * width
        x = sub["tokens"].to_numpy(dtype=float) + shift
        ax.scatter(x + rng.uniform(-width / 3, width / 3, len(x)), sub["score"], s=5, alpha=0.35,
                   color=colors[name])
        means = sub.groupby("tokens")["score"].mean()
        ax.scatter(means.index.to_numpy(dtype=float) + shift, means.to_numpy(), marker="D", s=40,
                   color=colors[name], edgecolor="black", linewidth=0.6, label=f"{name} (mean per length)")
    xs = np.arange(1, int(df["tokens"].max()) + 1)
    for name, c in costs.items():
        ax.plot(xs, -c * xs, "--", linewidth=1.2, color=colors.get(name, "gray"),
                label=f"−L·{c:.3f}: least cost of {name}")
    ax.set(xlabel="hypothesis length L (tokens, <eos> included)", ylabel="score: Σ log p (nats)")
    ax.set_xticks(xs[::max(1, len(xs) // 12)])
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)


def token_calibration(z_valid: torch.Tensor, y_valid: torch.Tensor, z_test: torch.Tensor,
                      y_test: torch.Tensor) -> dict[str, float]:
    """Fitted temperature ``T`` on the validation tokens; on the test tokens the mean confidence ``conf`` (max
    probability) and the ECE, before (``ece``) and after (``ece_ts``) temperature scaling."""
    t = fit_temperature(z_valid, y_valid)
    probs = z_test.double().softmax(1)
    return {"T": t, "conf": float(probs.max(1).values.mean()), "ece": expected_calibration_error(probs, y_test),
            "ece_ts": expected_calibration_error((z_test.double() / t).softmax(1), y_test)}

