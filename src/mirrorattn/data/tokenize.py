"""Sub-word tokenisation with the ``tokenizers`` library: train, cache on disk, encode to tensors.

The vocabulary is trained on the texts it is given (pass the *training* split only), never
downloaded from a hub. The special tokens have fixed ids: ``[PAD]`` = :data:`PAD_ID` = 0,
``[UNK]`` = :data:`UNK_ID` = 1, ``[CLS]`` = :data:`CLS_ID` = 2, ``[SEP]`` = :data:`SEP_ID` = 3.
Every encoded sequence starts with ``[CLS]`` (the classifier's pooling position).

Normalisation (part of the saved tokenizer, so training and encoding agree): HTML line breaks
(``<br />``, ``<br>``, any case) become spaces, then BERT's normaliser (control characters
removed, accents stripped, optionally lower-cased) and BERT's pre-tokeniser (split on
whitespace and punctuation).

Trained tokenizers are cached as JSON in ``cache_dir(cache_dir, "tokenizers")`` under a name
holding a hash of the texts and the settings, so a second :func:`build_tokenizer` call with the
same inputs loads the file instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from mirrorattn.checks import check_choice, check_int
from mirrorattn.data.paths import cache_dir as _cache_dir
from mirrorattn.io import atomic_path

PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN)
PAD_ID, UNK_ID, CLS_ID, SEP_ID = 0, 1, 2, 3
#: Regular expression of the HTML line breaks removed before training and encoding.
HTML_BREAK_PATTERN = r"(?i)<\s*br\s*/?\s*>"
TOKENIZER_KINDS = ("wordpiece", "bpe")
# Bump when the tokenizer pipeline changes, so that old cache files are not reused.
# 2: deterministic training (the continuing-subword tokens seeded in sorted order, see _train_tokenizer)
_PIPELINE_VERSION = 2


@dataclass
class EncodedTexts:
    """Token ids and padding mask of a batch of texts.

    ``ids``: (N, L) int64, ``[CLS]`` at position 0, padded at the end with :data:`PAD_ID`.
    ``mask``: (N, L) bool, True for real tokens (including ``[CLS]``), False for padding.
    """

    ids: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) int64 number of real tokens per sequence."""
        return self.mask.sum(dim=1)


def _normalizer(lowercase: bool) -> normalizers.Normalizer:
    return normalizers.Sequence(
        [
            normalizers.Replace(Regex(HTML_BREAK_PATTERN), " "),
            normalizers.BertNormalizer(
                clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=lowercase
            ),
        ]
    )


