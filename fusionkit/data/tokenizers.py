"""Tokenizer resolution and a cheap identity (name + vocabulary hash) for cache keys."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

VOCAB_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tokenizer_identity(tokenizer) -> str:
    """``name:sha256(vocab)`` without loading the tokenizer when it is a local directory (the default)."""
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        from fusionkit.encoders.bert import resolve_text_model

        path = Path(resolve_text_model(tokenizer))
        files = [path / f for f in VOCAB_FILES if (path / f).is_file()]
        if files:
            h = hashlib.sha256()
            for f in files:
                h.update(f.name.encode())
                h.update(f.read_bytes())
            return f"{path.name}:{h.hexdigest()[:16]}"
        tokenizer = get_tokenizer(tokenizer)
    vocab = tokenizer.get_vocab()
    settings = [type(tokenizer).__name__, getattr(tokenizer, "do_lower_case", None)]
    h = hashlib.sha256(json.dumps([settings, sorted(vocab.items())]).encode()).hexdigest()[:16]
    name = Path(str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__))).name
    return f"{name}:{h}"


def get_tokenizer(tokenizer):
    """A tokenizer object from ``None`` (bundled MiniLM), a name/path, or an object (returned as is)."""
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        return _load_tokenizer(None if tokenizer is None else str(tokenizer))
    for attr in ("tokenize", "convert_tokens_to_ids", "cls_token_id", "sep_token_id"):
        if not hasattr(tokenizer, attr):
            raise ValueError(f"tokenizer object {type(tokenizer).__name__} lacks {attr!r}; pass a Hugging Face "
                             f"BERT-family tokenizer, a model name/path, or None for the bundled MiniLM")
    return tokenizer


@lru_cache(maxsize=4)
def _load_tokenizer(name: str | None):
    from fusionkit.encoders.bert import load_tokenizer

    return load_tokenizer(name)
