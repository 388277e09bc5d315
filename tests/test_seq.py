"""Tests of lsutils.seq: the number-translation task, the Transformer, training, decoding and the metrics."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lsutils import seq
from lsutils.losses import smoothed_cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"seed": 0, "model": {"d_model": 16, "nhead": 2, "num_layers": 1, "dim_feedforward": 32, "dropout": 0.0}}


@pytest.fixture(scope="module")
def task():
    return seq.make_number_task(max_number=199, n_train=100, n_valid=40, n_test=60, seed=0)


@pytest.fixture(scope="module")
def model(task):
    return seq.build_translator(TINY, len(task.src_vocab), len(task.tgt_vocab)).eval()


# --------------------------------------------------------------------------------------------- number words
@pytest.mark.parametrize("n, dialect, words", [
    (0, "france", "zéro"), (17, "france", "dix sept"), (21, "belgium", "vingt et un"),
    (70, "france", "soixante dix"), (71, "france", "soixante et onze"), (71, "belgium", "septante et un"),
    (80, "france", "quatre vingts"), (81, "france", "quatre vingt un"), (81, "switzerland", "huitante et un"),
    (80, "belgium", "quatre vingts"), (90, "france", "quatre vingt dix"), (99, "switzerland", "nonante neuf"),
    (100, "france", "cent"), (200, "france", "deux cents"), (201, "france", "deux cent un"),
    (280, "france", "deux cent quatre vingts"), (1000, "france", "mille"), (2000, "france", "deux mille"),
    (80_000, "france", "quatre vingt mille"), (200_000, "france", "deux cent mille"),
    (21_000, "france", "vingt et un mille"), (1_997, "belgium", "mille neuf cent nonante sept"),
])
def test_french_words(n, dialect, words):
    assert seq.french_words(n, dialect) == words


def test_english_words():
    assert seq.english_words(0) == "zero"
    assert seq.english_words(115) == "one hundred fifteen"
    assert seq.english_words(999_999) == "nine hundred ninety nine thousand nine hundred ninety nine"


def test_variants_exist_exactly_for_70_to_99():
    for n in range(1000):
        assert (len(seq.french_variants(n)) == 2) == (n % 100 >= 70), n
    assert seq.french_variants(80) == ("quatre vingts", "huitante")


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1_000_000, ValueError), (1.5, TypeError), ("3", TypeError),
                                      (True, TypeError)])
def test_number_errors(bad, exc):
    with pytest.raises(exc, match="n"):
        seq.french_words(bad)
    with pytest.raises(exc):
        seq.english_words(bad)


def test_dialect_errors():
    with pytest.raises(ValueError, match="dialect"):
        seq.french_words(70, "quebec")
    with pytest.raises(TypeError, match="dialect"):
        seq.french_words(70, 1)


# --------------------------------------------------------------------------------------------- the task
def test_generator_is_deterministic_and_splits_are_disjoint(task):
    again = seq.make_number_task(max_number=199, n_train=100, n_valid=40, n_test=60, seed=0)
    for name in ("train", "valid", "test"):
        a, b = getattr(task, name), getattr(again, name)
        assert a.numbers == b.numbers and a.targets == b.targets and a.dialects == b.dialects
        assert torch.equal(a.src, b.src) and torch.equal(a.tgt, b.tgt)
    sets = [set(task.train.numbers), set(task.valid.numbers), set(task.test.numbers)]
    assert all(not (x & y) for x, y in itertools.combinations(sets, 2))
    other = seq.make_number_task(max_number=199, n_train=100, n_valid=40, n_test=60, seed=1)
    assert other.test.numbers != task.test.numbers


def test_test_split_does_not_depend_on_n_train(task):
    smaller = seq.make_number_task(max_number=199, n_train=70, n_valid=40, n_test=60, seed=0)
    assert smaller.test.numbers == task.test.numbers and smaller.valid.numbers == task.valid.numbers
    assert smaller.train.numbers == task.train.numbers[:70]


def test_references_are_right_answers_in_their_dialect(task):
    for split in (task.train, task.valid, task.test):
        for n, ref, d, variants in zip(split.numbers, split.targets, split.dialects, split.variants):
            assert ref == seq.french_words(n, d) and ref in variants


def test_dialect_frequencies():
    t = seq.make_number_task(max_number=9999, n_train=8000, n_valid=1000, n_test=1000, seed=3)
    share = sum(d == "france" for d in t.train.dialects) / len(t.train)
    assert abs(share - 0.6) < 0.03
    t2 = seq.make_number_task(max_number=999, n_train=800, n_valid=100, n_test=100, dialect_probs=(0, 0, 1))
    assert set(t2.train.dialects) == {"switzerland"}


def test_tensors_bos_eos_and_padding(task):
    tgt, src = task.train.tgt, task.train.src
    assert (tgt[:, 0] == seq.BOS).all()
    for i in range(len(task.train)):
        words = task.train.targets[i].split()
        assert tgt[i, len(words) + 1] == seq.EOS and (tgt[i, len(words) + 2:] == seq.PAD).all()
        assert task.tgt_vocab.decode(tgt[i, 1:]) == task.train.targets[i]
        assert task.src_vocab.decode(src[i]) == task.train.sources[i]


@pytest.mark.parametrize("kwargs, exc", [
    ({"max_number": 99, "n_train": 90, "n_valid": 10, "n_test": 10}, ValueError),
    ({"n_train": 0}, ValueError), ({"dialect_probs": (0.5, 0.5)}, ValueError),
    ({"dialect_probs": (0.5, 0.4, 0.4)}, ValueError), ({"dialect_probs": "abc"}, TypeError),
    ({"seed": 1.0}, TypeError), ({"max_number": 2_000_000}, ValueError),
])
def test_task_errors(kwargs, exc):
    base = {"max_number": 199, "n_train": 100, "n_valid": 40, "n_test": 60}
    with pytest.raises(exc):
        seq.make_number_task(**{**base, **kwargs})


def test_subset(task):
    idx = [i for i, v in enumerate(task.test.variants) if len(v) == 2]
    sub = task.test.subset(idx)
    assert len(sub) == len(idx) and sub.numbers == tuple(task.test.numbers[i] for i in idx)
    with pytest.raises(ValueError, match="outside"):
        task.test.subset([10_000])
    with pytest.raises(TypeError):
        task.test.subset([])


def test_vocab_and_padding_errors():
    v = seq.Vocab(["a", "b"])
    assert v.encode("a b", bos=True) == [1, 3, 4, 2]
    assert v.decode_batch(torch.tensor([[3, 2, 4], [4, 4, 0]])) == ["a", "b b"]
    with pytest.raises(ValueError, match="'c'"):
        v.encode("a c")
    with pytest.raises(TypeError):
        v.encode(3)
    with pytest.raises(ValueError, match="outside"):
        v.decode([99])
    with pytest.raises(ValueError, match="special"):
        seq.Vocab(["<eos>"])
    with pytest.raises(ValueError, match="distinct"):
        seq.Vocab(["a", "a"])
    with pytest.raises(TypeError):
        seq.Vocab("ab")
    assert seq.pad_sequences([[1], [2, 3]], pad=9).tolist() == [[1, 9], [2, 3]]
    with pytest.raises(TypeError):
        seq.pad_sequences([])


# --------------------------------------------------------------------------------------------- the model
def test_model_shapes_and_parameter_count(task, model):
    z = model(task.test.src[:3], task.test.tgt[:3, :-1])
    assert z.shape == (3, task.test.tgt.shape[1] - 1, len(task.tgt_vocab))
    assert seq.count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_padding_is_ignored_by_the_model(task, model):
    src, tgt = task.test.src[:4], task.test.tgt[:4, :-1]
    with torch.no_grad():
        z = model(src, tgt)
        z_padded = model(F.pad(src, (0, 3), value=seq.PAD), F.pad(tgt, (0, 2), value=seq.PAD))
    assert torch.allclose(z, z_padded[:, :tgt.shape[1]], atol=1e-5)


def test_decoder_is_causal(task, model):
    src, tgt = task.test.src[:2], task.test.tgt[:2, :-1].clone()
    with torch.no_grad():
        z = model(src, tgt)
        tgt[:, -1] = 5
        z2 = model(src, tgt)
    assert torch.allclose(z[:, :-1], z2[:, :-1], atol=1e-5)


def test_model_errors(task, model):
    with pytest.raises(ValueError, match="divisible"):
        seq.Seq2SeqTransformer(10, 10, d_model=10, nhead=3)
    with pytest.raises(TypeError, match="src"):
        model(task.test.src.float(), task.test.tgt)
    with pytest.raises(ValueError, match="outside"):
        model(task.test.src + 100, task.test.tgt)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.ones(1, 100, dtype=torch.long), task.test.tgt[:1])
    with pytest.raises(ValueError, match="unknown keys"):
        seq.build_translator({"seed": 0, "model": {"width": 3}}, 5, 5)
    with pytest.raises(TypeError):
        seq.build_translator({"seed": 0}, 5, 5)


def test_build_is_seeded(task):
    a = seq.build_translator(TINY, 30, 30)
    b = seq.build_translator(TINY, 30, 30)
    c = seq.build_translator({**TINY, "seed": 1}, 30, 30)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.out.weight, c.out.weight)


# --------------------------------------------------------------------------------------------- training
def test_training_is_deterministic_and_learns(task):
    def train():
        m = seq.build_translator(TINY, len(task.src_vocab), len(task.tgt_vocab))
        h = seq.fit_translator(m, task.train, epsilon=0.1, epochs=6, batch_size=32, lr=5e-3, progress=False,
                               device="cpu")
        return m, h

    (m1, h1), (m2, h2) = train(), train()
    assert h1["train_loss"] == h2["train_loss"]
    assert all(torch.equal(x, y) for x, y in zip(m1.parameters(), m2.parameters()))
    assert h1["train_loss"][-1] < h1["train_loss"][0]
    assert not m1.training


def test_fit_errors(task, model):
    with pytest.raises(TypeError, match="Seq2SeqTransformer"):
        seq.fit_translator(torch.nn.Linear(2, 2), task.train)
    with pytest.raises(TypeError, match="TranslationSplit"):
        seq.fit_translator(model, (task.train.src, task.train.tgt))
    with pytest.raises(ValueError, match="epsilon"):
        seq.fit_translator(model, task.train, epsilon=1.5)
    with pytest.raises(ValueError, match="lr"):
        seq.fit_translator(model, task.train, lr=0)


def test_train_translators_caches(task, tmp_data_root):
    cfg = {"task": task.config, "model": TINY["model"], "train": {"epochs": 1, "batch_size": 64, "lr": 1e-3},
           "epsilon": 0.1, "seed": 0}
    (first,) = seq.train_translators(task, [cfg], progress=False, device="cpu")
    (second,) = seq.train_translators(task, [cfg], progress=False, device="cpu")
    assert not first.from_cache and second.from_cache
    assert all(torch.equal(x, y) for x, y in zip(first.model.parameters(), second.model.parameters()))
    assert list((tmp_data_root / "cache").glob("*.pt"))
    with pytest.raises(ValueError, match="task"):
        seq.train_translators(task, [{**cfg, "task": {**task.config, "seed": 5}}], progress=False)
    with pytest.raises(ValueError, match="lacks"):
        seq.train_translators(task, [{"epsilon": 0.1}], progress=False)
    with pytest.raises(ValueError, match="unknown keys"):
        seq.train_translators(task, [{**cfg, "train": {"epochs": 1, "momentum": 0.9}}], progress=False)


def test_train_translators_progress_bars(task, tmp_data_root, capsys):
    """The outer bar counts runs; a run that trains shows its own bar of steps (named by ε and seed), a cached
    run none."""
    cfg = {"task": task.config, "model": TINY["model"], "train": {"epochs": 2, "batch_size": 64, "lr": 1e-3},
           "epsilon": 0.2, "seed": 3}
    seq.train_translators(task, [cfg], progress=True, device="cpu")
    err = capsys.readouterr().err
    assert "runs" in err and "1/1" in err and "ε=0.2 seed=3" in err
    seq.train_translators(task, [cfg], progress=True, device="cpu")
    err = capsys.readouterr().err
    assert "cached=1" in err and "ε=0.2 seed=3" not in err
    seq.train_translators(task, [cfg], progress=False, device="cpu")
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------------- token metrics
def test_token_metrics_ignore_padding_and_match_the_losses():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 5, 7, generator=g)
    y = torch.tensor([[3, 4, 2, 0, 0], [5, 6, 6, 2, 0], [3, 2, 0, 0, 0]])
    m = seq.token_metrics(z, y, epsilon=0.1)
    garbage = z.clone()
    garbage[y == 0] = 100 * torch.randn(int((y == 0).sum()), 7, generator=g)
    assert seq.token_metrics(garbage, y, epsilon=0.1) == pytest.approx(m)
    zf, yf = seq.flatten_tokens(z, y)
    assert m["tokens"] == 9 == len(yf)
    assert m["nll"] == pytest.approx(F.cross_entropy(zf, yf).item(), rel=1e-6)
    assert m["perplexity"] == pytest.approx(math.exp(m["nll"]))
    assert m["smoothed_loss"] == pytest.approx(smoothed_cross_entropy(z.movedim(-1, 1), y, 0.1, ignore_index=0).item(),
                                               rel=1e-6)
    assert m["smoothed_loss"] > m["nll"] * 0.9 and m["exp_smoothed_loss"] == pytest.approx(math.exp(m["smoothed_loss"]))


def test_token_metrics_errors():
    with pytest.raises(ValueError, match="non-padding"):
        seq.token_metrics(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape|\\(N, T"):
        seq.token_metrics(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError):
        seq.token_metrics(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))


def test_teacher_forced_logits_match_forward(task, model):
    z, y = seq.teacher_forced_logits(model, task.test.src, task.test.tgt, batch_size=7)
    with torch.no_grad():
        ref = model(task.test.src, task.test.tgt[:, :-1])
    assert torch.allclose(z, ref, atol=1e-5) and torch.equal(y, task.test.tgt[:, 1:])


# --------------------------------------------------------------------------------------------- decoding
def _table_step(table: torch.Tensor):
    """A step function whose next-token distribution depends only on the last token: ``table[last]``."""
    return lambda prefixes, rows: table[prefixes[:, -1]]


def _random_table(v: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(v, v, generator=g).mul(2).log_softmax(-1)


def _score(table, tokens, bos=seq.BOS, eos=seq.EOS):
    prev, total = bos, 0.0
    for t in tokens:
        total += float(table[prev, t])
        if t == eos:
            break
        prev = t
    return total


def test_beam_width_one_is_greedy(task, model):
    step = seq.model_step(model, task.test.src)
    g_tok, g_sc = seq.greedy_search(step, len(task.test), max_len=12)
    b_tok, b_sc = seq.beam_search(step, len(task.test), beam_size=1, max_len=12)
    w = max(g_tok.shape[1], b_tok.shape[1])
    assert torch.equal(F.pad(g_tok, (0, w - g_tok.shape[1])), F.pad(b_tok, (0, w - b_tok.shape[1])))
    assert torch.allclose(g_sc, b_sc)
    t_tok, _ = seq.translate(model, task.test.src, beam_size=1, max_len=12, batch_size=7)
    assert torch.equal(t_tok[:, :g_tok.shape[1]], g_tok)


def test_beam_beats_greedy_on_a_constructed_case():
    # ids: 0 pad, 1 bos, 2 eos, 3 "a", 4 "b"; after bos "a" 0.55 / "b" 0.45; after "a" the sentence is open (0.5 eos,
    # 0.25 each word); after "b" "<eos>" has 0.95: "b <eos>" (0.43) beats "a <eos>" (0.275) and every other sentence
    p = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, .55, .45], [1, 0, 0, 0, 0], [0, 0, .5, .25, .25], [0, 0, .95, .05, 0]])
    table = (p + 1e-12).log()
    step = _table_step(table)
    g_tok, g_sc = seq.greedy_search(step, 1, max_len=5)
    b_tok, b_sc = seq.beam_search(step, 1, beam_size=2, max_len=5)
    assert g_tok.tolist() == [[3, 2]] and b_tok[0, :2].tolist() == [4, 2]
    assert float(b_sc) > float(g_sc)
    assert float(b_sc) == pytest.approx(math.log(0.45 * 0.95), rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_wide_beam_finds_the_exact_best_sequence(seed):
    v, max_len = 5, 3
    table = _random_table(v, seed)
    table[:, seq.PAD] = -math.inf
    table[:, seq.BOS] = -math.inf
    table = table.log_softmax(-1)
    candidates = []
    for length in range(1, max_len + 1):           # every sequence of ≤ max_len tokens (ended by eos, or cut)
        for body in itertools.product([3, 4], repeat=length - 1):
            candidates.append(list(body) + [seq.EOS])
        candidates += [list(b) for b in itertools.product([3, 4], repeat=max_len)] if length == max_len else []
    best = max(candidates, key=lambda c: _score(table, c))
    tok, sc, beams, beam_scores = seq.beam_search(_table_step(table), 1, beam_size=64, max_len=max_len,
                                                  return_beams=True)
    assert float(sc) == pytest.approx(_score(table, best), abs=1e-9)
    assert tok[0].tolist()[:len(best)] == best
    live = torch.isfinite(beam_scores[0])
    assert int(live.sum()) == len(candidates)                   # a beam wider than the space holds all of it
    for b, score in zip(beams[0][live], beam_scores[0][live]):   # best first, each score its sequence's
        assert float(score) == pytest.approx(_score(table, [t for t in b.tolist() if t != seq.PAD]), abs=1e-9)
    assert beam_scores[0][live].tolist() == sorted(beam_scores[0][live].tolist(), reverse=True)


def test_length_penalty_prefers_longer():
    # after bos: eos 0.4, "a" 0.6; after "a": eos 0.55, "a" 0.45 → "<eos>" (0.4) beats "a <eos>" (0.33) without penalty
    p = torch.tensor([[1, 0, 0, 0], [0, 0, .4, .6], [1, 0, 0, 0], [0, 0, .55, .45]])
    step = _table_step((p + 1e-12).log())
    plain, _ = seq.beam_search(step, 1, beam_size=3, max_len=4)
    long_, _ = seq.beam_search(step, 1, beam_size=3, max_len=4, alpha=2.0)
    assert plain[0, 0].item() == seq.EOS and long_[0, 0].item() == 3
    assert seq.length_penalty(1, 0.0) == 1.0 and seq.length_penalty(7, 1.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="alpha"):
        seq.length_penalty(3, -1)


def test_search_errors():
    step = _table_step(_random_table(5, 0))
    with pytest.raises(ValueError, match="beam_size"):
        seq.beam_search(step, 1, beam_size=0, max_len=3)
    with pytest.raises(ValueError, match="different"):
        seq.greedy_search(step, 1, max_len=3, bos=1, eos=1)
    with pytest.raises(ValueError, match="log-probabilities"):
        seq.greedy_search(lambda p, r: torch.zeros(3), 1, max_len=3)
    with pytest.raises(TypeError, match="batch"):
        seq.greedy_search(step, 1.0, max_len=3)


def test_rectify_inverts_the_smoothing_mixture():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(6, 9, generator=g).mul(3).softmax(-1)
    p = torch.where(p < 1e-3, torch.zeros_like(p), p)
    p = p / p.sum(-1, keepdim=True)
    eps, k = 0.1, 9
    p_ls = (1 - eps) * p + eps / k
    back = seq.rectify_smoothing(p_ls.log(), eps).exp()
    assert torch.allclose(back, p, atol=1e-5)
    assert torch.equal(seq.rectify_smoothing(p_ls.log(), eps).argmax(-1), p_ls.argmax(-1))
    with pytest.raises(ValueError, match="epsilon"):
        seq.rectify_smoothing(p_ls.log(), 1.0)
    with pytest.raises(ValueError, match="floor"):
        seq.rectify_smoothing(p_ls.log(), 0.1, floor=0)


def test_length_cost_and_bound():
    assert seq.min_token_cost(0.0, 10) == 0.0
    assert seq.min_token_cost(0.1, 10) == pytest.approx(-math.log(0.91))
    assert seq.length_bound(0.0, 10) == math.inf
    assert seq.length_bound(0.2, 34) == pytest.approx(math.log(0.2 / 34) / math.log(0.8 + 0.2 / 34))
    with pytest.raises(ValueError):
        seq.length_bound(1.5, 10)


# --------------------------------------------------------------------------------------------- sentence metrics
def test_bleu_identical_is_100_and_multi_reference_helps():
    hyps = ["mille neuf cent nonante sept", "deux cent quatre vingt un trois"]
    assert seq.corpus_bleu(hyps, hyps)["bleu"] == pytest.approx(100.0)
    refs = ["mille neuf cent quatre vingt dix sept", "deux cent quatre vingt un trois"]
    single = seq.corpus_bleu(hyps, refs)
    multi = seq.corpus_bleu(hyps, [(r, h) for r, h in zip(refs, hyps)])
    assert single["bleu"] < 100 and multi["bleu"] == pytest.approx(100.0)
    assert "nrefs:1" in single["signature"] and "nrefs:2" in multi["signature"] and multi["refs"] == 2
    ragged = seq.corpus_bleu(hyps, [(refs[0], hyps[0]), (refs[1],)])
    assert ragged["bleu"] == pytest.approx(100.0)


def test_sentence_metric_errors():
    with pytest.raises(ValueError, match="one entry per hypothesis"):
        seq.corpus_bleu(["a b"], ["a b", "c"])
    with pytest.raises(TypeError):
        seq.corpus_bleu("a b", ["a b"])
    with pytest.raises(TypeError):
        seq.corpus_bleu(["a b"], [3])
    with pytest.raises(ValueError, match="same length"):
        seq.exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        seq.exact_match([], [])


def test_exact_any_and_variant_choices():
    assert seq.exact_match(["un  deux", "trois"], ["un deux", "quatre"]) == 0.5
    assert seq.any_match(["nonante", "x"], [("quatre vingt dix", "nonante"), ("y",)]) == 0.5
    assert seq.variant_choices(["quatre vingt dix", "nonante", "x", "y"],
                               [("quatre vingt dix", "nonante")] * 3 + [("y",)]) == ["france", "other", "wrong", None]


def test_branch_probabilities(task, model):
    recs = seq.branch_probabilities(model, task, task.test)
    assert len(recs) == sum(len(v) == 2 for v in task.test.variants)
    for r in recs:
        assert 0 <= r["p_france"] <= 1 and 0 <= r["p_other"] <= 1 and r["p_france"] + r["p_other"] <= 1 + 1e-6
        assert r["tens"] in (70, 80, 90)
        assert r["data_share_france"] == pytest.approx(0.85 if r["tens"] == 80 else 0.6)
        p_ref = r["p_france"] if r["reference"] == "france" else r["p_other"]
        assert r["nll_reference"] == pytest.approx(-math.log(p_ref), rel=1e-5)
    # the probabilities are the teacher-forced ones at the branch position
    i = next(i for i, v in enumerate(task.test.variants) if len(v) == 2)
    france = task.test.variants[i][0].split()
    j = next(j for j, (a, b) in enumerate(zip(france, task.test.variants[i][1].split())) if a != b)
    tgt = torch.tensor([[seq.BOS] + [task.tgt_vocab.index[w] for w in france[:j]]])
    with torch.no_grad():
        p = model(task.test.src[i:i + 1], tgt)[0, -1].softmax(-1)
    first = next(r for r in recs if r["number"] == task.test.numbers[i])
    assert first["p_france"] == pytest.approx(float(p[task.tgt_vocab.index[france[j]]]), rel=1e-5)
