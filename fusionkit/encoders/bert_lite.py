"""A BERT encoder and tokenizer for loading trained models without importing ``transformers``.

:func:`fusionkit.load` rebuilds a trained model only to read its weights into it, so the text encoder's code is
all it needs from ``transformers``; importing ``transformers`` and its ``modeling_bert`` takes seconds, reading
the weights a few milliseconds. :class:`LiteBertModel` is ``transformers``' ``BertModel`` (without pooler) written
in plain torch, with the same module and parameter names, so a checkpoint's state dict loads into it unchanged,
and the same computation: embeddings + LayerNorm, scaled dot-product self-attention over the real tokens (the
boolean key mask ``BertModel`` hands to SDPA, no mask when nothing is padded), the configured activation, and
every hidden state. :class:`LiteTokenizer` builds the WordPiece tokenizer that ``transformers``' ``BertTokenizer``
builds, with the ``tokenizers`` library directly.

Both are used only by :func:`fusionkit.load`, and only for configurations they reproduce exactly
(:func:`unsupported`, :func:`lite_tokenizer`); any other goes through ``transformers`` (said in a debug log line
of ``fusionkit.inference``). Training always builds ``transformers``' ``BertModel``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

# BertConfig's defaults, for keys a checkpoint's config.json leaves out
BERT_DEFAULTS = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
    "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0, "is_decoder": False,
    "add_cross_attention": False, "chunk_size_feed_forward": 0, "position_embedding_type": "absolute",
}
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class LiteBertConfig:
    """A BERT config read from a dict (``config.json``, or the ``bert_config`` of a ``model.json``): its keys as
    attributes, with ``BertConfig``'s defaults for the missing ones."""

    def __init__(self, values: dict) -> None:
        self._values = {**BERT_DEFAULTS, **values}
        self.__dict__.update(self._values)

    @classmethod
    def from_dir(cls, path: str | Path) -> "LiteBertConfig":
        return cls(json.loads((Path(path) / "config.json").read_text()))

    def to_dict(self) -> dict:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"LiteBertConfig({self._values!r})"


def unsupported(config: dict | LiteBertConfig) -> str | None:
    """Why :class:`LiteBertModel` does not reproduce this configuration, or ``None`` when it does."""
    c = {**BERT_DEFAULTS, **(config.to_dict() if isinstance(config, LiteBertConfig) else config)}
    if c.get("model_type") != "bert":
        return f"model_type {c.get('model_type')!r} is not 'bert'"
    if c["is_decoder"] or c["add_cross_attention"]:
        return "a decoder / cross-attention configuration"
    if c["position_embedding_type"] != "absolute":
        return f"position_embedding_type {c['position_embedding_type']!r}"
    if c["hidden_act"] not in ACTIVATIONS:
        return f"hidden_act {c['hidden_act']!r} (implemented: {', '.join(ACTIVATIONS)})"
    if c.get("_attn_implementation", c.get("attn_implementation")) not in (None, "sdpa"):
        return "an attention implementation other than sdpa"
    if c["hidden_size"] % c["num_attention_heads"]:
        return "hidden_size not a multiple of num_attention_heads"
    dtype = c.get("dtype") or c.get("torch_dtype")
    if dtype not in (None, "float32"):
        return f"dtype {dtype!r} (LiteBertModel computes in float32, transformers in the config's dtype)"
    if c["chunk_size_feed_forward"]:
        return "a chunked feed-forward (chunk_size_feed_forward), whose rounding differs"
    return None


class LiteBertOutput(NamedTuple):
    hidden_states: tuple
    last_hidden_state: torch.Tensor


class _Linear(nn.Linear):
    def reset_parameters(self) -> None:
        """No initialisation: every weight is read from a checkpoint."""


class _Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        """No initialisation: every weight is read from a checkpoint."""


class _Embeddings(nn.Module):
    def __init__(self, c: LiteBertConfig) -> None:
        super().__init__()
        self.word_embeddings = _Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = _Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = _Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        seq_length = input_ids.shape[1]
        position_ids = torch.arange(seq_length, device=input_ids.device)[None, :]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class _SelfAttention(nn.Module):
    def __init__(self, c: LiteBertConfig) -> None:
        super().__init__()
        self.head_size = c.hidden_size // c.num_attention_heads
        self.query = _Linear(c.hidden_size, c.hidden_size)
        self.key = _Linear(c.hidden_size, c.hidden_size)
        self.value = _Linear(c.hidden_size, c.hidden_size)
        self.dropout = nn.Dropout(c.attention_probs_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        shape = (*x.shape[:-1], -1, self.head_size)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0,
                                             scale=self.head_size ** -0.5)
        return out.transpose(1, 2).contiguous().reshape(*x.shape[:-1], -1).contiguous()


