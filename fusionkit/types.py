"""Shared return types and conventions.

Mask convention everywhere in fusionkit: ``mask`` is a ``(B, T)`` bool tensor, ``True`` = real token,
``False`` = padding.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class ModelOutput(NamedTuple):
    """What every registered ``model`` returns from ``forward(batch)``.

    prediction: ``(B,)`` sentiment score.
    loss_terms: auxiliary losses, **already weighted**, added to the task loss by the engine
        (empty when the model has none or when ``batch.label`` is ``None``).
    features: ``(B, d)`` pooled fused representation (for t-SNE and probing).
    diagnostics: optional ``{name: scalar tensor}`` of detached per-batch quantities that the engine averages
        over each epoch (weighted by batch size) and writes to ``log.jsonl`` (train and validation) and
        ``result.json`` (test); ``None`` when the model reports none. They never enter the loss.
    fused: optional ``(B, d_f)`` pooled output of the model's fusion block alone, before any concatenation
        with the text representation (what the paper's t-SNE figure shows); ``None`` when not defined.
    """

    prediction: torch.Tensor
    loss_terms: dict
    features: torch.Tensor
    diagnostics: dict | None = None
    fused: torch.Tensor | None = None
