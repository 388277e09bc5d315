"""Sequence models: a tiny translation task with several right answers, a Transformer, decoding and token metrics.

**The task** (:func:`make_number_task`): English number words → French number words, generated offline and
deterministically. French has regional synonyms for 70, 80 and 90: France says *soixante-dix*, *quatre-vingts*,
*quatre-vingt-dix*; Belgium *septante*, *quatre-vingts*, *nonante*; Switzerland (Vaud, Valais, Fribourg)
*septante*, *huitante*, *nonante*. Each target sentence is written in one dialect drawn at random (default
frequencies 0.6 / 0.25 / 0.15), so a number ending in 70–99 has two right translations of different lengths, and
the data says how often each is used. French words are separated by spaces (the hyphens of French spelling are
dropped); the spelling rules of *et un*, *quatre-vingts* / *quatre-vingt-un*, *deux cents* / *deux cent un*,
*mille* are kept::

    >>> english_words(1972), french_words(1972, "france"), french_words(1972, "belgium")
    ('one thousand nine hundred seventy two', 'mille neuf cent soixante douze', 'mille neuf cent septante deux')

**The model** (:class:`Seq2SeqTransformer`): an encoder–decoder Transformer from ``torch.nn`` layers (pre-norm),
sinusoidal positions, a causal mask in the decoder and padding masks everywhere. :func:`fit_translator` trains
it with teacher forcing and (label-smoothed) cross-entropy whose ``ignore_index`` is the padding token.

**Decoding**: :func:`greedy_search` and :func:`beam_search` work on any *step function*
``step(prefixes, rows) -> log-probabilities`` (so they can be tested on hand-made distributions);
:func:`translate` wires them to a model. Beam search supports the GNMT length penalty
(:func:`length_penalty`, Wu et al. 2016) and a transform of the next-token distribution, e.g.
:func:`rectify_smoothing`, which undoes the mixing ``p_LS = (1-ε)·p + ε/K`` that label smoothing teaches
(after the idea of Liang et al. 2022).

**Metrics**: :func:`token_metrics` (NLL, perplexity from the *unsmoothed* NLL, token accuracy, and the smoothed
loss for comparison), :func:`corpus_bleu` (sacrebleu, one or several references per sentence), :func:`exact_match`,
:func:`branch_probabilities` (how much probability a model gives each synonym where the translations part ways).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ._validate import as_int, as_real, check_probability, check_tensor, progress_bar
from .config import default_device
from .train import TrainedRun, load_or_train, one_cycle_schedule

__all__ = ["PAD", "BOS", "EOS", "SPECIAL_TOKENS", "DIALECTS", "english_words", "french_words", "french_variants",
           "Vocab", "TranslationSplit", "NumberTask", "make_number_task", "pad_sequences",
           "sinusoidal_positions", "Seq2SeqTransformer", "build_translator", "fit_translator",
           "teacher_forced_logits", "token_metrics", "flatten_tokens", "greedy_search", "beam_search",
           "length_penalty", "rectify_smoothing", "translate", "model_step", "corpus_bleu", "exact_match",
           "any_match", "branch_probabilities", "count_parameters", "train_translators", "variant_choices",
           "min_token_cost", "length_bound"]

PAD, BOS, EOS = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
#: The dialects and their default frequencies in the generated data.
DIALECTS = ("france", "belgium", "switzerland")

# --------------------------------------------------------------------------------------------- number words
_EN_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
             "sixteen seventeen eighteen nineteen").split()
_EN_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}
_FR_SMALL = "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize".split()
_FR_TENS = {2: "vingt", 3: "trente", 4: "quarante", 5: "cinquante", 6: "soixante"}
_MAX_NUMBER = 999_999


def _check_number(n: Any) -> int:
    n = as_int("n", n)
    if not 0 <= n <= _MAX_NUMBER:
        raise ValueError(f"n must be in [0, {_MAX_NUMBER}], got {n}")
    return n


def _check_dialect(dialect: Any) -> str:
    if not isinstance(dialect, str):
        raise TypeError(f"dialect must be a str, one of {DIALECTS}, got {type(dialect).__name__}")
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    return dialect


def _en_below_1000(n: int) -> list[str]:
    words = []
    if n >= 100:
        words += [_EN_SMALL[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_EN_TENS[n // 10])
        n %= 10
        if n:
            words.append(_EN_SMALL[n])
    elif n or not words:
        words.append(_EN_SMALL[n])
    return words


def english_words(n: int) -> str:
    """American English words of ``0 <= n <= 999,999``, lower case, separated by spaces (no "and", no hyphens).

    >>> english_words(0), english_words(21), english_words(100_071)
    ('zero', 'twenty one', 'one hundred thousand seventy one')
    """
    n = _check_number(n)
    if n < 1000:
        return " ".join(_en_below_1000(n))
    words = _en_below_1000(n // 1000) + ["thousand"]
    if n % 1000:
        words += _en_below_1000(n % 1000)
    return " ".join(words)


def _fr_tens_and_units(tens_word: list[str], unit: int, with_et: bool) -> list[str]:
    if unit == 0:
        return tens_word
    if unit == 1 and with_et:
        return tens_word + ["et", "un"]
    return tens_word + [_FR_SMALL[unit]]


def _fr_below_100(n: int, dialect: str, final: bool) -> list[str]:
    """French words of ``1 <= n <= 99``; ``final``: the numeral ends here (``quatre-vingts`` takes its s)."""
    if n <= 16:
        return [_FR_SMALL[n]]
    if n < 20:
        return ["dix", _FR_SMALL[n - 10]]
    tens, unit = divmod(n, 10)
    if tens <= 6:
        return _fr_tens_and_units([_FR_TENS[tens]], unit, with_et=True)
    if tens == 7:
        if dialect == "france":   # soixante-dix, soixante et onze, soixante-douze, ..., soixante-dix-neuf
            return ["soixante", "et", "onze"] if n == 71 else ["soixante"] + _fr_below_100(n - 60, dialect, final)
        return _fr_tens_and_units(["septante"], unit, with_et=True)
    if tens == 8:
        if dialect == "switzerland":
            return _fr_tens_and_units(["huitante"], unit, with_et=True)
        if unit == 0:
            return ["quatre", "vingts" if final else "vingt"]
        return ["quatre", "vingt", _FR_SMALL[unit]]                    # quatre-vingt-un: no "et"
    if dialect == "france":                                               # quatre-vingt-dix ... quatre-vingt-dix-neuf
        return ["quatre", "vingt"] + _fr_below_100(n - 80, dialect, final)
    return _fr_tens_and_units(["nonante"], unit, with_et=True)


def _fr_below_1000(n: int, dialect: str, final: bool) -> list[str]:
    hundreds, rest = divmod(n, 100)
    words = []
    if hundreds == 1:
        words = ["cent"]
    elif hundreds > 1:
        words = [_FR_SMALL[hundreds], "cents" if rest == 0 and final else "cent"]
    if rest:
        words += _fr_below_100(rest, dialect, final)
    return words


def french_words(n: int, dialect: str = "france") -> str:
    """French words of ``0 <= n <= 999,999`` in ``dialect`` (``"france"``, ``"belgium"``, ``"switzerland"``).

    Words are separated by spaces (the hyphens of French spelling are left out). Plural *s* of *cents* and
    *quatre-vingts* only at the end of the numeral, *et un* for 21–71 (and 81, 91 with *huitante*, *nonante*),
    *mille* invariable and without *un*.

    >>> french_words(80), french_words(80_000), french_words(91, "switzerland"), french_words(200)
    ('quatre vingts', 'quatre vingt mille', 'nonante et un', 'deux cents')
    """
    n = _check_number(n)
    dialect = _check_dialect(dialect)
    if n == 0:
        return _FR_SMALL[0]
    thousands, rest = divmod(n, 1000)
    words = []
    if thousands == 1:
        words = ["mille"]
    elif thousands > 1:
        words = _fr_below_1000(thousands, dialect, final=False) + ["mille"]
    if rest:
        words += _fr_below_1000(rest, dialect, final=True)
    return " ".join(words)


def french_variants(n: int) -> tuple[str, ...]:
    """The distinct French translations of ``n`` over the dialects, in the order of :data:`DIALECTS`.

    >>> french_variants(75)
    ('soixante quinze', 'septante cinq')
    >>> french_variants(12)
    ('douze',)
    """
    out: list[str] = []
    for d in DIALECTS:
        w = french_words(n, d)
        if w not in out:
            out.append(w)
    return tuple(out)


# --------------------------------------------------------------------------------------------- vocabulary, data
class Vocab:
    """A closed word vocabulary with the special tokens ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2.

    >>> v = Vocab(["un", "deux"])
    >>> len(v), v.encode("deux un"), v.decode([1, 4, 3, 2, 0])
    (5, [4, 3, 2], 'deux un')
    """

    def __init__(self, words: Iterable[str]):
        if isinstance(words, str):
            raise TypeError("words must be an iterable of words, not one str")
        words = list(words)
        for w in words:
            if not isinstance(w, str) or not w or " " in w:
                raise ValueError(f"every word must be a non-empty str without spaces, got {w!r}")
        if len(set(words)) != len(words):
            raise ValueError("words must be distinct")
        clash = sorted(set(words) & set(SPECIAL_TOKENS))
        if clash:
            raise ValueError(f"words must not contain the special tokens {clash}")
        self.tokens: tuple[str, ...] = SPECIAL_TOKENS + tuple(words)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens: {', '.join(self.tokens[:8])}{', ...' if len(self) > 8 else ''})"

    def encode(self, sentence: str, *, bos: bool = False, eos: bool = True) -> list[int]:
        """Token ids of a space-separated ``sentence`` (``<bos>`` first if ``bos``, ``<eos>`` last if ``eos``)."""
        if not isinstance(sentence, str):
            raise TypeError(f"sentence must be a str, got {type(sentence).__name__}")
        try:
            ids = [self.index[w] for w in sentence.split()]
        except KeyError as exc:
            raise ValueError(f"word {exc.args[0]!r} of {sentence!r} is not in the vocabulary") from None
        return ([BOS] if bos else []) + ids + ([EOS] if eos else [])

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """The words of ``ids`` up to the first ``<eos>``, special tokens left out, joined by spaces."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        words = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(self.tokens) - 1}]")
            if i > EOS:
                words.append(self.tokens[i])
        return " ".join(words)

    def decode_batch(self, ids: torch.Tensor) -> list[str]:
        """:meth:`decode` of every row of ``ids`` ``(N, L)``."""
        check_tensor("ids", ids, floating=False, allow_empty=True)
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape (N, L), got {tuple(ids.shape)}")
        return [self.decode(row) for row in ids.tolist()]


