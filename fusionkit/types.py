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
    """

    prediction: torch.Tensor
    loss_terms: dict
    features: torch.Tensor