class _Residual(nn.Module):
    """dense → dropout → LayerNorm(· + input): BertSelfOutput and BertOutput."""

    def __init__(self, n_in: int, c: LiteBertConfig) -> None:
        super().__init__()
        self.dense = _Linear(n_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, c: LiteBertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _Residual(c.hidden_size, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, c: LiteBertConfig) -> None:
        super().__init__()
        self.dense = _Linear(c.hidden_size, c.intermediate_size)
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, c: LiteBertConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _Residual(c.intermediate_size, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attended = self.attention(x, mask)
        return self.output(self.intermediate(attended), attended)


class _Encoder(nn.Module):
    def __init__(self, c: LiteBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class LiteBertModel(nn.Module):
    """``BertModel(config, add_pooling_layer=False)`` in plain torch (same state-dict names and shapes, same
    forward); its parameters are allocated uninitialised, to be filled by ``load_state_dict``."""

    def __init__(self, config: LiteBertConfig) -> None:
        super().__init__()
        why = unsupported(config)
        if why is not None:
            raise ValueError(f"LiteBertModel does not reproduce {why}; build transformers' BertModel instead")
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = True,
        return_dict: bool = True,
    ) -> LiteBertOutput:
        """``input_ids`` / ``attention_mask`` / ``token_type_ids``: ``(B, T)``; returns ``num_layers + 1`` hidden
        states (each the output of its module, after any forward hook, as ``BertModel`` records them)."""
        # as transformers' bidirectional SDPA mask: (B, 1, T, T) booleans (True = attend), none when all are real
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            keys = attention_mask.bool()[:, None, None, :]
            mask = keys.expand(-1, 1, input_ids.shape[1], -1)
        hidden = self.embeddings(input_ids, token_type_ids)
        states = [hidden]
        for layer in self.encoder.layer:
            hidden = layer(hidden, mask)
            states.append(hidden)
        return LiteBertOutput(hidden_states=tuple(states), last_hidden_state=hidden)


# -- tokenizer ----------------------------------------------------------------------------------------------------
SPECIAL = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
           "mask_token": "[MASK]"}
# tokenizer_config.json keys that do not change how BertTokenizer splits words (padding, truncation and decoding
# settings included: word_pieces calls it without padding or truncation); the ones read are checked below
NEUTRAL_KEYS = {"do_lower_case", "tokenize_chinese_chars", "strip_accents", "tokenizer_class", "name_or_path",
                "model_max_length", "do_basic_tokenize", "never_split", "clean_up_tokenization_spaces",
                "special_tokens_map_file", "padding_side", "truncation_side", "model_input_names", "backend",
                "is_local", "local_files_only", "max_length", "pad_to_multiple_of", "pad_token_type_id", "stride",
                "truncation_strategy", "extra_special_tokens", "added_tokens_decoder", *SPECIAL}


class _Encoded:
    """What ``fusionkit.data.dataset.word_pieces`` reads of a ``BatchEncoding``: ``["input_ids"]`` and
    ``word_ids(i)``."""

    def __init__(self, encodings: list) -> None:
        self._encodings = encodings
        self._ids = [e.ids for e in encodings]

    def __getitem__(self, key: str):
        if key != "input_ids":
            raise KeyError(key)
        return self._ids

    def word_ids(self, i: int) -> list:
        return self._encodings[i].word_ids


class LiteTokenizer:
    """The WordPiece tokenizer ``transformers``' ``BertTokenizer`` builds from the same files (same vocabulary,
    normaliser settings and special tokens), without its padding or truncation; see :func:`lite_tokenizer`."""

    is_fast = True

    def __init__(self, backend, special: dict, name_or_path: str, do_lower_case: bool) -> None:
        self.backend_tokenizer = backend
        self.name_or_path = name_or_path
        self.do_lower_case = do_lower_case
        for attr, token in special.items():
            setattr(self, attr, token)
            setattr(self, f"{attr}_id", backend.token_to_id(token))

    def __call__(self, words: list, *, is_split_into_words: bool = True, add_special_tokens: bool = False):
        if not is_split_into_words or add_special_tokens:
            raise ValueError("LiteTokenizer encodes word lists (is_split_into_words=True) without special tokens")
        return _Encoded(self.backend_tokenizer.encode_batch([list(w) for w in words], is_pretokenized=True,
                                                            add_special_tokens=False))

    def tokenize(self, text: str) -> list[str]:
        return self.backend_tokenizer.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [self.backend_tokenizer.token_to_id(t) for t in tokens]

    def get_vocab(self) -> dict:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)