def _new_tokenizer(kind: str, lowercase: bool) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer of ``kind`` and the matching trainer (vocab size set by the caller)."""
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, continuing_subword_prefix="##"))
        trainer_cls = trainers.WordPieceTrainer
    else:
        tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN, continuing_subword_prefix="##"))
        trainer_cls = trainers.BpeTrainer
    tok.normalizer = _normalizer(lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok, trainer_cls


def _continuing_subwords(tok: Tokenizer, texts: Sequence[str]) -> list[str]:
    """"##" + c for every character c that follows another within a pre-tokenised word of ``texts``: the
    continuing-subword tokens the trainer creates, sorted."""
    norm, pre = tok.normalizer, tok.pre_tokenizer
    chars: set[str] = set()
    for text in texts:
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            chars.update(word[1:])
    return ["##" + c for c in sorted(chars)]


def _train_tokenizer(
    texts: Sequence[str], kind: str, vocab_size: int, lowercase: bool, min_frequency: int
) -> Tokenizer:
    """Train a fresh tokenizer on ``texts`` (no caching), the same vocabulary on every run. Separate so tests can
    watch it.

    The ``tokenizers`` trainers (BPE and WordPiece, version 0.2x) give the continuing-subword tokens ("##e") their
    ids in the iteration order of a randomly seeded hash map, and break ties between equally frequent merges by
    those ids, so two trainings on the same texts can learn different vocabularies (huggingface/tokenizers issue
    #1794). Here those tokens are passed to the trainer up front, in sorted order, as special tokens - the ids
    no longer depend on the hash map - and are removed from the added tokens afterwards, so that "##e" in a text is
    not matched as a token of its own; they stay in the vocabulary, where the trainer puts them anyway.
    """
    tok, trainer_cls = _new_tokenizer(kind, lowercase)
    subwords = _continuing_subwords(tok, texts)
    trainer = trainer_cls(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS) + subwords,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    state = json.loads(tok.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] in SPECIAL_TOKENS]
    tok = Tokenizer.from_str(json.dumps(state))
    for token, want in zip(SPECIAL_TOKENS, (PAD_ID, UNK_ID, CLS_ID, SEP_ID)):
        got = tok.token_to_id(token)
        if got != want:  # pragma: no cover - guards against a change in the tokenizers library
            raise RuntimeError(f"special token {token} got id {got}, expected {want}")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS_TOKEN} $A",
        pair=f"{CLS_TOKEN} $A {SEP_TOKEN} $B",
        special_tokens=[(CLS_TOKEN, CLS_ID), (SEP_TOKEN, SEP_ID)],
    )
    return tok


def _hash_texts(texts: Sequence[str], h: Any) -> str:
    """Feed ``texts`` (length-prefixed, so boundaries count) into ``h``; return its hex digest."""
    for t in texts:
        b = t.encode("utf-8", errors="surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def tokenizer_cache_key(
    texts: Sequence[str], *, kind: str, vocab_size: int, lowercase: bool, min_frequency: int
) -> str:
    """Hex key (24 chars) of the texts and the settings; the tokenizer's cache file name uses it."""
    settings = {
        "kind": kind,
        "vocab_size": vocab_size,
        "lowercase": lowercase,
        "min_frequency": min_frequency,
        "pipeline": _PIPELINE_VERSION,
        "n": len(texts),
    }
    return _hash_texts(texts, hashlib.sha256(json.dumps(settings, sort_keys=True).encode()))[:24]


def build_tokenizer(
    texts: Sequence[str],
    *,
    kind: Literal["wordpiece", "bpe"] = "wordpiece",
    vocab_size: int = 16000,
    lowercase: bool = True,
    min_frequency: int = 2,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Tokenizer:
    """Train (or load from the cache) a WordPiece or BPE tokenizer on ``texts``.

    Pass the training split only: the vocabulary is learned from exactly these texts.
    ``vocab_size`` is an upper bound (a small corpus yields fewer tokens); ``min_frequency`` is the
    fewest occurrences a merge/token needs. The result has no truncation or padding enabled;
    :func:`encode_texts` sets them per call. Cached as JSON in ``cache_dir(cache_dir, "tokenizers")``
    (``use_cache=False`` always trains and writes nothing).
    """
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; use one of {', '.join(TOKENIZER_KINDS)}")
    if int(vocab_size) <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be larger than {len(SPECIAL_TOKENS)} (the special tokens), got {vocab_size}")
    check_int(min_frequency, "min_frequency")
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    texts = list(texts)
    if not texts:
        raise ValueError("cannot train a tokenizer on zero texts")
    settings = dict(kind=kind, vocab_size=int(vocab_size), lowercase=bool(lowercase), min_frequency=int(min_frequency))
    path: Path | None = None
    if use_cache:
        key = tokenizer_cache_key(texts, **settings)
        path = _cache_dir(cache_dir, "tokenizers") / f"{kind}-{int(vocab_size)}-{key}.json"
        if path.is_file():
            try:
                return Tokenizer.from_file(str(path))
            except Exception:  # a damaged cache file: train again and overwrite it
                pass
    tok = _train_tokenizer(texts, **settings)
    if path is not None:
        with atomic_path(path, suffix=".json") as tmp:
            tmp.write_text(tok.to_str(), encoding="utf-8")
    return tok


def encode_texts(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    max_length: int,
    *,
    pad_to: Literal["max_length", "longest"] = "max_length",
    cache: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> EncodedTexts:
    """Encode ``texts`` to (N, L) ids and mask, ``[CLS]`` first, truncated to ``max_length`` tokens.

    ``max_length`` counts ``[CLS]``; longer texts keep their first ``max_length - 1`` sub-words.
    ``pad_to="max_length"`` gives L = ``max_length``; ``"longest"`` pads only to the longest
    sequence of this batch (L <= ``max_length``). Special-token strings inside a text (a literal
    ``"[CLS]"``) are encoded as plain text. The tokenizer's own settings are restored afterwards.
    ``cache=True`` stores the result in ``cache_dir(cache_dir, "encoded")`` keyed by a hash of the
    tokenizer, the texts and the settings (encoding IMDb's 25k reviews takes tens of seconds on two
    cores; loading them back a fraction of a second).
    """
    check_int(max_length, "max_length ([CLS] plus at least one token)", 2)
    check_choice(pad_to, "pad_to", ("max_length", "longest"))
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    texts = list(texts)
    max_length = int(max_length)
    if not texts:
        width = max_length if pad_to == "max_length" else 0
        return EncodedTexts(torch.zeros(0, width, dtype=torch.int64), torch.zeros(0, width, dtype=torch.bool))
    path = None
    if cache:
        h = hashlib.sha256(tokenizer.to_str().encode("utf-8"))
        h.update(f"{max_length}|{pad_to}|{_PIPELINE_VERSION}".encode())
        path = _cache_dir(cache_dir, "encoded") / f"{_hash_texts(texts, h)[:24]}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    ids = torch.from_numpy(z["ids"].astype(np.int64))
                    lengths = torch.from_numpy(z["lengths"].astype(np.int64))
                return EncodedTexts(ids, torch.arange(ids.shape[1]) < lengths[:, None])
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                pass  # a damaged cache file: encode again
    old_trunc, old_pad, old_special = tokenizer.truncation, tokenizer.padding, tokenizer.encode_special_tokens
    try:
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding(
            pad_id=PAD_ID, pad_token=PAD_TOKEN, length=max_length if pad_to == "max_length" else None
        )
        tokenizer.encode_special_tokens = True
        encodings = tokenizer.encode_batch(texts)
    finally:
        _restore(tokenizer, old_trunc, old_pad)
        tokenizer.encode_special_tokens = old_special
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool)
    if path is not None:
        small = np.uint16 if tokenizer.get_vocab_size() <= 65536 else np.int32
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, ids=ids.numpy().astype(small), lengths=mask.sum(1).numpy().astype(np.int32))
    return EncodedTexts(ids=ids, mask=mask)


def _restore(tokenizer: Tokenizer, trunc: dict | None, pad: dict | None) -> None:
    if trunc is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(
            max_length=trunc["max_length"],
            stride=trunc["stride"],
            strategy=trunc["strategy"],
            direction=trunc["direction"],
        )
    if pad is None:
        tokenizer.no_padding()
    else:
        tokenizer.enable_padding(
            direction=pad["direction"],
            pad_id=pad["pad_id"],
            pad_type_id=pad["pad_type_id"],
            pad_token=pad["pad_token"],
            length=pad["length"],
            pad_to_multiple_of=pad["pad_to_multiple_of"],
        )


__all__ = [
    "CLS_ID",
    "CLS_TOKEN",
    "HTML_BREAK_PATTERN",
    "PAD_ID",
    "PAD_TOKEN",
    "SEP_ID",
    "SEP_TOKEN",
    "SPECIAL_TOKENS",
    "TOKENIZER_KINDS",
    "UNK_ID",
    "UNK_TOKEN",
    "EncodedTexts",
    "build_tokenizer",
    "encode_texts",
    "tokenizer_cache_key",
]
