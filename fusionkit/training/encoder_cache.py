"""Hidden-state cache for a frozen text encoder: each sample is encoded once, later epochs cost only the fusion.

A ``frozen`` :class:`~fusionkit.encoders.bert.BertEncoder` without an injection module is a fixed function of the
word-piece ids (it always runs in eval mode, so no dropout and no random numbers are drawn), so its hidden states
can be stored per sample and reused. :func:`attach_encoder_cache` installs a :class:`HiddenStateCache` on
``model.encoder``:

* entries are keyed by the sample id (``batch.ids``, captured by a forward pre-hook on the model) and checked
  against the sample's word-piece and token-type ids, so a reused id with other text is encoded again;
* only the hidden states the model reads are kept (``model.encoder_layers_used``, hidden-state indices with
  0 = embeddings; every layer when the model does not declare them), at each sample's real length;
* a batch whose samples are all cached is assembled from the entries (padded positions are zero, where the
  encoder would give values that every model masks out); otherwise the encoder runs on the batch and its
  samples are stored.

Predictions are those of the uncached model up to float rounding (the hidden states of a sample do not depend on
how it was padded); ``tests/test_speed.py`` checks cached against uncached frozen training.
"""
from __future__ import annotations

import torch
from torch import nn

from fusionkit.encoders.bert import BertEncoder, EncoderOutput


class UncachedLayerError(LookupError):
    """A model read a hidden state that its ``encoder_layers_used`` does not declare."""


class CachedHiddenStates(tuple):
    """``hidden_states`` of a cached encoder output: ``None`` at the layers that are not cached."""

    def __getitem__(self, index):
        value = super().__getitem__(index)
        if value is None:
            raise UncachedLayerError(
                f"hidden state {index} is not in the frozen-encoder cache: add it to the model's "
                f"encoder_layers_used, or train with cache_encoder=False")
        return value


class HiddenStateCache:
    """Per-sample hidden states of one frozen encoder (see the module docstring)."""

    def __init__(self, *, num_layers: int, layers=None) -> None:
        layers = range(num_layers + 1) if layers is None else layers
        self.layers = tuple(sorted({int(layer) % (num_layers + 1) for layer in layers}))
        self.num_layers = num_layers
        self.entries: dict = {}  # id -> (input_ids (L,), token_type_ids (L,), states (len(layers), L, H))
        self.ids: list | None = None  # ids of the batch being processed
        self.hits = 0
        self.misses = 0

    def capture_ids(self, module: nn.Module, args) -> None:
        """Forward pre-hook of the model: remember the ids of the batch it is called with."""
        batch = args[0] if args else None
        self.ids = list(getattr(batch, "ids", None) or []) or None

    def _lookup(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, lengths: list) -> list | None:
        if self.ids is None or len(self.ids) != len(lengths):
            return None
        found = []
        for i, (key, length) in enumerate(zip(self.ids, lengths)):
            entry = self.entries.get(key)
            if (entry is None or entry[0].shape[0] != length or not torch.equal(entry[0], input_ids[i, :length])
                    or not torch.equal(entry[1], token_type_ids[i, :length])):
                return None
            found.append(entry[2])
        return found

    def __call__(self, encoder: BertEncoder, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None) -> EncoderOutput:
        """Hidden states of a batch (``input_ids``, ``attention_mask``: ``(B, T)``, mask True = real token)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        lengths = attention_mask.sum(dim=1).tolist()
        states = self._lookup(input_ids, token_type_ids, lengths)
        if states is None:
            self.misses += 1
            out = encoder.encode(input_ids, attention_mask, token_type_ids)
            if self.ids is not None and len(self.ids) == len(lengths):
                stacked = torch.stack([out.hidden_states[layer] for layer in self.layers])
                for i, (key, length) in enumerate(zip(self.ids, lengths)):
                    self.entries[key] = (input_ids[i, :length].clone(), token_type_ids[i, :length].clone(),
                                         stacked[:, i, :length].clone())
            return out
        self.hits += 1
        first = states[0]
        padded = first.new_zeros(len(self.layers), input_ids.shape[0], input_ids.shape[1], first.shape[-1])
        for i, (sample, length) in enumerate(zip(states, lengths)):
            padded[:, i, :length] = sample
        hidden: list = [None] * (self.num_layers + 1)
        for slot, layer in enumerate(self.layers):
            hidden[layer] = padded[slot]
        return EncoderOutput(hidden_states=CachedHiddenStates(hidden), last_hidden_state=hidden[-1])


def cacheable_encoder(model: nn.Module) -> BertEncoder | None:
    """``model.encoder`` when it is a frozen :class:`BertEncoder` without an injection module, else ``None``."""
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, BertEncoder) and encoder.mode == "frozen" and encoder.injection is None:
        return encoder
    return None


def attach_encoder_cache(model: nn.Module) -> HiddenStateCache | None:
    """Install a :class:`HiddenStateCache` on ``model.encoder`` if it is cacheable; returns it (or ``None``).

    The model's forward must take the batch (with ``ids``) as its first argument.
    """
    encoder = cacheable_encoder(model)
    if encoder is None:
        return None
    cache = HiddenStateCache(num_layers=encoder.num_layers, layers=getattr(model, "encoder_layers_used", None))
    model.register_forward_pre_hook(cache.capture_ids)
    encoder.hidden_state_cache = cache
    return cache