def _tokenizer_unsupported(settings: dict, path: Path) -> str | None:
    if settings.get("tokenizer_class") not in (None, "BertTokenizer", "BertTokenizerFast"):
        return f"tokenizer_class {settings.get('tokenizer_class')!r}"
    other = sorted(set(settings) - NEUTRAL_KEYS)
    if other:
        return f"tokenizer_config.json sets {', '.join(other)}"
    if settings.get("never_split") or settings.get("do_basic_tokenize", True) is not True:
        return "never_split / do_basic_tokenize settings"
    if settings.get("backend", "tokenizers") != "tokenizers" or settings.get("extra_special_tokens"):
        return "another backend or extra special tokens"
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.txt").is_file():
        return "neither tokenizer.json nor vocab.txt"
    return None


def lite_tokenizer(path: str | Path) -> tuple[LiteTokenizer | None, str | None]:
    """``(tokenizer, None)`` for a BERT tokenizer directory it reproduces, else ``(None, why)``."""
    path = Path(path)
    try:
        settings = json.loads((path / "tokenizer_config.json").read_text())
        special_map = json.loads((path / "special_tokens_map.json").read_text()) \
            if (path / "special_tokens_map.json").is_file() else {}
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        return None, f"cannot read the tokenizer settings ({e})"
    if config.get("model_type") != "bert":
        return None, f"model_type {config.get('model_type')!r}"
    why = _tokenizer_unsupported(settings, path)
    if why is None and any(not isinstance(v, str) for v in special_map.values()) \
            or any(not isinstance(settings.get(k), (str, type(None))) for k in SPECIAL):
        why = why or "special tokens with options"
    if why is None and (not all(isinstance(settings.get(k, True), bool)
                                for k in ("do_lower_case", "tokenize_chinese_chars"))
                        or not isinstance(settings.get("strip_accents"), (bool, type(None)))):
        why = "non-boolean normaliser settings"
    if why is not None:
        return None, why
    from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    # special_tokens_map.json overrides tokenizer_config.json, as in transformers
    special = {k: str(special_map.get(k) or settings.get(k) or v) for k, v in SPECIAL.items()}
    # as BertTokenizer.__init__ builds its backend: the vocabulary (tokenizer.json's, else vocab.txt), WordPiece
    # with its defaults, the normaliser from tokenizer_config.json, BERT pre-tokenisation, the special tokens
    if (path / "tokenizer.json").is_file():
        model = json.loads((path / "tokenizer.json").read_text()).get("model", {})
        if model.get("type") != "WordPiece":
            return None, f"a {model.get('type')!r} tokenizer.json"
        vocab = model["vocab"]
    else:
        lines = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")
        vocab = {token: i for i, token in enumerate(lines[:-1] if lines and lines[-1] == "" else lines)}
    plain = {"special": True, "lstrip": False, "rstrip": False, "single_word": False, "normalized": False}
    for index, token in (settings.get("added_tokens_decoder") or {}).items():
        if not isinstance(token, dict) or token.get("content") not in special.values() \
                or vocab.get(token["content"]) != int(index) or any(token.get(k, v) != v for k, v in plain.items()):
            return None, f"added token {token!r} is not one of the plain special tokens"
    backend = Tokenizer(WordPiece(vocab, unk_token=special["unk_token"]))
    do_lower_case = settings.get("do_lower_case", True)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
        strip_accents=settings.get("strip_accents"), lowercase=do_lower_case)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.add_special_tokens([AddedToken(special[k], special=True)
                                for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")])
    return LiteTokenizer(backend, special, str(path), do_lower_case), None