def pad_sequences(seqs: Sequence[Sequence[int]], pad: int = PAD) -> torch.Tensor:
    """Lists of token ids → one ``(N, L)`` int64 tensor, right-padded with ``pad`` to the longest (``L``).

    >>> pad_sequences([[5, 2], [7, 8, 9, 2]])
    tensor([[5, 2, 0, 0],
            [7, 8, 9, 2]])
    """
    if isinstance(seqs, (str, torch.Tensor)) or not isinstance(seqs, Sequence) or not seqs:
        raise TypeError("seqs must be a non-empty list of token-id lists")
    longest = max(len(s) for s in seqs)
    if longest == 0:
        raise ValueError("every sequence is empty")
    out = torch.full((len(seqs), longest), as_int("pad", pad), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out


@dataclass(frozen=True)
class TranslationSplit:
    """One split of a translation task.

    ``numbers``, ``sources`` (English), ``targets`` (the French reference, in the sampled ``dialects``),
    ``variants`` (every right French translation; the reference is one of them), and the tensors ``src``
    ``(N, S)`` (source ids + ``<eos>``, padded) and ``tgt`` ``(N, T)`` (``<bos>`` + target ids + ``<eos>``, padded):
    the decoder reads ``tgt[:, :-1]`` and predicts ``tgt[:, 1:]``.
    """

    numbers: tuple[int, ...]
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    dialects: tuple[str, ...]
    variants: tuple[tuple[str, ...], ...]
    src: torch.Tensor
    tgt: torch.Tensor

    def __len__(self) -> int:
        return len(self.numbers)

    def subset(self, index: Sequence[int]) -> "TranslationSplit":
        """The sentences at ``index`` (a list of positions), as a new split (tensors trimmed of all-padding columns).

        >>> split = make_number_task(99, 60, 20, 20).test
        >>> two = split.subset([i for i, v in enumerate(split.variants) if len(v) == 2])
        >>> all(len(v) == 2 for v in two.variants)
        True
        """
        if isinstance(index, (str, torch.Tensor)) or not isinstance(index, Sequence) or not index:
            raise TypeError("index must be a non-empty list of positions")
        idx = [as_int(f"index[{j}]", i) for j, i in enumerate(index)]
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"index holds positions outside [0, {len(self) - 1}]: {bad[:5]}")
        pick = lambda xs: tuple(xs[i] for i in idx)  # noqa: E731
        src, tgt = _trim(self.src[idx], self.tgt[idx])
        return TranslationSplit(numbers=pick(self.numbers), sources=pick(self.sources), targets=pick(self.targets),
                                dialects=pick(self.dialects), variants=pick(self.variants), src=src, tgt=tgt)


@dataclass(frozen=True)
class NumberTask:
    """English → French number words: vocabularies, the ``train`` / ``valid`` / ``test`` splits and the settings.

    ``config`` is the plain-data description the task was made from (put it in a cache key).
    ``dialect_probs`` maps each dialect to its frequency in the data.
    """

    src_vocab: Vocab
    tgt_vocab: Vocab
    train: TranslationSplit
    valid: TranslationSplit
    test: TranslationSplit
    config: dict
    dialect_probs: dict


