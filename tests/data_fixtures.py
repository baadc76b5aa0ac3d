"""Fixture helpers for the data tests: a tiny WordPiece tokenizer and writers for every supported format."""
from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "loved", "it", "the", "movie", "was", "bad",
              "wonderful", "##ly", "good", "not", "very", "boring", "great", "film", "a", "fun", "##s"]


def tiny_tokenizer(tmp_path: Path):
    """A BERT WordPiece tokenizer over :data:`TINY_VOCAB` (ids = positions), built from a local vocab file."""
    from transformers import BertTokenizerFast

    del tmp_path  # built in memory
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(TINY_VOCAB)}, do_lower_case=True)


class WordByWordTokenizer:
    """Hides ``is_fast`` so the loader tokenizes word by word (MAG-BERT's loop) instead of in one call."""

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self.cls_token_id, self.sep_token_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.pad_token_id = tokenizer.pad_token_id

    def tokenize(self, text):
        return self._tok.tokenize(text)

    def convert_tokens_to_ids(self, tokens):
        return self._tok.convert_tokens_to_ids(tokens)

    def get_vocab(self):
        return self._tok.get_vocab()


def vocab_id(token: str) -> int:
    return TINY_VOCAB.index(token)
