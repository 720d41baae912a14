"""Tokenizer training gives the same vocabulary on every run (huggingface/tokenizers issue #1794 worked around).

Without the workaround, WordPiece training on these sentences learned a different vocabulary in each of five
fresh processes (the continuing-subword tokens' ids follow a randomly seeded hash map and break merge ties).
"""

from __future__ import annotations

import zipfile

import pytest

from mirrorattn.data import text_sources, tokenize


def _sentences(n: int) -> list[str]:
    with zipfile.ZipFile(text_sources.EMBEDDED_POLARITY) as z:
        names = sorted(m for m in z.namelist() if "rt-polarity" in m)
        lines = [line for m in names for line in z.read(m).decode("latin-1").splitlines()]
    return lines[: n // 2] + lines[-n // 2:]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_training_twice_gives_the_same_tokenizer(kind: str) -> None:
    texts = _sentences(3000)
    runs = [tokenize._train_tokenizer(texts, kind, 800, True, 2).to_str() for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_continuing_subwords_are_vocabulary_not_added_tokens() -> None:
    texts = _sentences(1000)
    tok = tokenize._train_tokenizer(texts, "wordpiece", 600, True, 2)
    vocab = tok.get_vocab()
    seeded = tokenize._continuing_subwords(tok, texts)
    assert seeded and all(s in vocab for s in seeded)  # the trainer's own continuing tokens, all kept
    assert {t.content for t in tok.get_added_tokens_decoder().values()} == set(tokenize.SPECIAL_TOKENS)
    # "##e" written in a text is split like any punctuation, not matched as the token "##e"
    tokens = tok.encode("##e film").tokens
    assert "##e" in vocab and "##e" not in tokens and tokens[-1] == "film"
    assert [tok.token_to_id(t) for t in tokenize.SPECIAL_TOKENS] == [tokenize.PAD_ID, tokenize.UNK_ID,
                                                                       tokenize.CLS_ID, tokenize.SEP_ID]
    # every continuing single character the unseeded trainer would create is among the seeded ones
    word_inner = {c for t in texts for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(t))
                  for c in w[1:]}
    assert {s[2:] for s in seeded} == word_inner