def _split(numbers: np.ndarray, dialects: np.ndarray, src_vocab: Vocab, tgt_vocab: Vocab) -> TranslationSplit:
    nums = tuple(int(n) for n in numbers)
    srcs = tuple(english_words(n) for n in nums)
    dls = tuple(DIALECTS[int(d)] for d in dialects)
    tgts = tuple(french_words(n, d) for n, d in zip(nums, dls))
    return TranslationSplit(
        numbers=nums, sources=srcs, targets=tgts, dialects=dls, variants=tuple(french_variants(n) for n in nums),
        src=pad_sequences([src_vocab.encode(s) for s in srcs]),
        tgt=pad_sequences([tgt_vocab.encode(t, bos=True) for t in tgts]))


def make_number_task(max_number: int = 9999, n_train: int = 4000, n_valid: int = 1000, n_test: int = 1000,
                     dialect_probs: Sequence[float] = (0.6, 0.25, 0.15), seed: int = 0) -> NumberTask:
    """The translation task: the numbers ``0 .. max_number`` in a seeded random order, split without overlap.

    The first ``n_test`` numbers of the seeded permutation are the test split, the next ``n_valid`` the
    validation split, the next ``n_train`` the training split (so the test and validation numbers do not depend
    on ``n_train``). Each number's dialect is drawn once, from ``dialect_probs`` (France, Belgium, Switzerland),
    with the same seed. Both vocabularies hold every word of the number range (all dialects), sorted.

    >>> task = make_number_task(max_number=999, n_train=600, n_valid=200, n_test=200, seed=0)
    >>> len(task.train), task.train.src.shape[0], task.tgt_vocab.tokens[:3]
    (600, 600, ('<pad>', '<bos>', '<eos>'))
    >>> make_number_task(999, 600, 200, 200).test.numbers[:5] == task.test.numbers[:5]   # deterministic
    True
    """
    max_number = as_int("max_number", max_number, minimum=1)
    if max_number > _MAX_NUMBER:
        raise ValueError(f"max_number must be <= {_MAX_NUMBER}, got {max_number}")
    n_train = as_int("n_train", n_train, minimum=1)
    n_valid = as_int("n_valid", n_valid, minimum=1)
    n_test = as_int("n_test", n_test, minimum=1)
    seed = as_int("seed", seed, minimum=0)
    if n_train + n_valid + n_test > max_number + 1:
        raise ValueError(f"n_train + n_valid + n_test = {n_train + n_valid + n_test} exceeds the "
                         f"{max_number + 1} numbers 0..{max_number}")
    if isinstance(dialect_probs, (str, bytes)) or not isinstance(dialect_probs, Sequence):
        raise TypeError(f"dialect_probs must be a sequence of {len(DIALECTS)} probabilities, got "
                        f"{type(dialect_probs).__name__}")
    probs = [check_probability(f"dialect_probs[{i}]", p) for i, p in enumerate(dialect_probs)]
    if len(probs) != len(DIALECTS) or abs(sum(probs) - 1) > 1e-9:
        raise ValueError(f"dialect_probs must hold {len(DIALECTS)} probabilities ({', '.join(DIALECTS)}) summing to 1, "
                         f"got {list(dialect_probs)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(max_number + 1)
    dialects = rng.choice(len(DIALECTS), size=max_number + 1, p=np.asarray(probs) / sum(probs))
    src_words = sorted({w for n in range(max_number + 1) for w in english_words(n).split()})
    tgt_words = sorted({w for n in range(max_number + 1) for v in french_variants(n) for w in v.split()})
    src_vocab, tgt_vocab = Vocab(src_words), Vocab(tgt_words)
    cut = np.cumsum([n_test, n_valid, n_train])
    test, valid, train = (slice(0, cut[0]), slice(cut[0], cut[1]), slice(cut[1], cut[2]))
    config = {"task": "en-fr numbers", "max_number": max_number, "n_train": n_train, "n_valid": n_valid,
              "n_test": n_test, "dialect_probs": [float(p) for p in probs], "seed": seed}
    return NumberTask(src_vocab=src_vocab, tgt_vocab=tgt_vocab,
                      train=_split(order[train], dialects[train], src_vocab, tgt_vocab),
                      valid=_split(order[valid], dialects[valid], src_vocab, tgt_vocab),
                      test=_split(order[test], dialects[test], src_vocab, tgt_vocab),
                      config=config, dialect_probs=dict(zip(DIALECTS, probs)))


# --------------------------------------------------------------------------------------------- the model
def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """The sinusoidal position encodings of Vaswani et al. (2017): ``(length, d_model)`` float32.

    ``PE[pos, 2i] = sin(pos / 10000^(2i/d))``, ``PE[pos, 2i+1] = cos(pos / 10000^(2i/d))``.

    >>> pe = sinusoidal_positions(4, 6)
    >>> pe.shape, pe[0].tolist()[:2]
    (torch.Size([4, 6]), [0.0, 1.0])
    """
    length = as_int("length", length, minimum=1)
    d_model = as_int("d_model", d_model, minimum=2)
    if d_model % 2:
        raise ValueError(f"d_model must be even for sinusoidal positions, got {d_model}")
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


class Seq2SeqTransformer(nn.Module):
    """An encoder–decoder Transformer (pre-norm ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``).

    Token embeddings scaled by ``√d_model`` plus sinusoidal positions; the encoder sees a padding mask, the
    decoder a causal mask plus padding masks on its own input and on the encoder's output; a linear layer maps
    to the target vocabulary. ``forward(src, tgt_in)``: ``src`` ``(B, S)`` and ``tgt_in`` ``(B, T)`` int64 token
    ids (``pad_id`` = padding) → logits ``(B, T, K)``, ``K = tgt_vocab_size``.

    >>> m = Seq2SeqTransformer(10, 12, d_model=16, nhead=2, num_layers=1, dim_feedforward=32)
    >>> m(torch.tensor([[3, 4, 2]]), torch.tensor([[1, 5]])).shape
    torch.Size([1, 2, 12])
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, d_model: int = 64, nhead: int = 4,
                 num_layers: int = 2, dim_feedforward: int = 128, dropout: float = 0.1, max_len: int = 64,
                 pad_id: int = PAD):
        super().__init__()
        src_vocab_size = as_int("src_vocab_size", src_vocab_size, minimum=2)
        tgt_vocab_size = as_int("tgt_vocab_size", tgt_vocab_size, minimum=2)
        d_model = as_int("d_model", d_model, minimum=2)
        nhead = as_int("nhead", nhead, minimum=1)
        if d_model % nhead:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        num_layers = as_int("num_layers", num_layers, minimum=1)
        dim_feedforward = as_int("dim_feedforward", dim_feedforward, minimum=1)
        dropout = check_probability("dropout", dropout, high_open=True)
        self.max_len = as_int("max_len", max_len, minimum=2)
        self.pad_id = as_int("pad_id", pad_id, minimum=0)
        self.d_model = d_model
        self.src_embed = nn.Embedding(src_vocab_size, d_model, padding_idx=self.pad_id)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, d_model, padding_idx=self.pad_id)
        self.register_buffer("positions", sinusoidal_positions(self.max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)
        enc = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True, norm_first=True)
        dec = nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, num_layers, norm=nn.LayerNorm(d_model))
        self.out = nn.Linear(d_model, tgt_vocab_size)

    @property
    def tgt_vocab_size(self) -> int:
        return self.out.out_features

    def _embed(self, emb: nn.Embedding, ids: torch.Tensor, name: str) -> torch.Tensor:
        check_tensor(name, ids, floating=False)
        if ids.dim() != 2:
            raise ValueError(f"{name} must have shape (B, L) of token ids, got {tuple(ids.shape)}")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"{name} has {ids.shape[1]} positions, more than max_len={self.max_len}")
        if int(ids.min()) < 0 or int(ids.max()) >= emb.num_embeddings:
            raise ValueError(f"{name} holds token ids outside [0, {emb.num_embeddings - 1}]")
        return self.dropout(emb(ids) * math.sqrt(self.d_model) + self.positions[:ids.shape[1]])

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(memory (B, S, d_model), src padding mask (B, S), True = padding)``."""
        mask = src == self.pad_id
        return self.encoder(self._embed(self.src_embed, src, "src"), src_key_padding_mask=mask), mask

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, K)`` of the next token at every position of ``tgt_in`` ``(B, T)``, given the encoder output."""
        t = tgt_in.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=tgt_in.device), diagonal=1)
        h = self.decoder(self._embed(self.tgt_embed, tgt_in, "tgt_in"), memory, tgt_mask=causal,
                         tgt_key_padding_mask=tgt_in == self.pad_id, memory_key_padding_mask=src_mask)
        return self.out(h)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters.

    >>> count_parameters(nn.Linear(3, 2))
    8
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


_MODEL_KEYS = ("d_model", "nhead", "num_layers", "dim_feedforward", "dropout", "max_len")


def build_translator(config: Mapping[str, Any], src_vocab_size: int, tgt_vocab_size: int) -> Seq2SeqTransformer:
    """A fresh :class:`Seq2SeqTransformer` from ``config["model"]`` (its keyword arguments), initialised under
    ``torch.manual_seed(config["seed"])`` (the global generator is restored afterwards).

    >>> cfg = {"seed": 0, "model": {"d_model": 16, "nhead": 2, "num_layers": 1, "dim_feedforward": 32}}
    >>> a, b = build_translator(cfg, 10, 12), build_translator(cfg, 10, 12)
    >>> bool(torch.equal(a.out.weight, b.out.weight))
    True
    """
    if not isinstance(config, Mapping) or not isinstance(config.get("model"), Mapping):
        raise TypeError("config must be a dict with a 'model' dict (d_model, nhead, num_layers, ...) and a 'seed'")
    unknown = sorted(set(config["model"]) - set(_MODEL_KEYS))
    if unknown:
        raise ValueError(f"config['model'] has unknown keys {unknown}; allowed: {list(_MODEL_KEYS)}")
    seed = as_int("config['seed']", config.get("seed"), minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Seq2SeqTransformer(src_vocab_size, tgt_vocab_size, **config["model"])


# --------------------------------------------------------------------------------------------- training
def _check_model(model: Any) -> Seq2SeqTransformer:
    if not isinstance(model, Seq2SeqTransformer):
        raise TypeError(f"model must be a Seq2SeqTransformer, got {type(model).__name__}")
    return model


def _check_pair(src: Any, tgt: Any) -> None:
    for name, t in (("src", src), ("tgt", tgt)):
        check_tensor(name, t, floating=False)
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape (N, L) of token ids, got {tuple(t.shape)}")
    if src.shape[0] != tgt.shape[0]:
        raise ValueError(f"src and tgt must hold the same number of sentences, got {src.shape[0]} and {tgt.shape[0]}")
    if tgt.shape[1] < 2:
        raise ValueError(f"tgt must hold <bos>, at least one token and <eos> (L >= 2), got shape {tuple(tgt.shape)}")


def _trim(*ts: torch.Tensor) -> list[torch.Tensor]:
    """Drop the all-padding columns at the right of each (B, L) tensor."""
    out = []
    for t in ts:
        used = (t != PAD).any(0).nonzero()
        out.append(t[:, :int(used.max()) + 1] if used.numel() else t[:, :1])
    return out


def fit_translator(model: Seq2SeqTransformer, split: TranslationSplit, *, epsilon: float = 0.0, epochs: int = 10,
                   batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 0.0, seed: int = 0,
                   device: Any = None, progress: bool = True, desc: str | None = None,
                   leave: bool = False) -> dict[str, list[float]]:
    """Train ``model`` in place with teacher forcing on ``split``; return its history.

    Loss: ``F.cross_entropy(logits, tgt[:, 1:], ignore_index=PAD, label_smoothing=epsilon)`` over the
    non-padding target tokens (PyTorch's convention: ``ε/K`` on every class of the target vocabulary).
    AdamW (β = (0.9, 0.98)) with the book's one-cycle schedule (:func:`lsutils.train.one_cycle_schedule`),
    gradient norm clipped at 1, seeded batch order and dropout (``seed``). Arithmetic: float32. (bf16 autocast,
    which the book's CNN trainer uses on CPUs with native bf16, was *slower* for these tiny matrices on the book's
    2-core EPYC: forward + backward of a batch of 256 sentences took 33 ms against 30 ms in fp32 for the
    one-layer model, 64 ms against 55 ms for a two-layer one.) History per epoch:
    ``train_loss`` (the training objective, smoothed if ``ε > 0``) and ``train_acc`` (token accuracy with
    dropout on), plus ``seconds``.

    >>> task = make_number_task(99, 60, 20, 20)
    >>> cfg = {"seed": 0, "model": {"d_model": 16, "nhead": 2, "num_layers": 1, "dim_feedforward": 32}}
    >>> m = build_translator(cfg, len(task.src_vocab), len(task.tgt_vocab))
    >>> h = fit_translator(m, task.train, epochs=2, batch_size=32, progress=False, device="cpu")
    >>> len(h["train_loss"])
    2
    """
    model = _check_model(model)
    if not isinstance(split, TranslationSplit):
        raise TypeError(f"split must be a TranslationSplit, got {type(split).__name__}")
    epsilon = check_probability("epsilon", epsilon)
    epochs = as_int("epochs", epochs, minimum=1)
    batch_size = as_int("batch_size", batch_size, minimum=1)
    lr = as_real("lr", lr)
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    weight_decay = as_real("weight_decay", weight_decay)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    seed = as_int("seed", seed, minimum=0)
    dev = torch.device(device) if device is not None else default_device()
    src_all, tgt_all = split.src.to(dev), split.tgt.to(dev)
    _check_pair(src_all, tgt_all)
    n = src_all.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    sched = one_cycle_schedule(opt, lr, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "seconds": []}
    k = model.tgt_vocab_size
    bar = progress_bar(total=epochs * steps_per_epoch, desc=desc or "training", unit="step", disable=not progress,
                       leave=leave)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for _ in range(epochs):
                t0 = time.perf_counter()
                perm = torch.randperm(n, generator=gen).to(dev)
                loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
                hits = torch.zeros((), dtype=torch.int64, device=dev)
                count = torch.zeros((), dtype=torch.int64, device=dev)
                for idx in torch.tensor_split(perm, steps_per_epoch):
                    src, tgt = _trim(src_all[idx], tgt_all[idx])
                    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
                    logits = model(src, tgt_in).reshape(-1, k)
                    target = tgt_out.reshape(-1)
                    loss = F.cross_entropy(logits, target, ignore_index=PAD, label_smoothing=epsilon)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    keep = target != PAD
                    with torch.no_grad():
                        loss_sum += loss.detach().double() * keep.sum()
                        hits += ((logits.argmax(1) == target) & keep).sum()
                        count += keep.sum()
                    bar.update(1)
                c = int(count.item())
                loss_mean = float(loss_sum.item()) / c
                if not math.isfinite(loss_mean):
                    raise FloatingPointError(f"the training loss is not finite ({loss_mean}); lower lr")
                history["train_loss"].append(loss_mean)
                history["train_acc"].append(int(hits.item()) / c)
                history["seconds"].append(time.perf_counter() - t0)
                bar.set_postfix({"loss": f"{loss_mean:.3f}", "acc": f"{history['train_acc'][-1]:.3f}"}, refresh=False)
    finally:
        bar.close()
        model.eval()
    return history


_CONFIG_KEYS = ("task", "model", "train", "epsilon", "seed")


def _check_config(config: Any, task: NumberTask) -> dict:
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    missing = sorted(set(_CONFIG_KEYS) - set(config))
    if missing:
        raise ValueError(f"config lacks {missing}; a run's config holds {list(_CONFIG_KEYS)}")
    if config["task"] != task.config:
        raise ValueError("config['task'] is not the task's config: the cache key would describe other data")
    unknown = sorted(set(config["train"]) - {"epochs", "batch_size", "lr", "weight_decay"})
    if unknown:
        raise ValueError(f"config['train'] has unknown keys {unknown}; allowed: epochs, batch_size, lr, weight_decay")
    check_probability("config['epsilon']", config["epsilon"])
    return dict(config)


def train_translators(task: NumberTask, configs: Sequence[Mapping[str, Any]], *, progress: bool = True,
                      device: Any = None) -> list[TrainedRun]:
    """Train (or load from the cache) one translator per config, in order.

    Progress (``progress=True``): an outer bar counts the runs (and how many came from the cache); a run that
    trains shows its own bar of optimisation steps under it, which disappears when the run ends (as in
    :func:`lsutils.train.train_many`).

    A config is plain data: ``{"task": task.config, "model": {...}, "train": {"epochs", "batch_size", "lr", ...},
    "epsilon": ε, "seed": s}``. Each model is :func:`build_translator` + :func:`fit_translator`, cached by
    :func:`lsutils.train.load_or_train` under a key over the whole config and the code of this module
    (``code=["lsutils.seq"]``) and the core's; the file is written atomically and read with ``weights_only=True``.
    Returns the :class:`lsutils.train.TrainedRun` of each config (``run.model`` in eval mode, ``run.history``
    as :func:`fit_translator` returned it, ``run.from_cache``).
    """
    if isinstance(configs, Mapping) or not isinstance(configs, Sequence):
        raise TypeError(f"configs must be a list of run configs, got {type(configs).__name__}")
    configs = [_check_config(c, task) for c in configs]
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    dev = torch.device(device) if device is not None else default_device()
    runs: list[TrainedRun] = []
    with progress_bar(total=len(configs), desc="runs", unit="run", disable=not progress) as bar:
        for cfg in configs:
            def build(cfg: dict = cfg) -> nn.Module:
                return build_translator(cfg, len(task.src_vocab), len(task.tgt_vocab))

            def train(model: nn.Module, cfg: dict = cfg) -> dict:
                return fit_translator(model, task.train, epsilon=cfg["epsilon"], seed=cfg["seed"], device=dev,
                                      progress=progress, desc=f"ε={cfg['epsilon']:g} seed={cfg['seed']}",
                                      leave=False, **cfg["train"])

            runs.append(load_or_train(cfg, build, train, code=["lsutils.seq"], device=dev))
            bar.set_postfix({"cached": sum(r.from_cache for r in runs)}, refresh=False)
            bar.update(1)
    return runs


# --------------------------------------------------------------------------------------------- token metrics
@torch.no_grad()
def teacher_forced_logits(model: Seq2SeqTransformer, src: torch.Tensor, tgt: torch.Tensor, *,
                          batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits under teacher forcing, in float32 and eval mode: ``(logits (N, T-1, K), targets (N, T-1))``.

    ``src`` ``(N, S)``, ``tgt`` ``(N, T)`` (``<bos>`` … ``<eos>``, padded); ``targets = tgt[:, 1:]`` (padding where
    there is no token). Computed on the model's device in fp32 (no autocast), returned on the CPU.
    """
    model = _check_model(model)
    _check_pair(src, tgt)
    batch_size = as_int("batch_size", batch_size, minimum=1)
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    out = []
    try:
        for i in range(0, src.shape[0], batch_size):
            s, t = src[i:i + batch_size].to(dev), tgt[i:i + batch_size].to(dev)
            out.append(model(s, t[:, :-1]).float().cpu())
    finally:
        model.train(was)
    return torch.cat(out), tgt[:, 1:].cpu()


def flatten_tokens(logits: torch.Tensor, targets: torch.Tensor, pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-padding positions of ``logits`` ``(N, T, K)`` and ``targets`` ``(N, T)`` as ``(M, K)`` and ``(M,)``.

    >>> z, y = flatten_tokens(torch.zeros(2, 3, 5), torch.tensor([[4, 2, 0], [3, 3, 2]]))
    >>> z.shape, y.tolist()
    (torch.Size([5, 5]), [4, 2, 3, 3, 2])
    """
    check_tensor("logits", logits, floating=True)
    check_tensor("targets", targets, floating=False)
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (N, T, K) and targets (N, T), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    keep = targets != pad
    return logits[keep], targets[keep]


def token_metrics(logits: torch.Tensor, targets: torch.Tensor, *, epsilon: float = 0.0,
                  pad: int = PAD) -> dict[str, float]:
    """Token-level scores of next-token ``logits`` ``(N, T, K)`` against ``targets`` ``(N, T)``, padding ignored.

    Returns ``tokens`` (non-padding positions), ``nll`` (mean ``-log p`` of the reference token, nats),
    ``perplexity = exp(nll)``, ``accuracy`` (argmax = reference), ``smoothed_loss`` (the label-smoothed
    cross-entropy with ``epsilon``, the number a training log shows) and ``exp_smoothed_loss``. Perplexity is
    defined from the unsmoothed NLL: ``exp(smoothed_loss)`` is not a perplexity (it also charges the model for
    the probability it does not give the ``ε/K`` targets of every other token).

    >>> z = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [1/3, 1/3, 1/3]]]))
    >>> m = token_metrics(z, torch.tensor([[1, 0]]), pad=0)       # one real token, p = 0.25
    >>> m["tokens"], round(m["perplexity"], 6), m["accuracy"]
    (1, 4.0, 0.0)
    """
    epsilon = check_probability("epsilon", epsilon)
    z, y = flatten_tokens(logits, targets, pad)
    if y.numel() == 0:
        raise ValueError("targets hold no non-padding token")
    z = z.double()
    nll = F.cross_entropy(z, y, reduction="mean").item()
    smoothed = F.cross_entropy(z, y, label_smoothing=epsilon, reduction="mean").item()
    return {"tokens": int(y.numel()), "nll": nll, "perplexity": math.exp(nll),
            "accuracy": float((z.argmax(1) == y).double().mean().item()),
            "smoothed_loss": smoothed, "exp_smoothed_loss": math.exp(smoothed)}


# --------------------------------------------------------------------------------------------- decoding
StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def length_penalty(length: torch.Tensor | float, alpha: float) -> torch.Tensor | float:
    """GNMT's length penalty ``lp(L) = ((5 + L) / 6)^α`` (Wu et al. 2016); scores are divided by it.

    ``α = 0`` gives 1 (no penalty); a larger ``α`` favours longer hypotheses.

    >>> length_penalty(1, 0.6), round(length_penalty(7, 1.0), 3)
    (1.0, 2.0)
    """
    alpha = as_real("alpha", alpha)
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if isinstance(length, torch.Tensor):
        return ((5.0 + length.double()) / 6.0) ** alpha
    return ((5.0 + as_real("length", length)) / 6.0) ** alpha


def rectify_smoothing(log_probs: torch.Tensor, epsilon: float, *, floor: float = 1e-6) -> torch.Tensor:
    """Undo label smoothing's mixing at decoding time: ``p̂ ∝ max(p_LS − ε/K, floor)``, returned as log-probabilities.

    A model fully optimised with label smoothing predicts ``p_LS = (1 − ε)·p + ε/K`` where the data's
    distribution is ``p`` (PyTorch's convention, ``K`` = ``log_probs.shape[-1]``), so
    ``p = (p_LS − ε/K) / (1 − ε)``; entries that fall below ``floor`` are set to ``floor`` and the result is
    renormalised. Liang et al. (2022) rectify the smoothed distribution before beam search in this spirit; this
    is our reading of the idea, not their code.

    >>> p_ls = torch.tensor([0.9 + 0.1 / 4, 0.1 / 4, 0.1 / 4, 0.1 / 4])      # LS optimum for onehot(0), ε = 0.1
    >>> [round(p, 4) for p in rectify_smoothing(p_ls.log(), 0.1).exp().tolist()]
    [1.0, 0.0, 0.0, 0.0]
    """
    check_tensor("log_probs", log_probs, floating=True, min_dim=1)
    epsilon = check_probability("epsilon", epsilon, high_open=True)
    floor = as_real("floor", floor)
    if not 0 < floor < 1:
        raise ValueError(f"floor must be in (0, 1), got {floor}")
    k = log_probs.shape[-1]
    p = (log_probs.exp() - epsilon / k).clamp_min(floor)
    return (p / p.sum(-1, keepdim=True)).log()


def _check_search_args(batch: Any, max_len: Any, bos: Any, eos: Any, pad: Any) -> tuple[int, int, int, int, int]:
    batch = as_int("batch", batch, minimum=1)
    max_len = as_int("max_len", max_len, minimum=1)
    bos, eos, pad = (as_int(n, v, minimum=0) for n, v in (("bos", bos), ("eos", eos), ("pad", pad)))
    if len({bos, eos, pad}) != 3:
        raise ValueError(f"bos, eos and pad must be three different ids, got {bos}, {eos}, {pad}")
    return batch, max_len, bos, eos, pad


def _step(step: StepFn, prefixes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    logp = step(prefixes, rows)
    if not isinstance(logp, torch.Tensor) or logp.dim() != 2 or logp.shape[0] != prefixes.shape[0]:
        raise ValueError(f"step(prefixes, rows) must return log-probabilities of shape ({prefixes.shape[0]}, V), "
                         f"got {getattr(logp, 'shape', type(logp).__name__)}")
    return logp.float()


@torch.no_grad()
def greedy_search(step: StepFn, batch: int, *, max_len: int, bos: int = BOS, eos: int = EOS,
                  pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding: the most probable next token at every step, until ``eos`` or ``max_len`` tokens.

    ``step(prefixes (N, t), rows (N,)) -> (N, V)`` log-probabilities of the next token after each prefix, where
    ``rows`` says which of the ``batch`` inputs each prefix belongs to. Returns ``(tokens (batch, L), scores
    (batch,))``: the generated tokens without ``<bos>``, ``eos`` included, ``pad`` after it; the score is the sum
    of the log-probabilities of the generated tokens.

    >>> table = torch.log(torch.tensor([[0.1, 0.1, 0.2, 0.6], [0.1, 0.1, 0.7, 0.1]]))   # ids: pad, bos, eos, "a"
    >>> step = lambda prefixes, rows: table[(prefixes.shape[1] > 1) * torch.ones(len(rows), dtype=torch.long)]
    >>> greedy_search(step, 1, max_len=5)[0]
    tensor([[3, 2]])
    """
    batch, max_len, bos, eos, pad = _check_search_args(batch, max_len, bos, eos, pad)
    rows = torch.arange(batch)
    seqs = torch.full((batch, 1), bos, dtype=torch.long)
    scores = torch.zeros(batch, dtype=torch.float64)
    done = torch.zeros(batch, dtype=torch.bool)
    for _ in range(max_len):
        live = (~done).nonzero().squeeze(1)           # only unfinished sentences are decoded
        logp = _step(step, seqs[live], rows[live])
        logp[:, pad] = -math.inf
        logp[:, bos] = -math.inf
        best_live, tok_live = logp.max(1)
        tok = torch.full((batch,), pad, dtype=torch.long).index_copy(0, live, tok_live)
        scores.index_add_(0, live, best_live.double())
        seqs = torch.cat([seqs, tok[:, None]], 1)
        done |= tok == eos
        if bool(done.all()):
            break
    return seqs[:, 1:], scores


@torch.no_grad()
def beam_search(step: StepFn, batch: int, *, beam_size: int, max_len: int, alpha: float = 0.0, bos: int = BOS,
                eos: int = EOS, pad: int = PAD, return_beams: bool = False
                ) -> tuple[torch.Tensor, ...]:
    """Beam search with ``beam_size`` hypotheses per input, optionally with GNMT's length penalty ``alpha``.

    Every step extends each unfinished hypothesis by every token, keeps the ``beam_size`` best candidates per
    input by ``score / lp(length)`` (:func:`length_penalty`; ``alpha = 0``: by the score, the sum of
    log-probabilities), and carries finished hypotheses (ended by ``eos``) along unchanged, competing with the
    unfinished ones. It stops when every hypothesis has finished or after ``max_len`` tokens. ``step`` is as in
    :func:`greedy_search`; with ``beam_size = 1`` and ``alpha = 0`` the result is greedy decoding's.

    Returns ``(tokens (batch, L), scores (batch,))`` of the best hypothesis per input (``scores``: the sum of its
    log-probabilities, without the penalty); with ``return_beams=True`` also every final hypothesis,
    ``(batch, beam_size, L)``, best first, and their scores ``(batch, beam_size)`` (``-inf`` for the slots of a
    beam wider than the number of possible hypotheses).

    >>> # "a" (id 3) is the greedy first token, but "b b" (id 4) is the more probable sentence
    >>> def step(prefixes, rows):
    ...     last = prefixes[:, -1]
    ...     p = torch.tensor([[0, 0, 0, .55, .45], [0, 0, .5, .25, .25], [0, 0, .05, 0, .95]])
    ...     return p[(last == 3) * 1 + (last == 4) * 2].log()
    >>> beam_search(step, 1, beam_size=2, max_len=4)[0], greedy_search(step, 1, max_len=4)[0]
    (tensor([[4, 4, 4, 4]]), tensor([[3, 2]]))
    """
    batch, max_len, bos, eos, pad = _check_search_args(batch, max_len, bos, eos, pad)
    k = as_int("beam_size", beam_size, minimum=1)
    alpha = as_real("alpha", alpha)
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    rows = torch.arange(batch).repeat_interleave(k)
    seqs = torch.full((batch * k, 1), bos, dtype=torch.long)
    raw = torch.full((batch, k), -math.inf, dtype=torch.float64)
    raw[:, 0] = 0.0                                   # one live hypothesis per input at the start
    done = torch.zeros(batch, k, dtype=torch.bool)
    lengths = torch.zeros(batch, k, dtype=torch.long)
    for _ in range(max_len):
        live = (~done).view(-1).nonzero().squeeze(1)  # only unfinished hypotheses are decoded
        live_logp = _step(step, seqs[live], rows[live]).double()
        v = live_logp.shape[1]
        live_logp[:, pad] = -math.inf
        live_logp[:, bos] = -math.inf
        finished_row = torch.full((v,), -math.inf, dtype=torch.float64)
        finished_row[pad] = 0.0                       # a finished hypothesis only "extends" by padding, at no cost
        logp = finished_row.repeat(batch * k, 1).index_copy(0, live, live_logp).view(batch, k, v)
        cand = raw[..., None] + logp                  # (batch, k, V)
        new_len = lengths + (~done).long()
        key = cand / length_penalty(new_len, alpha)[..., None] if alpha > 0 else cand
        _, idx = key.view(batch, -1).topk(k, dim=1)   # sorted, best first
        beam, tok = idx // v, idx % v
        raw = cand.view(batch, -1).gather(1, idx)
        lengths = new_len.gather(1, beam)
        done = done.gather(1, beam) | (tok == eos)
        seqs = seqs.view(batch, k, -1).gather(1, beam[..., None].expand(-1, -1, seqs.shape[1]))
        seqs = torch.cat([seqs, tok[..., None]], 2).view(batch * k, -1)
        if bool(done.all()):
            break
    beams = seqs.view(batch, k, -1)[:, :, 1:]
    if return_beams:
        return beams[:, 0], raw[:, 0], beams, raw
    return beams[:, 0], raw[:, 0]


def model_step(model: Seq2SeqTransformer, src: torch.Tensor, *,
               transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> StepFn:
    """The step function of ``model`` for :func:`greedy_search` / :func:`beam_search`: the source ``src`` ``(B, S)``
    is encoded once; ``step(prefixes, rows)`` decodes each prefix against its input's encoding and returns
    ``log_softmax`` of the last position (float32, CPU), passed through ``transform`` if given (e.g.
    ``functools.partial(rectify_smoothing, epsilon=0.1)``)."""
    model = _check_model(model)
    check_tensor("src", src, floating=False)
    if src.dim() != 2:
        raise ValueError(f"src must have shape (B, S), got {tuple(src.shape)}")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be callable (log-probs -> log-probs) or None, got {type(transform).__name__}")
    dev = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        memory, mask = model.encode(src.to(dev))

    def step(prefixes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.to(dev)
        logits = model.decode(prefixes.to(dev), memory[rows], mask[rows])[:, -1].float()
        logp = logits.log_softmax(-1).cpu()
        return transform(logp) if transform is not None else logp

    return step


@torch.no_grad()
def translate(model: Seq2SeqTransformer, src: torch.Tensor, *, beam_size: int = 1, alpha: float = 0.0,
              max_len: int = 32, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
              batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Translate ``src`` ``(N, S)``: greedy decoding for ``beam_size = 1`` (and ``alpha = 0``), else beam search.

    Works in chunks of ``batch_size`` sentences. Returns ``(tokens (N, L), scores (N,))`` as the searches do;
    turn tokens into text with ``task.tgt_vocab.decode(row)``.
    """
    check_tensor("src", src, floating=False)
    if src.dim() != 2:
        raise ValueError(f"src must have shape (N, S), got {tuple(src.shape)}")
    beam_size = as_int("beam_size", beam_size, minimum=1)
    batch_size = as_int("batch_size", batch_size, minimum=1)
    toks, scores = [], []
    for i in range(0, src.shape[0], batch_size):
        chunk = src[i:i + batch_size]
        step = model_step(model, chunk, transform=transform)
        if beam_size == 1 and alpha == 0:
            t, s = greedy_search(step, chunk.shape[0], max_len=max_len)
        else:
            t, s = beam_search(step, chunk.shape[0], beam_size=beam_size, max_len=max_len, alpha=alpha)
        toks.append(t)
        scores.append(s)
    width = max(t.shape[1] for t in toks)
    return torch.cat([F.pad(t, (0, width - t.shape[1]), value=PAD) for t in toks]), torch.cat(scores)


# --------------------------------------------------------------------------------------------- sentence metrics
def _check_strings(name: str, values: Any) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of str, got {type(values).__name__}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(v).__name__}")
    return values


def _references(references: Any, n: int) -> list[tuple[str, ...]]:
    """One tuple of references per hypothesis (a str means one reference)."""
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise TypeError(f"references must be a list (one entry per hypothesis), got {type(references).__name__}")
    if len(references) != n:
        raise ValueError(f"references must hold one entry per hypothesis ({n}), got {len(references)}")
    out = []
    for i, r in enumerate(references):
        refs = (r,) if isinstance(r, str) else tuple(r) if isinstance(r, Sequence) else None
        if not refs or not all(isinstance(x, str) for x in refs):
            raise TypeError(f"references[{i}] must be a str or a non-empty sequence of str, got {r!r}")
        out.append(refs)
    return out


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> dict[str, Any]:
    """Corpus BLEU with sacrebleu (Post 2018): ``{"bleu": score in [0, 100], "signature": str, "refs": int}``.

    ``references``: one str per hypothesis, or a sequence of right answers per hypothesis (multi-reference BLEU;
    sentences with fewer answers repeat their last one, which changes nothing: BLEU clips each n-gram's count by
    its largest count in any one reference). sacrebleu's defaults: 13a tokenisation, exponential smoothing,
    case-sensitive. BLEU counts n-grams up to n = 4 over the whole corpus: a corpus without any 4-gram
    (every sentence shorter than 4 words) scores 0 even when every hypothesis is right.

    >>> same = ["deux mille cent quatre vingt un", "mille trois cent douze"]
    >>> round(corpus_bleu(same, same)["bleu"], 6)
    100.0
    """
    import sacrebleu

    hyps = _check_strings("hypotheses", hypotheses)
    refs = _references(references, len(hyps))
    n_refs = max(len(r) for r in refs)
    streams = [[r[min(j, len(r) - 1)] for r in refs] for j in range(n_refs)]
    metric = sacrebleu.metrics.BLEU()
    score = metric.corpus_score(hyps, streams)
    return {"bleu": float(score.score), "signature": str(metric.get_signature()), "refs": n_refs}


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of hypotheses equal to their reference (after collapsing whitespace).

    >>> exact_match(["un", "deux"], ["un", "trois"])
    0.5
    """
    hyps = _check_strings("hypotheses", hypotheses)
    refs = _check_strings("references", references)
    if len(refs) != len(hyps):
        raise ValueError(f"hypotheses and references must have the same length, got {len(hyps)} and {len(refs)}")
    return sum(" ".join(h.split()) == " ".join(r.split()) for h, r in zip(hyps, refs)) / len(hyps)


def any_match(hypotheses: Sequence[str], variants: Sequence[Sequence[str]]) -> float:
    """Fraction of hypotheses equal to *any* of their right answers.

    >>> any_match(["septante", "un"], [("soixante dix", "septante"), ("deux",)])
    0.5
    """
    hyps = _check_strings("hypotheses", hypotheses)
    refs = _references(variants, len(hyps))
    return sum(" ".join(h.split()) in {" ".join(r.split()) for r in rs} for h, rs in zip(hyps, refs)) / len(hyps)


@torch.no_grad()
def branch_probabilities(model: Seq2SeqTransformer, task: NumberTask, split: TranslationSplit) -> list[dict]:
    """Where two right translations part ways, the probability the model gives each one's next token.

    For every sentence of ``split`` with two variants (a number ending in 70–99), the decoder reads ``<bos>`` and
    the words the variants share, and the next-token distribution is read off: ``p_france`` for the France
    variant's next word (e.g. *soixante*, *quatre*), ``p_other`` for the other variant's (*septante*, *huitante*,
    *nonante*). Returns one dict per such sentence: ``number``, ``tens`` (70, 80 or 90), ``p_france``,
    ``p_other``, ``share_france = p_france / (p_france + p_other)``, ``data_share_france`` (the frequency of the
    France-like form in the data: the summed frequency of the dialects that use it), ``reference`` (``"france"``
    or ``"other"``: the form of the sentence's reference) and ``nll_reference`` (``-log p`` of the reference's
    word there: the NLL of this token under teacher forcing).
    """
    model = _check_model(model)
    if not isinstance(task, NumberTask) or not isinstance(split, TranslationSplit):
        raise TypeError("task must be a NumberTask and split one of its TranslationSplits")
    items = [(i, v) for i, v in enumerate(split.variants) if len(v) == 2]
    if not items:
        return []
    prefixes, nexts, meta = [], [], []
    for i, (france, other) in items:
        a, b = france.split(), other.split()
        j = next(j for j in range(min(len(a), len(b)) + 1) if j == min(len(a), len(b)) or a[j] != b[j])
        prefixes.append([BOS] + task.tgt_vocab.encode(" ".join(a[:j]), eos=False))
        nexts.append((task.tgt_vocab.index[a[j]], task.tgt_vocab.index[b[j]]))
        number = split.numbers[i]
        users = [d for d in DIALECTS if french_words(number, d).split()[:j + 1] == a[:j + 1]]
        meta.append((number, number % 100 // 10 * 10, sum(task.dialect_probs[d] for d in users),
                     "france" if split.targets[i].split() == a else "other"))
    src = split.src[[i for i, _ in items]]
    lengths = torch.tensor([len(p) for p in prefixes])
    tgt_in = pad_sequences(prefixes)
    dev = next(model.parameters()).device
    model.eval()
    logits = model(src.to(dev), tgt_in.to(dev)).float().cpu()
    probs = logits[torch.arange(len(items)), lengths - 1].softmax(-1)
    out = []
    for r, ((fr, ot), (number, tens, data_share, ref)) in enumerate(zip(nexts, meta)):
        pf, po = float(probs[r, fr]), float(probs[r, ot])
        out.append({"number": number, "tens": tens, "p_france": pf, "p_other": po,
                    "share_france": pf / (pf + po), "data_share_france": data_share, "reference": ref,
                    "nll_reference": -math.log(max(pf if ref == "france" else po, 1e-300))})
    return out


def variant_choices(hypotheses: Sequence[str], variants: Sequence[Sequence[str]]) -> list[str | None]:
    """For sentences with two right answers (France's and the other dialects'), which one each hypothesis chose.

    ``variants[i]`` as in :attr:`TranslationSplit.variants` (France's form first). Returns ``"france"``,
    ``"other"``, ``"wrong"`` (neither) per sentence, or ``None`` where there is only one right answer.

    >>> variant_choices(["septante", "soixante dix", "deux", "un"], [("soixante dix", "septante")] * 3 + [("un",)])
    ['other', 'france', 'wrong', None]
    """
    hyps = _check_strings("hypotheses", hypotheses)
    refs = _references(variants, len(hyps))
    out: list[str | None] = []
    for h, rs in zip(hyps, refs):
        h = " ".join(h.split())
        if len(rs) < 2:
            out.append(None)
        else:
            out.append("france" if h == rs[0] else "other" if h in rs[1:] else "wrong")
    return out


def min_token_cost(epsilon: float, num_classes: int) -> float:
    """``-log(1 - ε + ε/K)``: the least log-probability a fully label-smoothed model gives up per token.

    A model at the optimum of the smoothed loss never predicts a token with more than ``1 - ε + ε/K``, so every
    token of a hypothesis lowers its score by at least this much: an implicit length penalty (Liang et al. 2022).

    >>> round(min_token_cost(0.1, 10), 4)
    0.0943
    """
    epsilon = check_probability("epsilon", epsilon)
    k = as_int("num_classes", num_classes, minimum=2)
    return -math.log(1 - epsilon + epsilon / k)


def length_bound(epsilon: float, num_classes: int) -> float:
    """The longest hypothesis an exact search can return from a fully label-smoothed model: ``log(ε/K) / log(1 − ε + ε/K)``.

    Ending at once scores at least ``log(ε/K)`` (every token, ``<eos>`` included, keeps ``ε/K``); ``L`` tokens
    score at most ``L·log(1 − ε + ε/K)``. So no hypothesis longer than the ratio can win, whatever the input
    (Liang et al. 2022's bound, in our notation). ``inf`` for ``ε = 0``.

    >>> round(length_bound(0.1, 37000), 1)
    121.7
    """
    epsilon = check_probability("epsilon", epsilon)
    k = as_int("num_classes", num_classes, minimum=2)
    if epsilon == 0:
        return math.inf
    return math.log(epsilon / k) / math.log(1 - epsilon + epsilon / k)
